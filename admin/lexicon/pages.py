"""Console pages of the lexicon compliance owns: the draft, the dry run, publish, versions.

``lexicon:read`` opens the pages; ``lexicon:edit`` (compliance, admin) changes the draft,
runs the dry run, publishes and rolls back. Parse the form, call one flow, render.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from admin.auth import client_address
from admin.errors import error_page, see_other
from admin.flows import FieldError, NotFound, operator_actor
from admin.keys import CONSOLE, OPERATOR
from admin.lexicon import dryrun, service
from admin.lexicon import flows as lexicon
from admin.render import render
from bot.flows import CATEGORY_LABELS
from bot.keys import ANALYZER, REDIS
from bot.rules_overlay import RULES_OVERLAY
from compliance_nlp.overlay import SEGMENTS, Overlay
from compliance_nlp.rules import load_ruleset
from core import audit
from core.access import menu, requires
from core.audit import AuditFilter
from core.redis import Keyspace

TABS = {
    "term": "词条",
    "exception": "例外",
    "rewording": "改写建议",
    "basis": "监管依据",
    "segment": "行业包",
}
# A dry run is kept this long for the publish that follows it.
DRY_RUN_TTL_S = 24 * 3600
EFFECT_LINES_KEPT = 50


def _form_str(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _int_param(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 9:
        raise web.HTTPNotFound()
    return int(raw)


def _dry_run_key(draft_hash: str) -> str:
    return Keyspace().key("lexicon", "dryrun", draft_hash)


def _analyzer(request: web.Request) -> Any:
    analyzer = request.app.get(ANALYZER)
    # The pool (compliance_nlp.pool.AnalyzerPool) analyses under a named overlay; a
    # stand-in without overlays cannot run a dry run honestly.
    if analyzer is None or not callable(getattr(analyzer, "set_overlay", None)):
        return None
    return analyzer


def entry_input(form: Any, *, kind: str) -> lexicon.EntryInput:
    return lexicon.EntryInput(
        kind=kind,
        text=_form_str(form, "text"),
        body=_form_str(form, "body"),
        category=_form_str(form, "category"),
        categories=tuple(v for v in form.getall("categories", []) if isinstance(v, str)),
        basis=_form_str(form, "basis"),
        severity=_form_str(form, "severity") or "violation",
        segment=_form_str(form, "segment"),
        suggestion=_form_str(form, "suggestion"),
        note=_form_str(form, "note"),
    )


async def _choices() -> dict[str, Any]:
    entries = await service.entries()
    ruleset = load_ruleset()
    return {
        "categories": CATEGORY_LABELS,
        "severities": lexicon.SEVERITY_LABELS,
        "segments": lexicon.SEGMENT_LABELS,
        "shipped_bases": ruleset.bases,
        "own_bases": {e.text: e.body for e in entries if e.kind == "basis"},
        "shipped_rules": [(r.id, r.category, r.description) for r in ruleset.rules],
        "shipped_suggestions": ruleset.suggestions,
        "starter_packs": lexicon.starter_packs(),
        "base_version": ruleset.version,
    }


async def _index(
    request: web.Request,
    *,
    tab: str = "",
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    q = request.query
    tab = tab or q.get("tab", "term")
    if tab not in TABS:
        tab = "term"
    filters = {k: q.get(k, "").strip()[:64] for k in ("q", "category", "segment")}
    entries = await service.entries()
    counts = {k: sum(1 for e in entries if e.kind == k) for k in TABS}
    shown = [e for e in entries if e.kind == tab]
    if filters["q"]:
        shown = [e for e in shown if filters["q"].lower() in (e.text + e.body + e.note).lower()]
    if filters["category"]:
        shown = [
            e
            for e in shown
            if e.category == filters["category"]
            or filters["category"] in (e.categories or [])
            or e.text == filters["category"]
        ]
    if filters["segment"]:
        wanted = "" if filters["segment"] == "all" else filters["segment"]
        shown = [e for e in shown if e.segment == wanted]
    latest, published = await lexicon.published_rows()
    changes = lexicon.diff_entries(published, [service.snapshot(e) for e in entries])
    op = request[OPERATOR]
    active = sorted(e.text for e in entries if e.kind == "segment")
    per_segment = {
        s: sum(1 for e in entries if e.segment == s and e.kind in ("term", "exception"))
        for s in SEGMENTS
    }
    return render(
        "lexicon_index.html",
        request,
        {
            **await _choices(),
            "tab": tab,
            "tabs": TABS,
            "counts": counts,
            "entries": shown,
            "filters": filters,
            "latest": latest,
            "changes": changes,
            "kind_labels": lexicon.KIND_LABELS,
            "active_segments": active,
            "per_segment": per_segment,
            "can_edit": request.app[CONSOLE].table.allows(op.role, "lexicon:edit"),
            "errors": errors or {},
            "form": form or {},
            "notice": notice or _notice(request),
        },
        status=status,
    )


def _notice(request: web.Request) -> str:
    done = request.query.get("done", "")
    return {
        "added": "已加入草稿。",
        "saved": "已保存到草稿。",
        "deleted": "已从草稿删除。",
        "segments": "行业包设置已保存到草稿。",
        "discarded": "草稿已恢复为当前生效的版本。",
        "imported": "示例词条已加入草稿（已有的词条保持不变）。启用该行业包、试运行并发布后生效。",
    }.get(done, "")


def _index_url(request: web.Request, tab: str, done: str) -> str:
    return str(request.app.router["lexicon"].url_for().with_query({"tab": tab, "done": done}))


@requires("lexicon:read")
@menu("合规词库", group="合规", order=55)
async def lexicon_index(request: web.Request) -> web.StreamResponse:
    return await _index(request)


@requires("lexicon:edit")
async def lexicon_add(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind = _form_str(form, "kind")
    if kind not in TABS or kind == "segment":
        raise web.HTTPBadRequest()
    data = entry_input(form, kind=kind)
    try:
        await lexicon.do_add_entry(
            actor=operator_actor(request[OPERATOR]), source=client_address(request), data=data
        )
    except FieldError as exc:
        return await _index(
            request, tab=kind, errors={exc.field: exc.message}, form=data.__dict__, status=422
        )
    return see_other(_index_url(request, kind, "added"))


async def _entry_page(
    request: web.Request,
    entry_id: int,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    entry = await service.entry_by_id(entry_id=entry_id)
    if entry is None:
        raise web.HTTPNotFound()
    history = await audit.entries(
        where=AuditFilter(target=lexicon.entry_target(entry.code)), limit=20
    )
    return render(
        "lexicon_entry.html",
        request,
        {
            **await _choices(),
            "entry": entry,
            "kind_labels": lexicon.KIND_LABELS,
            "history": history,
            "errors": errors or {},
            "form": form or service.snapshot(entry),
            "can_edit": request.app[CONSOLE].table.allows(request[OPERATOR].role, "lexicon:edit"),
        },
        status=status,
    )


@requires("lexicon:read")
async def lexicon_entry(request: web.Request) -> web.StreamResponse:
    return await _entry_page(request, _int_param(request, "entry_id"))


@requires("lexicon:edit")
async def lexicon_edit(request: web.Request) -> web.StreamResponse:
    entry_id = _int_param(request, "entry_id")
    entry = await service.entry_by_id(entry_id=entry_id)
    if entry is None:
        raise web.HTTPNotFound()
    form = await request.post()
    data = entry_input(form, kind=entry.kind)
    try:
        await lexicon.do_update_entry(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            entry_id=entry_id,
            data=data,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _entry_page(
            request,
            entry_id,
            errors={exc.field: exc.message},
            form={**data.__dict__, "categories": list(data.categories)},
            status=422,
        )
    return see_other(_index_url(request, entry.kind, "saved"))


@requires("lexicon:edit")
async def lexicon_delete(request: web.Request) -> web.StreamResponse:
    entry_id = _int_param(request, "entry_id")
    try:
        entry = await lexicon.do_delete_entry(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            entry_id=entry_id,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _entry_page(request, entry_id, errors={exc.field: exc.message}, status=422)
    return see_other(_index_url(request, entry.kind, "deleted"))


@requires("lexicon:edit")
async def lexicon_segments(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    chosen = [v for v in form.getall("segments", []) if isinstance(v, str)]
    try:
        await lexicon.do_set_segments(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            segments=chosen,
        )
    except FieldError as exc:
        return await _index(request, tab="segment", errors={exc.field: exc.message}, status=422)
    return see_other(_index_url(request, "segment", "segments"))


@requires("lexicon:edit")
async def lexicon_import_pack(request: web.Request) -> web.StreamResponse:
    segment = request.match_info["segment"]
    if segment not in SEGMENTS:
        raise web.HTTPNotFound()
    await lexicon.do_import_pack(
        actor=operator_actor(request[OPERATOR]), source=client_address(request), segment=segment
    )
    return see_other(_index_url(request, "segment", "imported"))


@requires("lexicon:edit")
async def lexicon_discard(request: web.Request) -> web.StreamResponse:
    await lexicon.do_discard_draft(
        actor=operator_actor(request[OPERATOR]), source=client_address(request)
    )
    return see_other(_index_url(request, request.query.get("tab", "term"), "discarded"))


# ------------------------------------------------------------------ dry run and publish


async def _dry_run_page(
    request: web.Request,
    result: dryrun.DryRun,
    draft_hash: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    latest, published = await lexicon.published_rows()
    draft = await lexicon.draft_snapshot()
    return render(
        "lexicon_dry_run.html",
        request,
        {
            "r": result,
            "draft_hash": draft_hash,
            "stale": lexicon.snapshot_hash(draft) != draft_hash,
            "latest": latest,
            "next_number": (latest.number if latest else 0) + 1,
            "changes": lexicon.diff_entries(published, draft),
            "kind_labels": lexicon.KIND_LABELS,
            "categories": CATEGORY_LABELS,
            "segments": lexicon.SEGMENT_LABELS,
            "severities": lexicon.SEVERITY_LABELS,
            "errors": errors or {},
            "form": form or {},
        },
        status=status,
    )


@requires("lexicon:edit")
async def lexicon_dry_run(request: web.Request) -> web.StreamResponse:
    """Run the draft against the labelled sets (or stored messages) beside the published one."""
    analyzer = _analyzer(request)
    if analyzer is None:
        return error_page(request, 503, detail="分析器不支持按草稿试运行（未启用分析进程池）。")
    rows = await lexicon.draft_snapshot()
    draft_hash = lexicon.snapshot_hash(rows)
    try:
        document = lexicon.check_document(rows)
    except FieldError as exc:
        return await _index(request, errors={"draft": exc.message}, status=422)
    latest = await service.latest_version()
    published = Overlay(str(latest.number), latest.document) if latest else None
    draft = Overlay.from_data(f"草稿 {draft_hash[:8]}", document)
    result = await dryrun.run(analyzer=analyzer, published=published, draft=draft)
    await request.app[REDIS].set(
        _dry_run_key(draft_hash),
        json.dumps(result.to_json(), ensure_ascii=False),
        ex=DRY_RUN_TTL_S,
    )
    return await _dry_run_page(request, result, draft_hash)


def _effect(result: dryrun.DryRun) -> dict[str, Any]:
    """What a version keeps of its dry run: the counts and the first lines."""
    data = result.to_json()
    data["lines"] = data["lines"][:EFFECT_LINES_KEPT]
    return data


@requires("lexicon:edit")
async def lexicon_publish(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    draft_hash = _form_str(form, "draft_hash")[:64]
    reason = _form_str(form, "reason")
    raw = await request.app[REDIS].get(_dry_run_key(draft_hash)) if draft_hash else None
    result = dryrun.DryRun.from_json(json.loads(raw)) if raw else None
    analyzer = _analyzer(request)
    if analyzer is None:
        return error_page(request, 503, detail="分析器不支持按草稿复核话术（未启用分析进程池）。")
    try:
        published = await lexicon.do_publish(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            reason=reason,
            draft_hash=draft_hash,
            effect=_effect(result) if result is not None else None,
            analyzer=analyzer,
        )
    except FieldError as exc:
        if result is None or exc.field != "reason":
            return await _index(request, errors={"draft": exc.message}, status=422)
        return await _dry_run_page(
            request,
            result,
            draft_hash,
            errors={exc.field: exc.message},
            form={"reason": reason},
            status=422,
        )
    await _apply_here(request)
    url = request.app.router["lexicon_version"].url_for(number=str(published.version.number))
    return see_other(
        str(url.with_query({"published": "1", "withdrawn": str(len(published.withdrawn))}))
    )


async def _apply_here(request: web.Request) -> None:
    """This process takes the new version at once; the others on their next poll."""
    follower = request.app.get(RULES_OVERLAY)
    if follower is not None:
        await follower.refresh()


# ------------------------------------------------------------------ versions


@requires("lexicon:read")
async def lexicon_versions(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("page", "1")
    page = int(raw) if raw.isdigit() and 0 < int(raw) < 10_000 else 1
    rows, total = await service.versions(offset=(page - 1) * 50, limit=50)
    return render(
        "lexicon_versions.html",
        request,
        {"rows": rows, "total": total, "page": page, "pages": max(1, (total + 49) // 50)},
    )


async def _version_page(
    request: web.Request,
    number: int,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    row = await service.version(number=number)
    if row is None:
        raise web.HTTPNotFound()
    previous = await service.previous_version(number=number)
    latest = await service.latest_version()
    changes = lexicon.diff_entries(previous.entries if previous else [], row.entries)
    effect = dryrun.DryRun.from_json(row.effect) if row.effect else None
    op = request[OPERATOR]
    return render(
        "lexicon_version.html",
        request,
        {
            "v": row,
            "previous": previous,
            "is_current": latest is not None and latest.number == row.number,
            "changes": changes,
            "effect": effect,
            "kind_labels": lexicon.KIND_LABELS,
            "categories": CATEGORY_LABELS,
            "segments": lexicon.SEGMENT_LABELS,
            "severities": lexicon.SEVERITY_LABELS,
            "published": request.query.get("published") == "1",
            "withdrawn": request.query.get("withdrawn", ""),
            "can_edit": request.app[CONSOLE].table.allows(op.role, "lexicon:edit"),
            "errors": errors or {},
            "form": form or {},
        },
        status=status,
    )


@requires("lexicon:read")
async def lexicon_version(request: web.Request) -> web.StreamResponse:
    return await _version_page(request, _int_param(request, "number"))


@requires("lexicon:edit")
async def lexicon_rollback(request: web.Request) -> web.StreamResponse:
    number = _int_param(request, "number")
    form = await request.post()
    reason = _form_str(form, "reason")
    analyzer = _analyzer(request)
    if analyzer is None:
        return error_page(request, 503, detail="分析器不支持按草稿复核话术（未启用分析进程池）。")
    try:
        published = await lexicon.do_rollback(
            actor=operator_actor(request[OPERATOR]),
            source=client_address(request),
            number=number,
            reason=reason,
            analyzer=analyzer,
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    except FieldError as exc:
        return await _version_page(
            request, number, errors={exc.field: exc.message}, form={"reason": reason}, status=422
        )
    await _apply_here(request)
    url = request.app.router["lexicon_version"].url_for(number=str(published.version.number))
    return see_other(
        str(url.with_query({"published": "1", "withdrawn": str(len(published.withdrawn))}))
    )


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/lexicon", lexicon_index, name="lexicon")
    r.add_post("/lexicon/entries", lexicon_add, name="lexicon_add")
    r.add_get("/lexicon/entries/{entry_id}", lexicon_entry, name="lexicon_entry")
    r.add_post("/lexicon/entries/{entry_id}", lexicon_edit, name="lexicon_edit")
    r.add_post("/lexicon/entries/{entry_id}/delete", lexicon_delete, name="lexicon_delete")
    r.add_post("/lexicon/segments", lexicon_segments, name="lexicon_segments")
    r.add_post("/lexicon/discard", lexicon_discard, name="lexicon_discard")
    r.add_post("/lexicon/packs/{segment}/import", lexicon_import_pack, name="lexicon_import_pack")
    r.add_post("/lexicon/dry-run", lexicon_dry_run, name="lexicon_dry_run")
    r.add_post("/lexicon/publish", lexicon_publish, name="lexicon_publish")
    r.add_get("/lexicon/versions", lexicon_versions, name="lexicon_versions")
    r.add_get("/lexicon/versions/{number}", lexicon_version, name="lexicon_version")
    r.add_post("/lexicon/versions/{number}/rollback", lexicon_rollback, name="lexicon_rollback")
