"""HTTP adapters of the edge's API: parse → call one flow → shape the answer."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import ValidationError

from bot.archive import ingest_records
from bot.keys import ANALYZER, STREAM
from bot.precheck import CHECK_GATE, CHECK_LIMITS, CheckBusy
from bot.schemas import AnalysisOut, ArchiveBatchIn, ComplianceCheckIn, IngestReportOut
from compliance_nlp.pool import AnalyzerUnavailable
from compliance_nlp.types import Turn
from core.access import principal_of, requires
from core.apidoc import api_doc

MAX_INGEST_RECORDS = 10_000


def _error(status: int, code: str, message: str, *, field: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


async def _json_or_jsonl(request: web.Request) -> list[Any]:
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="body is not UTF-8") from None
    ctype = request.content_type
    if ctype in ("application/x-ndjson", "application/jsonl", "application/x-jsonlines"):
        records: list[Any] = []
        # "\n" only: str.splitlines() would also split on U+2028/U+2029/U+0085,
        # which are legal inside a JSON string.
        for lineno, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise web.HTTPBadRequest(text=f"line {lineno}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise web.HTTPBadRequest(text=f"line {lineno}: JSON nested too deeply") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON: {exc.msg}") from None
    except RecursionError:
        # The parser gives up on nesting deeper than the interpreter's stack: the
        # body cannot be read at all, so no record of it can be told apart.
        raise web.HTTPBadRequest(text="invalid JSON: nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        return list(data["records"])
    if isinstance(data, list):
        return data
    raise web.HTTPBadRequest(text='expected a JSON array, {"records": [...]}, or JSON lines')


@requires("archive:write")
@api_doc(
    summary="写入会话存档记录 / ingest decrypted archive records",
    request=ArchiveBatchIn,
    response=IngestReportOut,
    request_media=("application/json", "application/x-ndjson"),
    errors=(400, 413, 503),
)
async def ingest_archive(request: web.Request) -> web.Response:
    """``POST /api/v1/archive/messages``: decrypted 会话存档 records in."""
    try:
        records = await _json_or_jsonl(request)
    except web.HTTPBadRequest as exc:
        return _error(400, "bad_request", exc.text or "bad request")
    if len(records) > MAX_INGEST_RECORDS:
        return _error(413, "too_many_records", f"at most {MAX_INGEST_RECORDS} records per call")
    try:
        # The stored messages keep which key sent them (the case page and exports show it).
        principal = principal_of(request)
        sender = principal.ref if principal is not None and principal.kind == "api_key" else None
        report = await ingest_records(request.app[STREAM], records, sender=sender)
    except (aioredis.RedisError, OSError):
        return _error(503, "queue_unavailable", "queue unavailable; retry (records are idempotent)")
    return web.json_response(report.as_dict())


@requires("compliance:check")
@api_doc(
    summary="发送前合规检查 / pre-send compliance check",
    request=ComplianceCheckIn,
    response=AnalysisOut,
    errors=(400, 413, 429, 503),
)
async def compliance_check(request: web.Request) -> web.Response:
    """``POST /api/v1/compliance/check`` ``{text, role, context?}``: the pre-send check.

    ``context`` is the visible thread before the text (``[{role, text}, …]``, oldest
    first; the sidebar sends it): an answer is judged as the answer to the question.
    """
    try:
        raw = await request.json()
    except (ValueError, RecursionError):
        return _error(400, "bad_request", "body must be JSON {text, role, context?}")
    try:
        body = ComplianceCheckIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return _error(400, "bad_request", f"field {where!r}: {first['msg']}", field=where)
    if len(body.text) > 100_000:
        return _error(413, "too_long", "text longer than 100,000 characters", field="text")
    context: tuple[Turn, ...] | None = None
    if body.context is not None:
        context = tuple(Turn(role=t.role, text=t.text) for t in body.context)
        if sum(len(t.text) for t in context) > 100_000:
            return _error(
                413, "too_long", "context longer than 100,000 characters", field="context"
            )
    # Counted once the request is well formed: a caller's typo costs it nothing.
    principal = principal_of(request)
    limits = request.app.get(CHECK_LIMITS)
    if principal is not None and limits is not None:
        refused = await limits.take(principal)
        if refused is not None:
            response = _error(
                429, "rate_limited", f"at most {refused.limit} checks a minute; retry later"
            )
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
    gate = request.app.get(CHECK_GATE)
    try:
        if gate is not None:
            analysis = await gate.analyze(body.text, body.role, context)
        else:
            analysis = (
                await request.app[ANALYZER].analyze_many([(body.text, body.role)], [context])
            )[0]
    except CheckBusy:
        response = _error(503, "busy", "compliance check busy; retry in a moment")
        response.headers["Retry-After"] = "1"
        return response
    except AnalyzerUnavailable:
        # The pool's workers died and cannot be restarted yet: the caller may retry.
        return _error(503, "analyzer_unavailable", "compliance check unavailable; retry later")
    return web.json_response(analysis.to_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/archive/messages", ingest_archive)
    app.router.add_post("/api/v1/compliance/check", compliance_check)
