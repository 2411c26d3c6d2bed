"""One way to run periodic work: interval, jitter, stop, error logging, a metric.

Every loop of the product runs through ``PeriodicJob`` — the outbox dispatcher,
the archive puller, the contact reconciler, and the coming SOP scheduler and tag
sync — so each logs its failures the same way, stops within one wait when asked
and shows up in ``/metrics`` as ``siyu_job_runs_total{job,outcome}``.

Jobs may run more than once and in several processes at the same time (two
scheduler processes, a restart mid-tick): each tick must be idempotent and claim
its rows (conditional UPDATE, ``FOR UPDATE SKIP LOCKED``), never assume it is alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from core.domain import JobTick
from core.metrics import Metrics

log = logging.getLogger(__name__)

Wake = Callable[[float], Awaitable[bool]]


@dataclass
class PeriodicJob:
    name: str
    tick: JobTick
    interval_s: float
    metrics: Metrics | None = None
    # ± this fraction of the interval, so processes started together drift apart.
    jitter: float = 0.1
    rerun_when_busy: bool = True
    wake: Wake | None = None
    rng: random.Random = field(default_factory=random.Random)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            did = await self.run_once()
            if did and self.rerun_when_busy:
                await asyncio.sleep(0)  # let others run between busy ticks
                continue
            await self._wait(stop)

    async def run_once(self) -> int:
        """One tick; a failure is logged and counted, never raised (the loop lives on)."""
        t0 = time.perf_counter()
        try:
            did = int(await self.tick() or 0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job failed", extra={"job": self.name})
            self._count("error", t0)
            return 0
        self._count("busy" if did else "idle", t0)
        return did

    def _count(self, outcome: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.job_runs.labels(self.name, outcome).inc()
            self.metrics.job_seconds.labels(self.name).observe(time.perf_counter() - t0)

    def next_wait_s(self) -> float:
        spread = self.interval_s * self.jitter
        return max(0.0, self.interval_s + self.rng.uniform(-spread, spread))

    async def _wait(self, stop: asyncio.Event) -> None:
        timeout = self.next_wait_s()
        if self.wake is None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=timeout)
            except TimeoutError:
                pass
            return
        # A wake-up source (e.g. a Redis list) races the stop event.
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self.wake(timeout))
        try:
            await asyncio.wait(
                {stopper, waker}, timeout=timeout + 1, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (stopper, waker):
                if not t.done():
                    t.cancel()
            await asyncio.gather(stopper, waker, return_exceptions=True)
