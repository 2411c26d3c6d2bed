"""The reply library's periodic re-check (admin role): snippets judged under old rules.

A lexicon publish re-checks every approved snippet in its own transaction; this job
covers what changes without a publish — a release's shipped rules and models. It may
run in several API processes at once: a snippet already judged under the running rules
is skipped, and a withdrawal names the revision it judged, so two ticks together
withdraw a snippet once.
"""

from __future__ import annotations

import logging

from aiohttp import web

from admin.lexicon import service as lexicon_service
from admin.snippets import flows as snippets
from bot.keys import ANALYZER
from bot.rules_overlay import RULES_OVERLAY
from core.domain import JobTick
from core.settings import Settings

log = logging.getLogger(__name__)

RECHECK_INTERVAL_S = 600.0


def recheck_interval(_settings: Settings) -> float:
    return RECHECK_INTERVAL_S


def build_recheck_tick(app: web.Application) -> JobTick | None:
    analyzer = app.get(ANALYZER)
    if analyzer is None:
        return None

    async def tick() -> int:
        follower = app.get(RULES_OVERLAY)
        if follower is not None:
            # Judge under the newest published overlay, never a superseded one.
            await follower.refresh()
        latest = await lexicon_service.latest_version()
        withdrawn = await snippets.do_recheck_stale(
            analyzer=analyzer, lexicon_version=latest.number if latest else 0
        )
        if withdrawn:
            log.warning(
                "snippets withdrawn after a rules change",
                extra={"snippets": ",".join(str(w.snippet_id) for w in withdrawn)},
            )
        return 0

    return tick
