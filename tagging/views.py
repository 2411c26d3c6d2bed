"""HTTP adapters of the tagging API: parse → call one flow → shape the answer.

Every route declares its permission (``core.access``); the admin guard enforces it
against ``admin/permissions.json`` (``tags:write`` edits the library and customer
tags, ``customers:read`` reads them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.access import ACTOR_NAMES, REACH, principal_of, requires
from core.apidoc import api_doc
from core.appkit import DOMAINS, KEYRING
from core.audit import Actor
from tagging import attributes, audience, fields, flows, rules, service
from tagging.models import CustomerTag, Tag, TagGroup, TagRule
from tagging.schemas import AudienceIn, CustomerTagIn, GroupEdit, GroupIn, TagEdit, TagIn


def error(
    status: int, code: str, message: str, *, field: str | None = None, **extra: Any
) -> web.Response:
    """The house error body; ``field`` names the one field at fault, when one is."""
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field, **extra}}, status=status
    )


# Refusals of the flows whose field the code or the message's "field: …" prefix names.
_CODE_FIELDS = {"duplicate_name": "name", "wecom_group": "sync_to_wecom"}
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


def field_of(exc: flows.TaggingError) -> str | None:
    if exc.code in _CODE_FIELDS:
        return _CODE_FIELDS[exc.code]
    m = _FIELD_PREFIX.match(exc.message)
    return m.group(1) if m else None


def actor_of(request: web.Request) -> Actor:
    p = principal_of(request)
    if p is None:  # the bootstrap token without the admin guard
        return Actor("api_key", "bootstrap", "bootstrap token")
    return Actor(p.kind, p.id, p.name)


async def _body(request: web.Request, shape: type[BaseModel]) -> Any:
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        raise _Bad(error(400, "bad_request", "body must be JSON")) from None
    try:
        return shape.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise _Bad(error(400, "invalid_input", f"{where}: {first['msg']}", field=where)) from None


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__("bad request")
        self.response = response


def _int(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise _Bad(error(404, "not_found", f"{name} must be a number")) from None


def group_dict(g: TagGroup) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "order": g.order,
        "colour": g.colour,
        "description": g.description,
        "owner": g.owner,
        "origin": g.origin.value,
        "sync_to_wecom": g.sync_to_wecom,
        "wecom_group_id": g.wecom_group_id,
        "strategy_id": g.strategy_id,
        "synced_at": g.synced_at.isoformat() if g.synced_at else None,
    }


def tag_dict(t: Tag) -> dict[str, Any]:
    return {
        "id": t.id,
        "group_id": t.group_id,  # type: ignore[attr-defined]
        "name": t.name,
        "order": t.order,
        "colour": t.colour,
        "description": t.description,
        "owner": t.owner,
        "origin": t.origin.value,
        "wecom_tag_id": t.wecom_tag_id,
        "push_pending": t.push_pending,
        "synced_at": t.synced_at.isoformat() if t.synced_at else None,
    }


def customer_tag_dict(ct: CustomerTag, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "tag_id": ct.tag_id,  # type: ignore[attr-defined]
        "tag": ct.tag.name,
        "source": ct.source.value,
        "applied_by": ct.applied_by,
        # The operator's, key's, advisor's or rule's name; null when not known.
        "applied_by_name": (names or {}).get(ct.applied_by),
        "applied_at": ct.applied_at.isoformat(),
        "reason": ct.reason,
        "advisor_userid": ct.advisor_userid,
    }


async def _guarded(request: web.Request, work: Any) -> web.Response:
    try:
        result: web.Response = await work()
    except _Bad as bad:
        return bad.response
    except flows.NotFound as exc:
        return error(404, exc.code, exc.message)
    except flows.TaggingError as exc:
        return error(
            409 if exc.code == "duplicate_name" else 400,
            exc.code,
            exc.message,
            field=field_of(exc),
        )
    return result


@requires("customers:read")
@api_doc(summary="The tag library: groups, tags and the last sync runs")
async def list_library(request: web.Request) -> web.Response:
    """``GET /api/v1/tags``: groups with their tags, and the last sync runs."""
    groups = await service.live_groups()
    tags = await service.live_tags()
    by_group: dict[int, list[dict[str, Any]]] = {}
    for t in tags:
        by_group.setdefault(t.group_id, []).append(tag_dict(t))  # type: ignore[attr-defined]
    runs = {}
    for kind in ("reconcile", "pull", "contact"):
        run = await service.last_run(kind=kind)
        runs[kind] = (
            None
            if run is None
            else {
                "id": run.id,
                "ok": run.ok,
                "started_at": run.started_at.isoformat(),
                "error": run.error,
                "changes": run.changes[:200],
            }
        )
    return web.json_response(
        {
            "groups": [{**group_dict(g), "tags": by_group.get(g.id, [])} for g in groups],
            "sync": runs,
        }
    )


@requires("tags:write")
@api_doc(
    summary="Create a tag group (siyu-only unless sync_to_wecom)",
    request=GroupIn,
    errors=(400, 409),
    status=201,
)
async def create_group(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        spec = await _body(request, GroupIn)
        group = await flows.do_create_group(spec=spec, actor=actor_of(request))
        return web.json_response(group_dict(group), status=201)

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(
    summary="Edit a tag group; marking it to sync pushes its tags to WeCom",
    request=GroupEdit,
    errors=(400, 404, 409),
)
async def edit_group(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        group_id = _int(request, "group_id")
        edit = await _body(request, GroupEdit)
        group = await flows.do_edit_group(group_id=group_id, edit=edit, actor=actor_of(request))
        return web.json_response(group_dict(group))

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(summary="Delete a tag group and its tags (customers lose them, recorded)", errors=(404,))
async def delete_group(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        group_id = _int(request, "group_id")
        removed = await flows.do_delete_group(group_id=group_id, actor=actor_of(request))
        return web.json_response({"deleted": group_id, "customers": removed})

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(
    summary="Create a tag (pushed to WeCom when its group syncs)",
    request=TagIn,
    errors=(400, 404, 409),
    status=201,
)
async def create_tag(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        spec = await _body(request, TagIn)
        tag = await flows.do_create_tag(spec=spec, actor=actor_of(request))
        return web.json_response(tag_dict(tag), status=201)

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(
    summary="Edit a tag (name and order pushed to WeCom when linked)",
    request=TagEdit,
    errors=(400, 404, 409),
)
async def edit_tag(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        tag_id = _int(request, "tag_id")
        edit = await _body(request, TagEdit)
        tag = await flows.do_edit_tag(tag_id=tag_id, edit=edit, actor=actor_of(request))
        return web.json_response(tag_dict(tag))

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(summary="Delete a tag (customers lose it, recorded; WeCom told)", errors=(404,))
async def delete_tag(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        tag_id = _int(request, "tag_id")
        removed = await flows.do_delete_tag(tag_id=tag_id, actor=actor_of(request))
        return web.json_response({"deleted": tag_id, "customers": removed})

    return await _guarded(request, work)


@requires("customers:read")
@api_doc(summary="A customer's tags with their reasons, and the history", errors=(404,))
async def customer_tags(request: web.Request) -> web.Response:
    """``GET /api/v1/customers/{external_userid}/tags``: tags with reasons, and history."""

    async def work() -> web.Response:
        ext = request.match_info["external_userid"]
        cid = await service.customer_id_of(external_userid=ext)
        # An advisor's or team lead's session reaches their own book only; outside it
        # the answer is the unknown customer's (no hint that the customer exists).
        reach_fn = request.app.get(REACH)
        reach = None if reach_fn is None else await reach_fn(request)
        if reach is not None and (
            cid is None or await service.customer_in_reach(customer_id=cid, reach=reach) is None
        ):
            raise flows.NotFound("customer")
        rows = await flows.customer_tags(external_userid=ext)
        history = await service.history_of_customer(customer_id=cid or 0)
        names = await service.actor_names(
            refs=[*(ct.applied_by for ct in rows), *(h.actor for h in history)],
            lookup=request.app.get(ACTOR_NAMES),
        )
        return web.json_response(
            {
                "tags": [customer_tag_dict(ct, names) for ct in rows],
                "history": [
                    {
                        "tag_id": h.tag_id,
                        "action": h.action,
                        "source": h.source.value,
                        "actor": h.actor,
                        "actor_name": names.get(h.actor),
                        "reason": h.reason,
                        "at": h.at.isoformat(),
                    }
                    for h in history
                ],
            }
        )

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(
    summary="Tag a customer (source manual; mark_tag per advisor relation)",
    request=CustomerTagIn,
    errors=(400, 404),
)
async def tag_customer(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        body = await _body(request, CustomerTagIn)
        change = await flows.do_tag_customer(
            external_userid=body.external_userid,
            tag_id=body.tag_id,
            actor=actor_of(request),
            reason=body.reason,
        )
        return web.json_response({"changed": change.changed, "marks_queued": change.marks_queued})

    return await _guarded(request, work)


@requires("tags:write")
@api_doc(
    summary="Remove a tag from a customer (recorded)", request=CustomerTagIn, errors=(400, 404)
)
async def untag_customer(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        body = await _body(request, CustomerTagIn)
        change = await flows.do_untag_customer(
            external_userid=body.external_userid,
            tag_id=body.tag_id,
            actor=actor_of(request),
            reason=body.reason,
        )
        return web.json_response({"changed": change.changed, "marks_queued": change.marks_queued})

    return await _guarded(request, work)


# ---------------------------------------------------------------- audiences

PREVIEW_MAX = 100


def _invalid(exc: audience.ExpressionError) -> web.Response:
    # Every audience route takes its expression as ``expr`` (query or body).
    return error(400, "invalid_expression", exc.message, field="expr", position=exc.position)


@requires("customers:read")
@api_doc(summary="How many customers an audience expression selects", errors=(400,))
async def audience_count(request: web.Request) -> web.Response:
    """``GET /api/v1/audiences/count?expr=…`` → ``{"count": N}``."""
    expr = request.query.get("expr", "")
    try:
        # Parsed and compiled once per expression (``audience._run``): errors as well.
        n = await audience.count(expr)
    except audience.ExpressionError as exc:
        return _invalid(exc)
    return web.json_response({"count": n})


@requires("customers:read")
@api_doc(summary="A masked sample of an audience", errors=(400,))
async def audience_preview(request: web.Request) -> web.Response:
    """``GET /api/v1/audiences/preview?expr=…&limit=…``: sample customers, masked.

    Masked for every role: a sample is for checking an expression, not for reading
    customers (the customer page, with its own permission, shows them).
    """
    expr = request.query.get("expr", "")
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return error(400, "invalid_input", "limit must be a number", field="limit")
    if not 1 <= limit <= PREVIEW_MAX:
        return error(400, "invalid_input", f"limit must be 1..{PREVIEW_MAX}", field="limit")
    try:
        rows = await audience.preview(expr, limit=limit)
        n = await audience.count(expr)
    except audience.ExpressionError as exc:
        return _invalid(exc)
    return web.json_response(
        {
            "count": n,
            "customers": [{"external_userid": r.external_userid, "name": r.name} for r in rows],
        }
    )


@requires("customers:read")
@api_doc(summary="Saved audiences")
async def list_audiences(request: web.Request) -> web.Response:
    saved = await service.audiences()
    return web.json_response(
        {"audiences": [{"id": a.id, "name": a.name, "expr": a.expr} for a in saved]}
    )


@requires("tags:write")
@api_doc(
    summary="Save an audience by name (the expression is checked)",
    request=AudienceIn,
    errors=(400,),
)
async def save_audience(request: web.Request) -> web.Response:
    async def work() -> web.Response:
        body = await _body(request, AudienceIn)
        try:
            saved = await flows.do_save_audience(
                name=body.name, expr=body.expr, actor=actor_of(request)
            )
        except audience.ExpressionError as exc:
            return _invalid(exc)
        return web.json_response({"id": saved.id, "name": saved.name, "expr": saved.expr})

    return await _guarded(request, work)


# ---------------------------------------------------------------- rules


def _rule_error(exc: flows.TaggingError) -> web.Response:
    extra = {}
    if getattr(exc, "position", None) is not None:
        extra["position"] = exc.position  # type: ignore[attr-defined]
    return error(400, exc.code, exc.message, field=field_of(exc), **extra)


def _dry(d: rules.DryRun) -> dict[str, Any]:
    return {"count": d.count, "total": d.total, "sample": d.sample, "warning": d.warning}


@requires("tags:write")
@api_doc(
    summary="Dry-run an auto-tag rule: count, masked sample, warning",
    request=rules.RuleIn,
    errors=(400,),
)
async def rule_dry_run(request: web.Request) -> web.Response:
    """``POST /api/v1/tag-rules/dry-run``: how many customers, a masked sample, a warning."""
    try:
        spec = await _body(request, rules.RuleIn)
        result = await rules.dry_run(spec)
    except _Bad as bad:
        return bad.response
    except flows.TaggingError as exc:
        return _rule_error(exc)
    return web.json_response(_dry(result))


@requires("tags:write")
@api_doc(
    summary="Save an auto-tag rule (validated and dry-run first)",
    request=rules.RuleIn,
    errors=(400,),
)
async def save_rule(request: web.Request) -> web.Response:
    """``POST /api/v1/tag-rules``: validated, dry-run, saved (by name); audited."""
    try:
        spec = await _body(request, rules.RuleIn)
        rule, result = await rules.do_save_rule(spec=spec, actor=actor_of(request))
    except _Bad as bad:
        return bad.response
    except flows.TaggingError as exc:
        return _rule_error(exc)
    return web.json_response(
        {"id": rule.id, "name": rule.name, "enabled": rule.enabled, "dry_run": _dry(result)}
    )


@requires("customers:read")
@api_doc(summary="Auto-tag rules with their last run")
async def list_rules(request: web.Request) -> web.Response:
    found = await TagRule.all().order_by("id")
    return web.json_response(
        {
            "rules": [
                {
                    "id": r.id,
                    "name": r.name,
                    "trigger": r.trigger,
                    "enabled": r.enabled,
                    **r.spec,
                    "last_run_at": r.last_run_at.isoformat() if r.last_run_at else None,
                    "last_run_applied": r.last_run_applied,
                }
                for r in found
            ]
        }
    )


# ---------------------------------------------------------------- imported attributes


@requires("customers:write")
@api_doc(summary="Import customer attributes: up to 10,000 rows, per-row errors", errors=(400, 413))
async def import_attributes(request: web.Request) -> web.Response:
    """``POST /api/v1/customers/attributes``: up to 10,000 rows, per-row errors by number.

    Body: ``[{"external_userid"|"unionid": …, "attributes": {…}}, …]`` or ``{"rows": [...]}``.
    Rows are numbered from 1 in the order given.
    """
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return error(400, "bad_request", "body must be JSON")
    rows = body.get("rows") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        return error(400, "bad_request", 'expected a JSON array or {"rows": [...]}')
    if len(rows) > attributes.MAX_ROWS:
        return error(413, "too_many_rows", f"at most {attributes.MAX_ROWS} rows per call")
    report = await attributes.do_import_attributes(
        rows=rows,
        actor=actor_of(request),
        keyring=request.app[KEYRING],
        source="api",
        address=request.remote or "",
    )
    return web.json_response(report.as_dict())


def field_dict(name: str, spec: attributes.AttrSpec) -> dict[str, Any]:
    return {
        "name": name,
        "label": spec.label,
        "type": spec.type,
        "builtin": spec.builtin,
        "required": spec.required,
        "minimum": str(spec.minimum) if spec.minimum is not None else None,
        "maximum": str(spec.maximum) if spec.maximum is not None else None,
        "earliest": spec.earliest.isoformat() if spec.earliest else None,
        "latest": spec.latest.isoformat() if spec.latest else None,
        "values": list(spec.values),
        "max_length": spec.max_length,
        "masked_by_role": spec.masked_by_role,
        "sensitive": spec.sensitive,
        "band": spec.band,
        "derived_from": spec.derived_from,
        "description": spec.description,
        "retired": spec.retired,
    }


@requires("customers:read")
@api_doc(summary="The attribute schema: built-in and custom fields")
async def list_attribute_fields(request: web.Request) -> web.Response:
    schema = await attributes.load_schema()
    return web.json_response({"fields": [field_dict(n, s) for n, s in schema.items()]})


class FieldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    type: str = Field(max_length=8)
    label: str = Field(default="", max_length=64)
    required: bool = False
    minimum: str = Field(default="", max_length=40)
    maximum: str = Field(default="", max_length=40)
    values: list[str] = Field(default_factory=list, max_length=100)
    max_length: int = 64
    masked_by_role: bool = False
    sensitive: bool = False
    bands: list[str] = Field(default_factory=list, max_length=12)


@requires("attributes:manage")
@api_doc(
    summary="Add a custom attribute field (imports and audiences know it at once)",
    request=FieldBody,
    errors=(400, 409),
    status=201,
)
async def add_attribute_field(request: web.Request) -> web.Response:
    try:
        body = await _body(request, FieldBody)
    except _Bad as bad:
        return bad.response
    try:
        row = await attributes.do_add_field(
            spec=attributes.FieldIn(
                name=body.name,
                type=body.type,
                label=body.label,
                required=body.required,
                minimum=body.minimum,
                maximum=body.maximum,
                enum_values=tuple(body.values),
                max_length=body.max_length,
                masked_by_role=body.masked_by_role,
                sensitive=body.sensitive,
                bands=tuple(body.bands),
            ),
            actor=actor_of(request),
        )
    except attributes.FieldError as exc:
        status = 409 if "已存在" in exc.message else 400
        return web.json_response(
            {"error": {"code": "invalid_field", "message": exc.message, "field": exc.field}},
            status=status,
        )
    schema = await attributes.load_schema()
    return web.json_response(field_dict(row.name, schema[row.name]), status=201)


class FieldEditBody(BaseModel):
    """A custom field's edit: only the keys given change."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, max_length=8)
    label: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=255)
    required: bool | None = None
    minimum: str | None = Field(default=None, max_length=40)
    maximum: str | None = Field(default=None, max_length=40)
    values: list[str] | None = Field(default=None, max_length=100)
    max_length: int | None = None


