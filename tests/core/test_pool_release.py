"""A PostgreSQL connection given back to the pool is not reset on the server.

asyncpg's default reset sent four statements on every release, a round trip each time
the worker ran a query or committed a transaction (issue 8, item 11).  siyu leaves no
session state on a connection (``core.db.keep_session``); what must still hold: a
transaction left open is rolled back before the connection serves anyone else.
"""

from __future__ import annotations

import asyncpg
import pytest
from tortoise import Tortoise

from core.settings import Settings


def _postgres(settings: Settings) -> None:
    if not settings.database_url.startswith("postgres"):
        pytest.skip("a PostgreSQL pool's release")


async def _last_query_of(settings: Settings, pid: int) -> str:
    other = await asyncpg.connect(settings.database_url.replace("postgres://", "postgresql://"))
    try:
        return str(await other.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await other.close()


async def test_a_released_connection_is_given_back_without_a_reset_query(
    db: None, settings: Settings
) -> None:
    """The backend's last statement is the caller's own, not the reset (``RESET ALL``,
    ``UNLISTEN *``, ``pg_advisory_unlock_all()``)."""
    _postgres(settings)
    conn = Tortoise.get_connection("default")
    pool = conn._pool  # type: ignore[attr-defined]
    async with pool.acquire() as raw:
        pid = await raw.fetchval("SELECT pg_backend_pid() /* e1pipe2 mark */")
    last = await _last_query_of(settings, pid)
    assert "e1pipe2 mark" in last
    assert "RESET ALL" not in last


async def test_a_transaction_left_open_is_still_rolled_back_on_release(
    db: None, settings: Settings
) -> None:
    _postgres(settings)
    pool = Tortoise.get_connection("default")._pool  # type: ignore[attr-defined]
    async with pool.acquire() as raw:
        pid = await raw.fetchval("SELECT pg_backend_pid()")
        await raw.execute("BEGIN")
        await raw.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
        assert raw.is_in_transaction()
    # The pool hands out the connection given back last (a LIFO queue): the same one.
    async with pool.acquire() as again:
        assert await again.fetchval("SELECT pg_backend_pid()") == pid
        assert not again.is_in_transaction()
        assert await again.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
