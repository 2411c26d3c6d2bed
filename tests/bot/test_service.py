"""Service-level guarantees that concurrency depends on."""

from __future__ import annotations

import asyncio
import sys

import pytest
from tortoise.transactions import in_transaction

from bot import models
from bot import service as bot_service
from core.settings import Settings


async def test_lost_insert_race_leaves_the_transaction_usable(db: None) -> None:
    """Another worker inserted the same key first: on PostgreSQL a bare unique
    violation would abort the whole transaction; the savepoint keeps it going."""
    async with in_transaction() as conn:
        first = await bot_service.upsert_advisor(conn=conn, userid="racer")
        again = await bot_service._create_once(models.Advisor, conn=conn, userid="racer")
        assert again is None
        await bot_service.upsert_customer(conn=conn, external_userid="wmRACE", needs_sync=True)
    assert await models.Advisor.filter(userid="racer").count() == 1
    assert await models.Customer.filter(external_userid="wmRACE").exists()
    assert first.id


async def test_sqlite_writer_waits_for_another_process_instead_of_failing(
    db: None, settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite locking only")
    path = settings.database_url.split("://", 1)[1]
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"""
import sqlite3, sys, time
c = sqlite3.connect({path!r}, isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO bot_advisor (created_at, updated_at, userid, name, department, status)"
          " VALUES ('2026-01-01', '2026-01-01', 'other-process', '', '', 'active')")
print("locked", flush=True)
time.sleep(1.5)
c.execute("COMMIT")
""",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"locked"
        async with in_transaction() as conn:
            # Read, then write: the pattern that fails under a plain BEGIN.
            await bot_service.get_advisor(conn=conn, userid="me")
            await bot_service.upsert_advisor(conn=conn, userid="me")
    finally:
        await asyncio.wait_for(holder.wait(), timeout=10)
    rows = await models.Advisor.filter(userid__in=["me", "other-process"]).order_by("id")
    # Ours committed after the other process's: it waited for the lock, not failed.
    assert [r.userid for r in rows] == ["other-process", "me"]
