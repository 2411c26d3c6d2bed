"""HTTP adapters of the edge's API: parse → call one flow → shape the answer."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from bot.archive import ingest_records
from bot.keys import ANALYZER, STREAM
from compliance_nlp.pool import AnalyzerUnavailable
from compliance_nlp.types import AnalysisError, Turn
from core.access import requires

MAX_INGEST_RECORDS = 10_000


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


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
async def ingest_archive(request: web.Request) -> web.Response:
    """``POST /api/v1/archive/messages``: decrypted 会话存档 records in."""
    try:
        records = await _json_or_jsonl(request)
    except web.HTTPBadRequest as exc:
        return _error(400, "bad_request", exc.text or "bad request")
    if len(records) > MAX_INGEST_RECORDS:
        return _error(413, "too_many_records", f"at most {MAX_INGEST_RECORDS} records per call")
    try:
        report = await ingest_records(request.app[STREAM], records)
    except (aioredis.RedisError, OSError):
        return _error(503, "queue_unavailable", "queue unavailable; retry (records are idempotent)")
    return web.json_response(report.as_dict())


@requires("compliance:check")
async def compliance_check(request: web.Request) -> web.Response:
    """``POST /api/v1/compliance/check`` ``{text, role, context?}``: the pre-send check.

    ``context`` is the visible thread before the text (``[{role, text}, …]``, oldest
    first; the sidebar sends it): an answer is judged as the answer to the question.
    """
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return _error(400, "bad_request", "body must be JSON {text, role, context?}")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return _error(400, "bad_request", "field 'text' must be a string")
    role = body.get("role", "advisor")
    if role not in ("advisor", "customer"):
        return _error(400, "bad_request", "field 'role' must be 'advisor' or 'customer'")
    if len(body["text"]) > 100_000:
        return _error(413, "too_long", "text longer than 100,000 characters")
    raw_context = body.get("context")
    context: tuple[Turn, ...] | None = None
    if raw_context is not None:
        if not isinstance(raw_context, list) or len(raw_context) > 50:
            return _error(
                400, "bad_request", "field 'context' must be a list of at most 50 {role, text}"
            )
        try:
            context = tuple(Turn.parse(t) for t in raw_context)
        except AnalysisError as exc:
            return _error(400, "bad_request", f"field 'context': {exc}")
        if sum(len(t.text) for t in context) > 100_000:
            return _error(413, "too_long", "context longer than 100,000 characters")
    try:
        results = await request.app[ANALYZER].analyze_many([(body["text"], role)], [context])
    except AnalyzerUnavailable:
        # The pool's workers died and cannot be restarted yet: the caller may retry.
        return _error(503, "analyzer_unavailable", "compliance check unavailable; retry later")
    return web.json_response(results[0].to_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/archive/messages", ingest_archive)
    app.router.add_post("/api/v1/compliance/check", compliance_check)
