"""The OpenAPI 3.1 document of ``/api/v1``, generated from the running application.

Every ``/api/v1`` route is read from the router; what it needs from its
``core.access`` marker (the permission, which is the API-key scope), what it takes
and answers from its ``core.apidoc`` marker (the pydantic models the handler
validates with).  OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic
emits, so the models' schemas go in as they are.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from admin.permissions import PermissionTable
from admin.schemas import ErrorOut
from core.access import access_of
from core.apidoc import api_doc_of

API_PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"
# What the guard itself answers, whatever the route: no or a bad key, a scope the key
# lacks; and the error body every refusal shares.
_GUARD_ERRORS = {401: "未认证：缺少或无效的 API 密钥", 403: "无权限：密钥缺少所需的 scope"}
_ERROR_TEXT = {
    400: "请求有误（字段见 error.field）",
    404: "不存在",
    413: "内容过大",
    422: "内容未通过校验",
    503: "暂时不可用，可重试",
}


def _schema_ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _first_line(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    return doc.split("\n", 1)[0].strip() or handler.__name__


def _description(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    return doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else ""


_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _path_parameters(path: str, described: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every ``{name}`` of the route: required strings (the handler parses and 404s)."""
    out = []
    for name in _PATH_PARAM.findall(path):
        param: dict[str, Any] = {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
        }
        if described.get(name):
            param["description"] = described[name]
        out.append(param)
    return out


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The query model's fields, one parameter each, as the handler validates them."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        param["schema"] = prop
        out.append(param)
    return out


def build_openapi(app: web.Application, table: PermissionTable, *, version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    error_ref = _schema_ref(ErrorOut, schemas)
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        path = route.resource.canonical
        if not path.startswith(API_PREFIX):
            continue
        access = access_of(route.handler)
        doc = api_doc_of(route.handler)
        op: dict[str, Any] = {
            "operationId": route.name or route.handler.__name__,
            # A route without its marker is still listed (from its docstring), never hidden.
            "summary": doc.summary if doc else _first_line(route.handler),
            "tags": [route.handler.__module__.split(".")[0]],
        }
        description = _description(route.handler)
        if description:
            op["description"] = description
        if access is not None and access.kind == "permission":
            scopes = [access.permission]
            op["security"] = [{"apiKey": scopes}]
            op["x-scopes"] = scopes
            op["x-roles"] = sorted(table.permissions[access.permission].roles)
        elif access is not None and access.kind == "public":
            op["security"] = []
            op["x-scopes"] = []
        else:
            # Any valid key or signed-in operator.
            op["security"] = [{"apiKey": []}]
            op["x-scopes"] = []
        parameters = _path_parameters(path, doc.path_params if doc else {})
        if doc and doc.query is not None:
            parameters += _query_parameters(doc.query)
        if parameters:
            op["parameters"] = parameters
        if doc and doc.request is not None:
            ref = _schema_ref(doc.request, schemas)
            op["requestBody"] = {
                "required": True,
                "content": {media: {"schema": ref} for media in doc.request_media},
            }
        responses: dict[str, Any] = {}
        success = str(doc.status) if doc else "200"
        if doc and doc.response is not None:
            responses[success] = {
                "description": "Created" if success == "201" else "OK",
                "content": {"application/json": {"schema": _schema_ref(doc.response, schemas)}},
            }
        else:
            responses[success] = {"description": "Created" if success == "201" else "OK"}
        statuses = {**_GUARD_ERRORS}
        for status in doc.errors if doc else ():
            statuses.setdefault(status, _ERROR_TEXT.get(status, "错误"))
        if access is not None and access.kind == "public":
            statuses.pop(401, None)
            statuses.pop(403, None)
        for status, text in sorted(statuses.items()):
            responses[str(status)] = {
                "description": text,
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        paths.setdefault(path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "siyu API",
            "version": version,
            "description": (
                "私域 siyu 的系统接口。每个调用携带一个具名 API 密钥（`Authorization: Bearer "
                "siyu_…`），密钥的 scope 决定可调用的接口（见各接口的 `x-scopes`）。"
                '错误统一为 `{"error": {"code", "message", "field"}}`。'
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "具名 API 密钥；scope：" + "、".join(table.scopes),
                }
            },
        },
    }
