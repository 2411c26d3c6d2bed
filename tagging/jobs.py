"""The corp-tag sync job (scheduler role): a pull at start, callbacks' requests, reconcile.

Jobs may run in several scheduler processes at once: every step here is idempotent
(a pull applies WeCom's state; a request is finished by id; outbox rows are unique by
key), so two processes running a tick together waste a call, never corrupt a tag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from tortoise.transactions import in_transaction

from bot.keys import WECOM_CLIENT
from bot.wecom.client import WeComClient, WeComError
from core import audit
from core.audit import Actor
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


# ---------------------------------------------------------------- a sync started from the console

#: One console-started sync at a time, across every admin process (a Redis lock).
SYNC_NOW_KEY = "siyu:tagging:sync-now"
#: Far longer than a pull and reconcile take (one ``get_corp_tag_list`` and the
#: writes); a lock left by a process that died mid-run lapses after it.
SYNC_NOW_TTL_S = 600
# Deletes the lock only while it is still ours (a lapsed lock may be someone else's).
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class SyncNow:
    """A console-started sync in progress: who started it and when."""

    started_by: str
    started_at: datetime


async def sync_now_running(redis: Any) -> SyncNow | None:
    raw = await redis.get(SYNC_NOW_KEY)
    if raw is None:
        return None
    try:
        held = json.loads(raw)
        return SyncNow(str(held["by"]), datetime.fromisoformat(held["at"]))
    except (ValueError, KeyError, TypeError):
        return SyncNow("", datetime.now(UTC))


async def start_sync_now(
    *, redis: Any, client: WeComClient, actor: Actor, tasks: list[asyncio.Task[None]]
) -> bool:
    """Start the full pull and reconcile (as ``siyu tags sync``) in the background;
    False when one is already running.  The request that asks returns at once: the
    run records itself (``tagging_sync_run``) and the library page shows it."""
    held = json.dumps(
        {"token": secrets.token_hex(8), "by": actor.name[:64], "at": datetime.now(UTC).isoformat()}
    )
    if not await redis.set(SYNC_NOW_KEY, held, nx=True, ex=SYNC_NOW_TTL_S):
        return False
    try:
        async with in_transaction() as conn:
            await audit.append(
                conn=conn,
                actor=actor,
                action="tagging.sync.start",
                target="wecom:corp_tags",
                detail={"kind": "reconcile"},
            )
    except BaseException:
        await redis.eval(_RELEASE, 1, SYNC_NOW_KEY, held)
        raise
    task = asyncio.create_task(_sync_now(redis, client, held), name="tagging:sync-now")
    tasks.append(task)  # stopped with the app's other tasks on shutdown
    task.add_done_callback(lambda t: tasks.remove(t) if t in tasks else None)
    return True


async def _sync_now(redis: Any, client: WeComClient, held: str) -> None:
    try:
        await sync.sync_library(client=client, kind="reconcile")
    except WeComError:
        pass  # the run is recorded failed with WeCom's errcode
    except Exception:
        log.exception("console-started corp tag sync failed")
    finally:
        await redis.eval(_RELEASE, 1, SYNC_NOW_KEY, held)
