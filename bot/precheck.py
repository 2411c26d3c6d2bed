"""The pre-send check's own analyzer capacity and its rate limits.

``POST /api/v1/compliance/check`` answers an advisor who is typing (the sidebar calls it,
debounced) and other systems holding a ``compliance:check`` key.  Two promises:

* **Checks never starve intake.**  Message intake (the worker's pipeline) and checks do
  not share analyzer capacity.  When the worker role runs in the same process as the API
  (``siyu serve`` with every role), checks get a pool of their own
  (``SIYU_CHECK__POOL_SIZE`` processes, built with the intake pool's configuration and
  following its institution overlay), so a check never queues behind a 64-message batch
  and a burst of checks never delays a stored message.  An API-only process has no
  intake: its analyzer serves checks alone.  In front of that capacity sits a gate: at
  most one check per process runs, ``max_waiting`` more wait, the rest are told at once
  to come back (503 ``busy``) instead of piling up behind each other.
* **Rate limits per key and per advisor.**  A fixed one-minute window in Redis (shared
  by every API process) per API key and per signed-in operator — the sidebar's advisor
  is one; past it, 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from bot.keys import ANALYZER, REDIS, SETTINGS
from compliance_nlp.types import Analysis, Turn
from core.access import Principal
from core.appkit import ROLES
from core.redis import Keyspace

log = logging.getLogger(__name__)

__all__ = ["CHECK_GATE", "CHECK_LIMITS", "CheckBusy", "CheckGate", "CheckLimits", "check_ctx"]


class CheckBusy(RuntimeError):
    """Every check slot is taken and the queue is full: retry in a moment."""


class CheckGate:
    """Bounded admission to the check analyzer: ``slots`` at a time, ``max_waiting`` queued."""

    def __init__(
        self,
        analyzer: Any,
        *,
        slots: int,
        max_waiting: int,
        follow: Any = None,
    ) -> None:
        self.analyzer = analyzer
        self.slots = max(1, slots)
        self.max_waiting = max_waiting
        # The intake analyzer whose institution overlay (compliance's lexicon changes)
        # a separate check pool must apply too: a check answers as intake would judge.
        self._follow = follow
        self._sem = asyncio.Semaphore(self.slots)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def _sync_overlay(self) -> None:
        if self._follow is None:
            return
        wanted = getattr(self._follow, "overlay", None)
        if getattr(self.analyzer, "overlay", None) is not wanted:
            setter = getattr(self.analyzer, "set_overlay", None)
            if setter is not None:
                setter(wanted)

    async def analyze(self, text: str, role: str, context: Sequence[Turn] | None) -> Analysis:
        if self._sem.locked() and self._waiting >= self.max_waiting:
            raise CheckBusy(f"{self.slots} running, {self._waiting} waiting")
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        try:
            self._sync_overlay()
            results = await self.analyzer.analyze_many([(text, role)], [context])
            return results[0]  # type: ignore[no-any-return]
        finally:
            self._sem.release()


_WINDOW_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


@dataclass(frozen=True)
class Refusal:
    limit: int
    retry_after_s: int


class CheckLimits:
    """Per-key and per-operator checks a minute, counted in Redis (every API process)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        per_key: int,
        per_operator: int,
        keyspace: Keyspace | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_key = per_key
        self.per_operator = per_operator
        self.keys = keyspace or Keyspace()
        self.clock = clock
        self._incr = redis.register_script(_WINDOW_LUA)

    def limit_for(self, principal: Principal) -> int:
        return self.per_key if principal.kind == "api_key" else self.per_operator

    async def take(self, principal: Principal) -> Refusal | None:
        """Count one check for the caller; a Refusal when its minute is spent."""
        now = self.clock()
        window = int(now // 60)
        key = self.keys.key("check-rate", principal.kind, principal.id, str(window))
        count = int(await self._incr(keys=[key], args=[120]))
        limit = self.limit_for(principal)
        if count > limit:
            return Refusal(limit=limit, retry_after_s=max(1, int(60 - now % 60) + 1))
        return None


CHECK_GATE = web.AppKey("check_gate", CheckGate)
CHECK_LIMITS = web.AppKey("check_limits", CheckLimits)
# Injected by a test (or the root) to give checks an analyzer of its choosing.
CHECK_ANALYZER: web.AppKey[Any] = web.AppKey("check_analyzer")


async def check_ctx(app: web.Application) -> AsyncIterator[None]:
    """The check's gate, over its own pool when intake shares this process."""
    settings = app[SETTINGS].check
    app[CHECK_LIMITS] = CheckLimits(
        app[REDIS],
        per_key=settings.per_key_per_minute,
        per_operator=settings.per_operator_per_minute,
    )
    intake = app[ANALYZER]
    own = None
    analyzer = app.get(CHECK_ANALYZER)
    slots = settings.pool_size or 1
    if analyzer is None:
        from compliance_nlp.pool import AnalyzerPool

        if "worker" in app[ROLES] and settings.pool_size > 0 and isinstance(intake, AnalyzerPool):
            own = AnalyzerPool(intake.config, processes=settings.pool_size)
            await own.start()
            analyzer = own
            log.info("compliance check pool started", extra={"processes": settings.pool_size})
        else:
            # No intake here (an API process), or an analyzer the root injected: the
            # checks use it, as many at a time as it has processes.
            analyzer = intake
            slots = max(1, int(getattr(intake, "processes", 1) or 1))
    app[CHECK_GATE] = CheckGate(
        analyzer,
        slots=slots,
        max_waiting=settings.max_waiting,
        follow=intake if analyzer is not intake else None,
    )
    try:
        yield
    finally:
        if own is not None:
            await own.close()
