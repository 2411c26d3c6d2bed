"""Database lifecycle and schema migrations (SQLite and PostgreSQL).

Migrations are plain SQL files, one per dialect, under ``core/migrations``:
``NNNN_name.sqlite.sql`` and ``NNNN_name.postgres.sql``.  They are applied in
order inside a transaction and recorded in ``siyu_schema_migrations``.  Plain
SQL keeps a bank's DBA able to read exactly what will run on their database.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from core.settings import Settings

log = logging.getLogger(__name__)

# Every module that owns Tortoise models; one app so relations cross freely.
MODEL_MODULES = ["bot.models"]

MIGRATIONS_TABLE = "siyu_schema_migrations"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sqlite|postgres)\.sql$")


class SchemaNotMigrated(RuntimeError):
    """The database is behind the code; ``siyu migrate`` fixes it."""


@dataclass(frozen=True)
class MigrationFile:
    version: int
    name: str
    sql: str


def dialect_of(url: str) -> str:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith(("postgres", "asyncpg", "psycopg")):
        return "postgres"
    raise ValueError(f"unsupported SIYU_DATABASE_URL scheme: {url.split(':', 1)[0]!r}")


def _sqlite_connection(database_url: str) -> dict[str, Any]:
    path = database_url.split("://", 1)[1].split("?", 1)[0]
    return {
        "engine": "core.sqlite_engine",
        "credentials": {
            "file_path": path,
            # WAL lets readers work while a worker writes; busy_timeout lets
            # several worker processes share one file (see core.sqlite_engine).
            "journal_mode": "WAL",
            "busy_timeout": 10000,
            # FULL: a commit is on disk before the stream entry it stores is acknowledged
            # and deleted; under NORMAL a power loss could lose a row whose entry is gone.
            "synchronous": "FULL",
        },
    }


def tortoise_config(database_url: str) -> dict[str, Any]:
    connection: Any = database_url
    if dialect_of(database_url) == "sqlite":
        connection = _sqlite_connection(database_url)
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def available_migrations(dialect: str) -> list[MigrationFile]:
    found: list[MigrationFile] = []
    for entry in resources.files("core.migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m and m.group(3) == dialect:
            found.append(MigrationFile(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda f: f.version)
    return found


def _split_statements(sql: str) -> list[str]:
    # Statements end at a semicolon closing a line; table comments may hold ";".
    statements = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", sql):
        lines = [ln for ln in chunk.splitlines() if not ln.strip().startswith("--")]
        stmt = "\n".join(lines).strip()
        if stmt:
            statements.append(stmt)
    return statements


async def _ensure_migrations_table(conn: BaseDBAsyncClient) -> None:
    await conn.execute_script(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version INTEGER PRIMARY KEY,"
        " name VARCHAR(200) NOT NULL,"
        " applied_at VARCHAR(40) NOT NULL)"
    )


async def applied_versions(conn: BaseDBAsyncClient) -> set[int]:
    await _ensure_migrations_table(conn)
    _, rows = await conn.execute_query(f"SELECT version FROM {MIGRATIONS_TABLE}")  # noqa: S608
    return {int(r["version"]) for r in rows}


async def pending_migrations(conn: BaseDBAsyncClient, dialect: str) -> list[MigrationFile]:
    done = await applied_versions(conn)
    return [m for m in available_migrations(dialect) if m.version not in done]


async def migrate(conn: BaseDBAsyncClient, dialect: str) -> list[MigrationFile]:
    """Apply pending migrations, each in its own transaction; return what ran."""
    from datetime import UTC, datetime

    from tortoise.transactions import in_transaction

    ran = []
    for mig in await pending_migrations(conn, dialect):
        async with in_transaction(conn.connection_name) as tx:
            for stmt in _split_statements(mig.sql):
                await tx.execute_script(stmt)
            placeholders = "$1, $2, $3" if dialect == "postgres" else "?, ?, ?"
            await tx.execute_query(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) "  # noqa: S608
                f"VALUES ({placeholders})",
                [mig.version, mig.name, datetime.now(UTC).isoformat()],
            )
        log.info("migration applied", extra={"version": mig.version, "migration": mig.name})
        ran.append(mig)
    return ran


async def init_db(settings: Settings) -> None:
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Tortoise caches insert statements per connection *name*; a process that
    # re-initialises against another dialect (tests do) must not reuse them.
    from tortoise.backends.base import executor as _executor

    _executor.EXECUTOR_CACHE.clear()
    # Global fallback: aiohttp runs handlers in tasks that do not inherit the
    # context the app was started in.
    await Tortoise.init(config=tortoise_config(settings.database_url), _enable_global_fallback=True)


async def close_db() -> None:
    await Tortoise.close_connections()


async def check_migrated(settings: Settings) -> None:
    conn = Tortoise.get_connection("default")
    pending = await pending_migrations(conn, dialect_of(settings.database_url))
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise SchemaNotMigrated(
            f"the database at SIYU_DATABASE_URL is not migrated (pending: {names}); "
            "run `siyu migrate` or start with `siyu serve --migrate`"
        )


@contextlib.asynccontextmanager
async def db_lifespan(settings: Settings, *, auto_migrate: bool = False) -> AsyncIterator[None]:
    await init_db(settings)
    try:
        if auto_migrate:
            await migrate(Tortoise.get_connection("default"), dialect_of(settings.database_url))
        await check_migrated(settings)
        yield
    finally:
        await close_db()
