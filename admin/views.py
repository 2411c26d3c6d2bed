"""The admin domain's API routes (``/api/v1``): parse → one flow → JSON.

Every route declares what it needs (``core.access``); ``admin.auth`` enforces it.
"""

from __future__ import annotations

from importlib import metadata

from aiohttp import web

from admin.keys import CONSOLE
from admin.openapi import build_openapi
from admin.schemas import WhoAmIOut
from core.access import principal_of, signed_in
from core.apidoc import api_doc


def _version() -> str:
    try:
        return metadata.version("siyu")
    except metadata.PackageNotFoundError:
        return "0"


@signed_in
@api_doc(summary="调用者身份 / who is calling", response=WhoAmIOut)
async def whoami(request: web.Request) -> web.Response:
    """``GET /api/v1/me``: who the caller is and what it may do — an integrator's first call."""
    principal = principal_of(request)
    assert principal is not None  # the guard set it
    return web.json_response(
        {
            "kind": principal.kind,
            "id": principal.id,
            "name": principal.name,
            "role": principal.role or None,
            "permissions": sorted(principal.permissions),
        }
    )


@signed_in
@api_doc(summary="本接口文档（OpenAPI 3.1）/ this document")
async def openapi_json(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``: every /api/v1 route with its schemas and scopes.

    Generated from the routes, their permission markers and the pydantic models the
    handlers validate with (``admin.openapi``), so it always matches the code.
    """
    doc = build_openapi(request.app, request.app[CONSOLE].table, version=_version())
    return web.json_response(doc)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me", whoami, name="api_me")
    app.router.add_get("/api/v1/openapi.json", openapi_json, name="api_openapi")
