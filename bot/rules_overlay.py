"""The institution's rule overlay the edge's analyzers run, and how running processes follow it.

Compliance reviewers change the lexicon in the console (``admin.lexicon``): their own
terms, exceptions, segment packs, rewordings. Publishing a version writes it here
(``publish``, inside the console's transaction, beside its audit entry); the shipped
rules stay in the package, so an upgrade replaces the base and the overlay still applies
over it.

Every process with an analyzer (worker, API) reads the newest version before it
analyses anything (``OverlayFollower.follow``, from the analyzer's context, so not one
message of a backlog is judged without it) and then polls the newest id every
``POLL_S`` seconds — a one-row primary-key read. A new version is checked against the
shipped rules and handed to the analyzer (``set_overlay``); the analyzer pool passes it
to its worker processes with their next batch. So a change is live everywhere within a
poll interval, without a restart. A version that does not apply (a newer shipped base
dropped a basis it names, say) is logged and the process keeps the one it runs.

Only this module queries ``bot_rules_overlay`` (and reads ``bot_message`` for dry runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from bot.models import Message, RulesOverlay
from compliance_nlp.overlay import Overlay, check_overlay
from compliance_nlp.rules import load_ruleset

log = logging.getLogger(__name__)

__all__ = [
    "POLL_S",
    "RULES_OVERLAY",
    "OverlayFollower",
    "PublishedOverlay",
    "active_overlay",
    "publish_overlay",
    "recent_advisor_lines",
]

# "Within a minute" with room to spare, at one indexed read per process per interval.
POLL_S = 15.0


class OverlayAnalyzer(Protocol):
    def set_overlay(self, overlay: Overlay | None) -> None: ...


@dataclass(frozen=True)
class PublishedOverlay:
    id: int
    overlay: Overlay
    published_by: str


async def publish_overlay(
    *, conn: BaseDBAsyncClient, version: str, document: str, published_by: str
) -> int:
    """Make ``document`` the overlay every analyzer runs (in the caller's transaction)."""
    row = await RulesOverlay.create(
        using_db=conn, version=version, document=document, published_by=published_by[:128]
    )
    return int(row.id)


async def active_overlay() -> PublishedOverlay | None:
    """The newest published overlay, or None when the institution has none yet."""
    row = await RulesOverlay.all().order_by("-id").first()
    if row is None:
        return None
    return PublishedOverlay(
        id=int(row.id),
        overlay=Overlay(version=row.version, document=row.document),
        published_by=row.published_by,
    )


async def recent_advisor_lines(*, since: datetime, limit: int) -> list[tuple[int, datetime, str]]:
    """Advisors' stored lines since ``since`` (id, time, masked text), newest first.

    What a lexicon dry run reads where the labelled sets are not installed: the masked
    text is what is stored in clear, and personal numbers are masked in it already.
    """
    rows = (
        await Message.filter(sender_role="advisor", msgtime__gte=since)
        .exclude(masked_text="")
        .order_by("-msgtime")
        .limit(limit)
        .values_list("id", "msgtime", "masked_text")
    )
    return [(int(i), at, str(text)) for i, at, text in rows]


async def _newest_id() -> int | None:
    row = await RulesOverlay.all().order_by("-id").only("id").first()
    return int(row.id) if row is not None else None


def overlay_problems(overlay: Overlay, rules_dir: str = "") -> list[str]:
    """Why ``overlay`` cannot apply over the rules this process ships (none: it can)."""
    try:
        data: Any = json.loads(overlay.document)
    except ValueError:
        return ["document is not JSON"]
    return check_overlay(data, load_ruleset(rules_dir))


class OverlayFollower:
    """Keeps this process's analyzers on the newest published overlay."""

    def __init__(self, *, interval_s: float | None = None, rules_dir: str = "") -> None:
        self.interval_s = POLL_S if interval_s is None else interval_s
        self.rules_dir = rules_dir
        self.applied_id: int | None = None
        self.current: Overlay | None = None
        self._analyzers: list[OverlayAnalyzer] = []

    async def follow(self, analyzer: object) -> None:
        """Apply the newest overlay to ``analyzer`` now, and every new one from now on.

        An analyzer that cannot take an overlay (a test's stand-in) is left alone.
        """
        if not callable(getattr(analyzer, "set_overlay", None)):
            return
        if self.applied_id is None:
            await self.refresh()
        self._analyzers.append(analyzer)  # type: ignore[arg-type]
        analyzer.set_overlay(self.current)  # type: ignore[attr-defined]

    async def refresh(self) -> bool:
        """Read the newest id; load and apply a new version. True when one was applied."""
        newest = await _newest_id()
        if newest is None or newest == self.applied_id:
            return False
        published = await active_overlay()
        if published is None:
            return False
        problems = overlay_problems(published.overlay, self.rules_dir)
        if problems:
            log.error(
                "published rule overlay does not apply; keeping the current one",
                extra={"version": published.overlay.version, "problems": len(problems)},
            )
            self.applied_id = published.id  # not retried every poll: logged once
            return False
        self.applied_id, self.current = published.id, published.overlay
        for analyzer in self._analyzers:
            analyzer.set_overlay(published.overlay)
        log.info("rule overlay applied", extra={"version": published.overlay.version})
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; a failed read (the DB restarting) is retried next interval."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - any failure: keep the overlay, retry
                log.warning("rule overlay poll failed", extra={"error": type(exc).__name__})


RULES_OVERLAY = web.AppKey("rules_overlay", OverlayFollower)
