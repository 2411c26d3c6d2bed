"""Embedded SQLite commits durably before the stream entry it stores is deleted."""

from __future__ import annotations

from pathlib import Path

from tortoise import Tortoise

from core import db as core_db
from core.settings import Settings
from tests.conftest import SCHEMA


async def test_sqlite_commits_with_synchronous_full(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path, database_url=f"sqlite://{tmp_path / 'siyu.sqlite3'}"
    )
    await core_db.init_db(settings, SCHEMA)
    try:
        conn = Tortoise.get_connection("default")
        _, rows = await conn.execute_query("PRAGMA synchronous")
        assert rows[0][0] == 2  # FULL (NORMAL is 1)
        _, rows = await conn.execute_query("PRAGMA journal_mode")
        assert rows[0][0] == "wal"
    finally:
        await core_db.close_db()
