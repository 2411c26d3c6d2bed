"""Database lifecycle and schema migrations (SQLite and PostgreSQL).

Each domain owns its migrations: plain SQL files, one per dialect, in the
package its domain record names — ``NNNN_name.sqlite.sql`` and
``NNNN_name.postgres.sql`` (e.g. ``bot/migrations/0001_initial.sqlite.sql``).
They are applied in order, each in its own transaction, and recorded in one
table keyed by (domain, version), so two domains' ``0001`` never collide.  Plain
SQL keeps a bank's DBA able to read exactly what will run on their database.

Domains are applied in the root's order (``siyu.domains``): a domain's tables
may reference the tables of the domains before it, never after.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from core.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "siyu_migrations"
# Before migrations were per domain: (version, name, applied_at), every row the edge's.
LEGACY_MIGRATIONS_TABLE = "siyu_schema_migrations"
LEGACY_OWNER = "bot"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sqlite|postgres)\.sql$")


@dataclass(frozen=True)
class Schema:
    """The models and migration packages of the domains a process runs, in order."""

    model_modules: tuple[str, ...] = ()
    # (domain name, package holding its SQL files)
    migrations: tuple[tuple[str, str], ...] = ()


class SchemaNotMigrated(RuntimeError):
    """The database is behind the code; ``siyu migrate`` fixes it."""


@dataclass(frozen=True)
class MigrationFile:
    domain: str
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name} ({self.domain})"


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


async def keep_session(connection: Any) -> None:
    """The pool's reset of a connection given back: nothing sent to the server.

    asyncpg's default reset runs ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release — a round trip and four statements for each query run
    outside a transaction and each transaction, several per read the worker stores.  No
    code of siyu's leaves session state on a connection: no advisory lock, no LISTEN,
    no cursor outside a transaction, no ``SET`` that is not ``RESET`` before the
    connection goes back (``SET LOCAL`` ends with its transaction).  What the pool
    still does before calling this: roll back a transaction left open, drop listeners.
    Code that one day needs session state must reset it itself (or take a connection
    of its own).
    """


def _postgres_connection(database_url: str) -> dict[str, Any] | str:
    from tortoise.backends.base.config_generator import expand_db_url

    config: dict[str, Any] = expand_db_url(database_url)
    if config["engine"] != "tortoise.backends.asyncpg":
        return database_url
    config["credentials"]["reset"] = keep_session
    return config


def tortoise_config(database_url: str, model_modules: Sequence[str]) -> dict[str, Any]:
    connection: Any = database_url
    if dialect_of(database_url) == "sqlite":
        connection = _sqlite_connection(database_url)
    else:
        connection = _postgres_connection(database_url)
    return {
        "connections": {"default": connection},
        # One app for every domain's models, so relations cross domains freely.
        "apps": {"models": {"models": list(model_modules), "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


def available_migrations(schema: Schema, dialect: str) -> list[MigrationFile]:
    found: list[MigrationFile] = []
    for domain, package in schema.migrations:
        files: list[MigrationFile] = []
        for entry in resources.files(package).iterdir():
            m = _MIGRATION_RE.match(entry.name)
            if m and m.group(3) == dialect:
                files.append(
                    MigrationFile(domain, int(m.group(1)), m.group(2), entry.read_text("utf-8"))
                )
        files.sort(key=lambda f: f.version)
        versions = [f.version for f in files]
        if len(set(versions)) != len(versions):
            raise ValueError(f"{package}: two {dialect} migrations share a version number")
        found += files
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


async def _table_exists(conn: BaseDBAsyncClient, dialect: str, table: str) -> bool:
    if dialect == "sqlite":
        _, rows = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        )
    else:
        _, rows = await conn.execute_query("SELECT to_regclass($1) AS name", [table])
        rows = [r for r in rows if r["name"] is not None]
    return bool(rows)


async def _ensure_migrations_table(conn: BaseDBAsyncClient, dialect: str) -> None:
    """Create the (domain, version) table; adopt a database migrated before it existed.

    A database migrated when migrations were global keeps every applied version:
    those rows all belong to the edge, so they move over as ``bot``'s, in one
    transaction with dropping the old table (no migration runs twice, none is lost).
    """
    from tortoise.transactions import in_transaction

    await conn.execute_script(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " domain VARCHAR(64) NOT NULL,"
        " version INTEGER NOT NULL,"
        " name VARCHAR(200) NOT NULL,"
        " applied_at VARCHAR(40) NOT NULL,"
        " PRIMARY KEY (domain, version))"
    )
    if not await _table_exists(conn, dialect, LEGACY_MIGRATIONS_TABLE):
        return
    async with in_transaction(conn.connection_name) as tx:
        await tx.execute_query(
            f"INSERT INTO {MIGRATIONS_TABLE} (domain, version, name, applied_at) "  # noqa: S608 - a constant table name, values bound
            f"SELECT '{LEGACY_OWNER}', version, name, applied_at FROM {LEGACY_MIGRATIONS_TABLE} "
            f"WHERE version NOT IN (SELECT version FROM {MIGRATIONS_TABLE} "
            f"WHERE domain = '{LEGACY_OWNER}')"
        )
        await tx.execute_script(f"DROP TABLE {LEGACY_MIGRATIONS_TABLE}")
    log.info("migration records adopted", extra={"from_table": LEGACY_MIGRATIONS_TABLE})


async def applied_versions(conn: BaseDBAsyncClient, dialect: str) -> set[tuple[str, int]]:
    await _ensure_migrations_table(conn, dialect)
    _, rows = await conn.execute_query(
        f"SELECT domain, version FROM {MIGRATIONS_TABLE}"  # noqa: S608 - a constant table name, values bound
    )
    return {(str(r["domain"]), int(r["version"])) for r in rows}


async def pending_migrations(
    conn: BaseDBAsyncClient, schema: Schema, dialect: str
) -> list[MigrationFile]:
    done = await applied_versions(conn, dialect)
    return [m for m in available_migrations(schema, dialect) if (m.domain, m.version) not in done]


async def migrate(conn: BaseDBAsyncClient, schema: Schema, dialect: str) -> list[MigrationFile]:
    """Apply pending migrations, each in its own transaction; return what ran."""
    from datetime import UTC, datetime

    from tortoise.transactions import in_transaction

    ran = []
    for mig in await pending_migrations(conn, schema, dialect):
        async with in_transaction(conn.connection_name) as tx:
            for stmt in _split_statements(mig.sql):
                await tx.execute_script(stmt)
            placeholders = "$1, $2, $3, $4" if dialect == "postgres" else "?, ?, ?, ?"
            await tx.execute_query(
                f"INSERT INTO {MIGRATIONS_TABLE} (domain, version, name, applied_at) "  # noqa: S608 - a constant table name, values bound
                f"VALUES ({placeholders})",
                [mig.domain, mig.version, mig.name, datetime.now(UTC).isoformat()],
            )
        log.info(
            "migration applied",
            extra={"domain": mig.domain, "version": mig.version, "migration": mig.name},
        )
        ran.append(mig)
    return ran


async def init_db(settings: Settings, schema: Schema) -> None:
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Tortoise caches insert statements per connection *name*; a process that
    # re-initialises against another dialect (tests do) must not reuse them.
    from tortoise.backends.base import executor as _executor

    _executor.EXECUTOR_CACHE.clear()
    # Global fallback: aiohttp runs handlers in tasks that do not inherit the
    # context the app was started in.
    await Tortoise.init(
        config=tortoise_config(settings.database_url, schema.model_modules),
        _enable_global_fallback=True,
    )


async def close_db() -> None:
    await Tortoise.close_connections()


async def check_migrated(settings: Settings, schema: Schema) -> None:
    conn = Tortoise.get_connection("default")
    pending = await pending_migrations(conn, schema, dialect_of(settings.database_url))
    if pending:
        names = ", ".join(m.label for m in pending)
        raise SchemaNotMigrated(
            f"the database at SIYU_DATABASE_URL is not migrated (pending: {names}); "
            "run `siyu migrate` or start with `siyu serve --migrate`"
        )


@contextlib.asynccontextmanager
async def db_lifespan(
    settings: Settings, schema: Schema, *, auto_migrate: bool = False
) -> AsyncIterator[None]:
    await init_db(settings, schema)
    try:
        if auto_migrate:
            await migrate(
                Tortoise.get_connection("default"), schema, dialect_of(settings.database_url)
            )
        await check_migrated(settings, schema)
        yield
    finally:
        await close_db()