def _field_refusal(exc: attributes.FieldError) -> web.Response:
    if isinstance(exc, fields.FieldConflict):
        return error(409, exc.code, exc.message, field=exc.field, **exc.detail)
    return error(400, "invalid_field", exc.message, field=exc.field)


def _attribute_uses(request: web.Request) -> list[fields.AttributeUses]:
    return [d.attribute_uses for d in request.app[DOMAINS] if d.attribute_uses is not None]


async def _field_answer(name: str) -> web.Response:
    schema = await attributes.load_schema()
    return web.json_response(field_dict(name, schema[name]))


@requires("attributes:manage")
@api_doc(
    summary="Edit a custom attribute field (a narrower check only when no stored value breaks it)",
    request=FieldEditBody,
    errors=(400, 404, 409),
)
async def edit_attribute_field(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        body = await _body(request, FieldEditBody)
    except _Bad as bad:
        return bad.response
    try:
        await fields.do_edit_field(
            name=name,
            edit=fields.FieldEdit(
                type=body.type,
                label=body.label,
                description=body.description,
                required=body.required,
                minimum=body.minimum,
                maximum=body.maximum,
                enum_values=None if body.values is None else tuple(body.values),
                max_length=body.max_length,
            ),
            actor=actor_of(request),
            keyring=request.app[KEYRING],
        )
    except fields.UnknownField:
        return error(404, "not_found", f"no custom attribute field {name!r}")
    except attributes.FieldError as exc:
        return _field_refusal(exc)
    return await _field_answer(name)


@requires("attributes:manage")
@api_doc(
    summary="Retire a custom attribute field: out of new use, its values kept",
    errors=(400, 404, 409),
)
async def retire_attribute_field(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        await fields.do_retire_field(
            name=name, actor=actor_of(request), elsewhere=_attribute_uses(request)
        )
    except fields.UnknownField:
        return error(404, "not_found", f"no custom attribute field {name!r}")
    except attributes.FieldError as exc:
        return _field_refusal(exc)
    return await _field_answer(name)


@requires("attributes:manage")
@api_doc(summary="Put a retired custom attribute field back in use", errors=(400, 404))
async def restore_attribute_field(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        await fields.do_restore_field(name=name, actor=actor_of(request))
    except fields.UnknownField:
        return error(404, "not_found", f"no custom attribute field {name!r}")
    except attributes.FieldError as exc:
        return _field_refusal(exc)
    return await _field_answer(name)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/customers/attributes", import_attributes)
    app.router.add_get("/api/v1/customers/attribute-fields", list_attribute_fields)
    app.router.add_post("/api/v1/customers/attribute-fields", add_attribute_field)
    app.router.add_patch("/api/v1/customers/attribute-fields/{name}", edit_attribute_field)
    app.router.add_post("/api/v1/customers/attribute-fields/{name}/retire", retire_attribute_field)
    app.router.add_post(
        "/api/v1/customers/attribute-fields/{name}/restore", restore_attribute_field
    )
    app.router.add_get("/api/v1/tag-rules", list_rules)
    app.router.add_post("/api/v1/tag-rules", save_rule)
    app.router.add_post("/api/v1/tag-rules/dry-run", rule_dry_run)
    app.router.add_get("/api/v1/audiences", list_audiences)
    app.router.add_post("/api/v1/audiences", save_audience)
    app.router.add_get("/api/v1/audiences/count", audience_count)
    app.router.add_get("/api/v1/audiences/preview", audience_preview)
    app.router.add_get("/api/v1/tags", list_library)
    app.router.add_post("/api/v1/tags", create_tag)
    app.router.add_post("/api/v1/tags/groups", create_group)
    app.router.add_patch("/api/v1/tags/groups/{group_id}", edit_group)
    app.router.add_delete("/api/v1/tags/groups/{group_id}", delete_group)
    app.router.add_patch("/api/v1/tags/{tag_id}", edit_tag)
    app.router.add_delete("/api/v1/tags/{tag_id}", delete_tag)
    app.router.add_post("/api/v1/customer-tags", tag_customer)
    app.router.add_post("/api/v1/customer-tags/remove", untag_customer)
    app.router.add_get("/api/v1/customers/{external_userid}/tags", customer_tags)
