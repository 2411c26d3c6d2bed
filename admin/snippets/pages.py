"""Console pages of the reply library (合规话术库).

``snippets:read`` lists and opens approved snippets (every role: advisors send them);
``snippets:edit`` (marketing, admin) writes, edits and disables; ``snippets:approve``
(compliance, admin) approves, sends back or withdraws. Roles that only read see
approved snippets alone.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from admin.auth import client_address
from admin.errors import see_other
from admin.flows import FieldError, NotFound, operator_actor
from admin.keys import CONSOLE, OPERATOR
from admin.render import render
from admin.snippets import flows as snippets
from admin.snippets import service
from admin.snippets.models import Snippet
from bot.flows import CATEGORY_LABELS
from bot.keys import ANALYZER
from core import audit
from core.access import menu, requires
from core.audit import AuditFilter

PAGE_SIZE = 50
STATUS_TABS = {"all": "全部", **snippets.STATUS_LABELS}


def _form_str(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _snippet_id(request: web.Request) -> int:
    raw = request.match_info["snippet_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


def _can(request: web.Request, permission: str) -> bool:
    return request.app[CONSOLE].table.allows(request[OPERATOR].role, permission)


def _sees_all(request: web.Request) -> bool:
    """Writers and approvers see every status; the others approved snippets only."""
    return _can(request, "snippets:edit") or _can(request, "snippets:approve")


def snippet_input(form: MultiDictProxy[Any]) -> snippets.SnippetInput:
    upload = form.get("image")
    content: bytes | None = None
    name = content_type = ""
    # An empty file input arrives as bytes without a filename: no new image.
    if isinstance(upload, FileField):
        content = upload.file.read(snippets.IMAGE_MAX_BYTES + 1) or None
        name, content_type = upload.filename or "", upload.content_type or ""
    return snippets.SnippetInput(
        kind=_form_str(form, "kind"),
        title=_form_str(form, "title"),
        topic=_form_str(form, "topic"),
        segment=_form_str(form, "segment"),
        text=_form_str(form, "text"),
        link_title=_form_str(form, "link_title"),
        link_url=_form_str(form, "link_url"),
        link_desc=_form_str(form, "link_desc"),
        link_picurl=_form_str(form, "link_picurl"),
        mp_appid=_form_str(form, "mp_appid"),
        mp_title=_form_str(form, "mp_title"),
        mp_page=_form_str(form, "mp_page"),
        image=content,
        image_name=name,
        image_type=content_type,
    )


def _form_values(data: snippets.SnippetInput) -> dict[str, Any]:
    values = dict(data.__dict__)
    values.pop("image", None)
    return values


def _common() -> dict[str, Any]:
    return {
        "kinds": snippets.KIND_LABELS,
        "statuses": snippets.STATUS_LABELS,
        "segments": snippets.SEGMENT_LABELS,
        "categories": CATEGORY_LABELS,
    }


@requires("snippets:read")
@menu("合规话术库", group="运营", order=40)
async def snippet_list(request: web.Request) -> web.StreamResponse:
    q = request.query
    values = {k: q.get(k, "").strip()[:64] for k in ("q", "topic", "segment", "status", "kind")}
    sees_all = _sees_all(request)
    if not sees_all or values["status"] not in STATUS_TABS:
        values["status"] = "approved" if not sees_all else "all"
    if values["segment"] not in snippets.SEGMENT_LABELS:
        values["segment"] = ""
    if values["kind"] not in snippets.KIND_LABELS:
        values["kind"] = ""
    statuses = () if values["status"] == "all" else (values["status"],)
    where = service.SnippetFilter(
        q=values["q"],
        topic=values["topic"],
        segment=values["segment"],
        kind=values["kind"],
        statuses=statuses,
    )
    raw_page = q.get("page", "1")
    page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
    rows = await service.snippets(where=where, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    total = await service.count(where=where)
    return render(
        "snippet_list.html",
        request,
        {
            **_common(),
            "rows": rows,
            "total": total,
            "page": page,
            "pages": max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
            "values": values,
            "tabs": STATUS_TABS if sees_all else {},
            "counts": await service.status_counts(where=where) if sees_all else {},
            "topics": await service.topics(),
            "can_edit": _can(request, "snippets:edit"),
            "notice": {"disabled": "已停用。"}.get(q.get("done", ""), ""),
        },
    )


async def _form_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        "snippet_form.html",
        request,
        {
            **_common(),
            "snippet": None,
            "errors": errors or {},
            "form": form or {"kind": "text"},
            "topics": await service.topics(),
            "image_max_kb": snippets.IMAGE_MAX_BYTES // 1024,
        },
        status=status,
    )


@requires("snippets:edit")
async def snippet_new(request: web.Request) -> web.StreamResponse:
    return await _form_page(request)


@requires("snippets:edit")
async def snippet_create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    data = snippet_input(form)
    try:
        row = await snippets.do_create(
            actor=operator_actor(request[OPERATOR]), source=client_address(request), data=data
        )
    except FieldError as exc:
        return await _form_page(
            request, errors={exc.field: exc.message}, form=_form_values(data), status=422
        )
    return see_other(_snippet_url(request, row.id, done="created"))


def _snippet_url(request: web.Request, snippet_id: int, **query: str) -> str:
    url = request.app.router["snippet"].url_for(snippet_id=str(snippet_id))
    return str(url.with_query(query) if query else url)


_DONE = {
    "created": "已提交，等待合规审核。",
    "saved": "已保存为新版本，等待合规审核。",
    "approved": "已审核通过，客户经理可以在侧边栏使用。",
    "rejected": "已退回。",
    "withdrawn": "已撤回待复审。",
    "disabled": "已停用。",
}


async def _detail(
    request: web.Request,
    snippet_id: int,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    row = await service.snippet(snippet_id=snippet_id)
    if row is None or (row.status != "approved" and not _sees_all(request)):
        raise web.HTTPNotFound()
    can_approve = _can(request, "snippets:approve")
    checked = None
    analyzer = request.app.get(ANALYZER)
    if can_approve and analyzer is not None and row.status in ("pending", "withdrawn"):
        # What the rules in force say now: the reviewer approves with this in view.
        (checked,) = await snippets.check_content(analyzer=analyzer, snippets=[row])
    history = await audit.entries(
        where=AuditFilter(target=snippets.snippet_target(row.id)), limit=30
    )
    return render(
        "snippet_detail.html",
        request,
        {
            **_common(),
            "s": row,
            "checked": checked,
            "history": history,
            "can_edit": _can(request, "snippets:edit"),
            "can_approve": can_approve,
            "errors": errors or {},
            "form": form or _snapshot(row),
            "topics": await service.topics(),
            "image_max_kb": snippets.IMAGE_MAX_BYTES // 1024,
            "notice": _DONE.get(request.query.get("done", ""), ""),
        },
        status=status,
    )


def _snapshot(row: Snippet) -> dict[str, Any]:
    return {
        f: getattr(row, f)
        for f in (
            "kind",
            "title",
            "topic",
            "segment",
            "text",
            "link_title",
            "link_url",
            "link_desc",
            "link_picurl",
            "mp_appid",
            "mp_title",
            "mp_page",
        )
    }


@requires("snippets:read")
async def snippet_detail(request: web.Request) -> web.StreamResponse:
    return await _detail(request, _snippet_id(request))


@requires("snippets:edit")
async def snippet_edit(request: web.Request) -> web.StreamResponse:
    snippet_id = _snippet_id(request)
    form = await request.post()
    data = snippet_input(form)
    try:
        await snippets.do_edit(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            snippet_id=snippet_id,
            data=data,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _detail(
            request,
            snippet_id,
            errors={exc.field: exc.message},
            form=_form_values(data),
            status=422,
        )
    return see_other(_snippet_url(request, snippet_id, done="saved"))


def _revision(form: Any) -> int:
    raw = _form_str(form, "revision")
    return int(raw) if raw.isdigit() and len(raw) < 9 else 0


@requires("snippets:approve")
async def snippet_approve(request: web.Request) -> web.StreamResponse:
    snippet_id = _snippet_id(request)
    form = await request.post()
    analyzer = request.app.get(ANALYZER)
    if analyzer is None:
        raise web.HTTPServiceUnavailable()
    try:
        await snippets.do_approve(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            snippet_id=snippet_id,
            revision=_revision(form),
            analyzer=analyzer,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _detail(request, snippet_id, errors={exc.field: exc.message}, status=422)
    return see_other(_snippet_url(request, snippet_id, done="approved"))


async def _decide(request: web.Request, action: str) -> web.StreamResponse:
    snippet_id = _snippet_id(request)
    form = await request.post()
    do = {
        "reject": snippets.do_reject,
        "withdraw": snippets.do_withdraw,
        "disable": snippets.do_disable,
    }[action]
    try:
        await do(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            snippet_id=snippet_id,
            revision=_revision(form),
            reason=_form_str(form, "reason"),
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _detail(
            request,
            snippet_id,
            errors={f"{action}_{exc.field}": exc.message},
            status=422,
        )
    done = {"reject": "rejected", "withdraw": "withdrawn", "disable": "disabled"}[action]
    return see_other(_snippet_url(request, snippet_id, done=done))


@requires("snippets:approve")
async def snippet_reject(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "reject")


@requires("snippets:approve")
async def snippet_withdraw(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "withdraw")


@requires("snippets:edit")
async def snippet_disable(request: web.Request) -> web.StreamResponse:
    return await _decide(request, "disable")


@requires("snippets:read")
async def snippet_image(request: web.Request) -> web.StreamResponse:
    row = await service.snippet(snippet_id=_snippet_id(request))
    if row is None or not row.image or (row.status != "approved" and not _sees_all(request)):
        raise web.HTTPNotFound()
    return web.Response(
        body=bytes(row.image),
        content_type=row.image_type or "application/octet-stream",
        headers={"Cache-Control": "private, max-age=300"},
    )


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/snippets", snippet_list, name="snippets")
    r.add_get("/snippets/new", snippet_new, name="snippet_new")
    r.add_post("/snippets", snippet_create, name="snippet_create")
    r.add_get("/snippets/{snippet_id}", snippet_detail, name="snippet")
    r.add_post("/snippets/{snippet_id}", snippet_edit, name="snippet_edit")
    r.add_get("/snippets/{snippet_id}/image", snippet_image, name="snippet_image")
    r.add_post("/snippets/{snippet_id}/approve", snippet_approve, name="snippet_approve")
    r.add_post("/snippets/{snippet_id}/reject", snippet_reject, name="snippet_reject")
    r.add_post("/snippets/{snippet_id}/withdraw", snippet_withdraw, name="snippet_withdraw")
    r.add_post("/snippets/{snippet_id}/disable", snippet_disable, name="snippet_disable")
