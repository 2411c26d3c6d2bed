"""The outbox and dead-letter queries are answered from indexes; /metrics reads them seldom.

Plans are checked as tests/bot/test_precheck_index.py does: EXPLAIN QUERY PLAN on
SQLite, EXPLAIN with sequential scans ruled out on PostgreSQL (an empty table
would otherwise always be scanned).
"""

from __future__ import annotations

import re

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from bot import service as bot_service
from bot.app import TABLE_GAUGES, TABLE_GAUGES_EVERY_S, refresh_gauges
from bot.keys import METRICS
from core import db as core_db
from core.settings import Settings
from tests.bot.harness import Edge


async def plan_of(settings: Settings, query: object) -> str:
    conn = Tortoise.get_connection("default")
    sql = query.sql(params_inline=True)  # type: ignore[attr-defined]
    if core_db.dialect_of(settings.database_url) == "sqlite":
        _, rows = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}")
        return " | ".join(str(r[-1]) for r in rows)
    # SET LOCAL and EXPLAIN on one connection: the pool may hand each call another.
    async with in_transaction() as tx:
        await tx.execute_script("SET LOCAL enable_seqscan = off")
        _, rows = await tx.execute_query(f"EXPLAIN {sql}")
    return " | ".join(str(next(iter(r.values()))) for r in rows)


def is_sqlite(settings: Settings) -> bool:
    return core_db.dialect_of(settings.database_url) == "sqlite"


async def test_due_rows_are_found_by_state_and_time_from_one_index(
    settings: Settings, db: None
) -> None:
    plan = await plan_of(settings, bot_service.due_outbox_query(at=bot_service.now(), limit=50))
    if is_sqlite(settings):
        # Both conditions in the index search, rows already in next_attempt_at order:
        # settled rows (most of the table) are never read.
        assert re.search(r"USING (COVERING )?INDEX \S+ \(state=\? AND next_attempt_at<\?\)", plan)
        assert "TEMP B-TREE" not in plan, plan
    else:
        cond = next(line for line in plan.split(" | ") if "Index Cond" in line)
        assert "state" in cond and "next_attempt_at" in cond, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan


async def test_stale_leases_and_open_dead_letters_use_their_indexes(
    settings: Settings, db: None
) -> None:
    stale = await plan_of(settings, bot_service.stale_outbox_query(at=bot_service.now(), limit=50))
    dead = await plan_of(settings, bot_service.open_dead_letters_query())
    if is_sqlite(settings):
        assert re.search(r"INDEX \S+ \(state=\? AND lease_until<\?\)", stale), stale
        assert re.search(r"INDEX \S+ \(status=\?\)", dead), dead
    else:
        assert "Index Cond" in stale and "lease_until" in stale, stale
        assert "Index Cond" in dead and "status" in dead, dead
        assert "Seq Scan" not in stale + dead


def gauge(edge: Edge, name: str, **labels: str) -> float:
    value = edge.app[METRICS].registry.get_sample_value(name, labels)
    return float(value or 0)


async def test_scrapes_read_the_tables_at_most_once_per_interval(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.bot.test_outbox import app_text, dispatcher, enqueue

    now = [1000.0]
    edge.app[TABLE_GAUGES].clock = lambda: now[0]
    reads = []
    counts = bot_service.outbox_counts

    async def counting() -> dict[str, int]:
        reads.append(now[0])
        return await counts()

    monkeypatch.setattr(bot_service, "outbox_counts", counting)

    await enqueue("g1", app_text("zhangwei", "一"))
    await refresh_gauges(edge.app)
    assert gauge(edge, "siyu_outbox_items", state="pending") == 1
    await enqueue("g2", app_text("zhangwei", "二"))
    for _ in range(5):  # five scrapes in a row: no table read
        await refresh_gauges(edge.app)
    assert len(reads) == 1
    assert gauge(edge, "siyu_outbox_items", state="pending") == 1

    now[0] += TABLE_GAUGES_EVERY_S
    await refresh_gauges(edge.app)
    assert len(reads) == 2
    assert gauge(edge, "siyu_outbox_items", state="pending") == 2

    # Once nothing is pending the gauge says 0, not the last count it saw.
    await dispatcher(edge).dispatch_due()
    now[0] += TABLE_GAUGES_EVERY_S
    await refresh_gauges(edge.app)
    assert gauge(edge, "siyu_outbox_items", state="pending") == 0
    assert gauge(edge, "siyu_outbox_items", state="done") == 2
