"""The analyzer pool: a killed worker is replaced; a pool that cannot start shows in /readyz."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from bot import models
from compliance_nlp import AnalyzerConfig
from compliance_nlp.pool import AnalyzerPool, _worker_ready
from core.settings import Settings
from tests.bot.harness import Edge, start_edge
from tests.bot.procs import wait_for
from tests.bot.test_archive import a_relation, record
from tests.bot.test_worker_failures import SteppingClock

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="needs Linux /proc to watch the worker die"
)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return True


async def kill_worker(pool: AnalyzerPool) -> int:
    """SIGKILL the pool's (only) worker process, as the OOM killer would."""
    pid = await asyncio.get_running_loop().run_in_executor(pool._require(), _worker_ready)
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: _gone(pid), deadline_s=15, what=f"pool worker {pid} to die")
    return pid


@pytest.fixture
async def pool_edge(
    settings: Settings, redis_client: Any, db: None
) -> AsyncIterator[tuple[Edge, AnalyzerPool, ManualClock]]:
    # The rules-only analyzer starts in about a second; the model changes nothing here.
    clock = ManualClock()
    pool = AnalyzerPool(AnalyzerConfig(use_model=False), processes=1, clock=clock)
    await pool.start()
    settings.pipeline.max_deliveries = 3
    edge, closers = await start_edge(settings, analyzer=pool)
    edge.worker.clock = SteppingClock()
    try:
        yield edge, pool, clock
    finally:
        for close in closers:
            await close()
        await pool.close()


async def ingest(edge: Edge, *msgids: str) -> None:
    userid, ext = a_relation(edge)
    records = [record(m, ext, userid, f"你们的理财收益多少？{m}") for m in msgids]
    status, out = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and out["accepted"] == len(msgids), out


async def readyz(edge: Edge) -> tuple[int, dict[str, Any]]:
    async with edge.session.get(f"{edge.base}/readyz") as resp:
        return resp.status, await resp.json()


async def test_a_killed_pool_worker_is_replaced_and_nothing_is_dead_lettered(
    pool_edge: tuple[Edge, AnalyzerPool, ManualClock],
) -> None:
    edge, pool, _clock = pool_edge
    await ingest(edge, "p1", "p2")
    await edge.process_all()
    assert await models.Message.filter(msgid__in=["p1", "p2"]).count() == 2

    await kill_worker(pool)
    await ingest(edge, "p3", "p4", "p5")
    await edge.process_all()
    assert await models.Message.filter(msgid__in=["p3", "p4", "p5"]).count() == 3
    assert await models.DeadLetter.all().count() == 0
    assert pool.rebuilds == 1
    status, body = await readyz(edge)
    assert status == 200 and body["checks"]["analyzer"] == "ok"


async def test_readyz_is_not_ready_while_the_pool_cannot_be_rebuilt(
    pool_edge: tuple[Edge, AnalyzerPool, ManualClock],
) -> None:
    edge, pool, clock = pool_edge
    status, body = await readyz(edge)
    assert status == 200 and body["checks"]["analyzer"] == "ok"

    # The workers' model is gone (a bad deploy): a new worker process cannot start.
    working = pool.config
    pool.config = replace(working, use_model=True, intent_model_dir="/nonexistent/model")
    await kill_worker(pool)

    async def rebuild_failed() -> tuple[int, dict[str, Any]] | None:
        # The pool learns of the death when its manager thread reaps the process.
        status, body = await readyz(edge)
        return (status, body) if "rebuild failed" in body["checks"]["analyzer"] else None

    status, body = await wait_for(rebuild_failed, deadline_s=60, what="the rebuild to fail")
    assert status == 503 and body["ready"] is False
    assert body["checks"]["analyzer"].startswith("error: pool broken")

    # Meanwhile texts wait: retried, never dead-lettered.
    await ingest(edge, "q1", "q2")
    await edge.process_all(rounds=8)
    assert await models.DeadLetter.all().count() == 0
    assert await models.Message.filter(msgid__in=["q1", "q2"]).count() == 0

    # Fixed; once the back-off has run out, the probe starts a rebuild that works.
    pool.config = working
    clock.now += 3600

    async def ready() -> bool:
        status, body = await readyz(edge)
        return status == 200 and body["checks"]["analyzer"] == "ok"

    await wait_for(ready, deadline_s=60, what="/readyz to answer ready after the fix")
    await edge.process_all()
    assert await models.Message.filter(msgid__in=["q1", "q2"]).count() == 2
    assert await models.DeadLetter.all().count() == 0
