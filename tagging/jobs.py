"""The corp-tag sync job (scheduler role): a pull at start, callbacks' requests, reconcile.

Jobs may run in several scheduler processes at once: every step here is idempotent
(a pull applies WeCom's state; a request is finished by id; outbox rows are unique by
key), so two processes running a tick together waste a call, never corrupt a tag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from bot.keys import WECOM_CLIENT
from bot.wecom.client import WeComClient, WeComError
from core.domain import JobTick
from core.settings import Settings
from tagging import sync

log = logging.getLogger(__name__)

#: How often the job looks for callbacks' requests.  WeCom's callbacks arrive within
#: seconds; half a minute keeps an advisor's tag edit visible soon without a busy loop.
TICK_INTERVAL_S = 30.0
#: The reconcile: WeCom does not guarantee callback delivery and API changes make
#: none, so the whole library (one call) is compared this often.
RECONCILE_EVERY_S = 3600.0


@dataclass
class TagSyncJob:
    client: WeComClient
    clock: Callable[[], float] = time.monotonic
    reconcile_every_s: float = RECONCILE_EVERY_S
    _last_reconcile: float | None = field(default=None, init=False)
    # Where the rotation over followed customers stands (see sync.request_contact_reconcile).
    _contact_cursor: int = field(default=0, init=False)

    async def tick(self) -> int:
        done = 0
        now = self.clock()
        if self._last_reconcile is None or now - self._last_reconcile >= self.reconcile_every_s:
            # The first tick of a scheduler is the full pull "at start".
            try:
                report = await sync.sync_library(client=self.client, kind="reconcile")
            except WeComError:
                # Recorded in the run; try again next tick rather than after an hour.
                return 0
            self._last_reconcile = now
            done += len(report.changes)
        lib = await sync.sync_requested_library(client=self.client)
        if lib is not None:
            done += len(lib.changes) or 1
        if not await sync.contact_requests_pending():
            # Callbacks first; the rotation only fills idle ticks.
            self._contact_cursor = await sync.request_contact_reconcile(after=self._contact_cursor)
        contacts = await sync.sync_contacts(client=self.client)
        return done + len(contacts.changes)


def _interval(_: Settings) -> float:
    return TICK_INTERVAL_S


#: Schedule rules and tag expiry: attributes and maturities change by the day, so a
#: quarter of an hour is prompt enough and keeps the scan cheap.
RULES_INTERVAL_S = 900.0


def _rules_interval(_: Settings) -> float:
    return RULES_INTERVAL_S


def build_rules_tick(app: web.Application) -> JobTick | None:
    from tagging import rules

    return rules.rules_tick


def build_tick(app: web.Application) -> JobTick | None:
    client = app[WECOM_CLIENT]
    if client is None:
        return None  # no WeCom secret configured: nothing to sync with
    return TagSyncJob(client=client).tick
