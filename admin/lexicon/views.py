"""The lexicon's API routes: what is in force, and its versions (``lexicon:read``)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from admin.lexicon import flows as lexicon
from admin.lexicon import service
from admin.lexicon.models import LexiconVersion
from admin.lexicon.schemas import LexiconOut, LexiconVersionsOut
from compliance_nlp.rules import load_ruleset
from core.access import requires
from core.apidoc import api_doc


def version_json(v: LexiconVersion) -> dict[str, Any]:
    effect = v.effect or {}
    return {
        "number": v.number,
        "published_at": v.created_at.isoformat(),
        "published_by": v.published_by,
        "reason": v.reason,
        "rollback_of": v.rollback_of,
        "base_version": v.base_version,
        "findings_added": effect.get("findings_added"),
        "findings_removed": effect.get("findings_removed"),
    }


@requires("lexicon:read")
@api_doc(summary="生效的合规词库 / the lexicon overlay in force", response=LexiconOut)
async def lexicon_current(request: web.Request) -> web.Response:
    """``GET /api/v1/lexicon``: the institution's overlay in force and its version.

    The shipped rules are the base; this is what the institution's compliance team
    publishes over them (terms, exceptions, segment packs, rewordings).
    """
    latest = await service.latest_version()
    return web.json_response(
        {
            "version": version_json(latest) if latest else None,
            "base_version": load_ruleset().version,
            "overlay": json.loads(latest.document) if latest else {},
            "pending_changes": len(await lexicon.pending_changes()),
        }
    )


@requires("lexicon:read")
@api_doc(summary="词库版本记录 / lexicon versions, newest first", response=LexiconVersionsOut)
async def lexicon_versions(request: web.Request) -> web.Response:
    """``GET /api/v1/lexicon/versions?offset=&limit=``: who published what, when and why."""
    raw_offset, raw_limit = request.query.get("offset", "0"), request.query.get("limit", "50")
    offset = int(raw_offset) if raw_offset.isdigit() and len(raw_offset) < 9 else 0
    limit = min(int(raw_limit), 200) if raw_limit.isdigit() and len(raw_limit) < 4 else 50
    rows, total = await service.versions(offset=offset, limit=max(limit, 1))
    return web.json_response({"items": [version_json(v) for v in rows], "total": total})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/lexicon", lexicon_current, name="api_lexicon")
    app.router.add_get("/api/v1/lexicon/versions", lexicon_versions, name="api_lexicon_versions")
