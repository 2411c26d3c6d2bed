"""Shared fixtures: real Redis (embedded unless SIYU_REDIS_URL/REDIS_URL is set)."""

from __future__ import annotations

import base64
import os
import secrets as _secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from core import redis as core_redis
from core.settings import Settings
from siyu.app import schema_of
from siyu.domains import DOMAINS


def _external_redis_url() -> str:
    return os.environ.get("SIYU_REDIS_URL") or os.environ.get("REDIS_URL") or ""


def _worker_database(url: str) -> str:
    """``url`` with a Redis database of this pytest-xdist worker's own.

    The tests flush their database; workers sharing an external server must not flush
    each other's keys, so worker ``gwN`` takes the URL's database number plus N.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme == "unix":  # unix:///path?db=N
        query["db"] = str(int(query.get("db", 0)) + int(worker[2:]))
        return f"unix://{parts.path}?{urlencode(query)}"
    base = int(parts.path.strip("/") or query.pop("db", 0))
    return urlunsplit(parts._replace(path=f"/{base + int(worker[2:])}", query=urlencode(query)))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = _external_redis_url()
    if url:
        yield _worker_database(url)
        return
    embedded = core_redis.start_embedded(Path(tmp_path_factory.mktemp("redis")))
    yield embedded.url
    embedded.shutdown()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = core_redis.client_for(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


# ---------------------------------------------------------------- settings & DB


# Every domain's models and migrations, as the root composes them.
SCHEMA = schema_of(DOMAINS)

PG_ADMIN_URL = os.environ.get("SIYU_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _pg_reachable() -> bool:
    import asyncio

    async def probe() -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(
                PG_ADMIN_URL.replace("postgres://", "postgresql://"), timeout=2
            )
        except Exception:  # noqa: BLE001 - any failure means "not reachable": skip PostgreSQL
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


# A test database's commits do not wait for the WAL to reach the disk: no test crashes
# the PostgreSQL server, so what a committed row is seen as by every other session and
# process is unchanged, and the tests stop queueing behind one fsync per commit (a parallel
# run's workers, each with its own database, share one disk).
NO_COMMIT_FLUSH = 'ALTER DATABASE "{name}" SET synchronous_commit = off'
# The databases fresh_database_url made in this session (pg_database drops them).
_FRESH_DATABASES: list[str] = []


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database for this test session, if a server is reachable."""
    import asyncio

    if os.environ.get("SIYU_TEST_NO_PG") or not _pg_reachable():
        yield None
        return
    name = f"siyu_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    asyncio.run(admin(NO_COMMIT_FLUSH.format(name=name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    # The fresh databases of the session's tests too: each DROP DATABASE waits for a
    # checkpoint, which costs little when the one before it has just written everything.
    for dropped in (*_FRESH_DATABASES, name):
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'siyu.sqlite3'}"
    if pg_database is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL must be reachable in CI")
        pytest.skip("PostgreSQL not reachable")
    return pg_database


# One field key for the whole test session, as one deployment has: tests share the
# session's PostgreSQL database, which records the keys its rows were sealed with and
# refuses a process started with another key under the same id (bot.flows).
_SESSION_FIELD_KEY = base64.b64encode(_secrets.token_bytes(32)).decode()


def make_settings(
    tmp_path: Path, *, database_url: str, redis_url: str, **overrides: object
) -> Settings:
    env = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "redis_url": redis_url,
        "wecom": {
            "corp_id": "wwtestcorp0000001",
            "token": _secrets.token_urlsafe(16),
            "encoding_aes_key": base64.b64encode(_secrets.token_bytes(32)).decode()[:43],
            "agent_id": 1000002,
            "app_secret": "",
        },
        "crypto": {
            "keys": {"t1": _SESSION_FIELD_KEY},
            "active_key_id": "t1",
        },
        "api": {"token": _secrets.token_urlsafe(24)},
        "pipeline": {"stream": f"siyu:test:{uuid.uuid4().hex[:8]}", "claim_idle_ms": 200},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(env.get(k), dict):
            env[k] = {**env[k], **v}  # type: ignore[dict-item]
        else:
            env[k] = v
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url, redis_url=redis_url)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[None]:
    """A migrated, empty database for one test."""
    from tortoise import Tortoise

    from core import db as core_db

    await core_db.init_db(settings, SCHEMA)
    conn = Tortoise.get_connection("default")
    await core_db.migrate(conn, SCHEMA, core_db.dialect_of(settings.database_url))
    if core_db.dialect_of(settings.database_url) == "postgres":
        _, rows = await conn.execute_query(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' "
            f"AND tablename <> '{core_db.MIGRATIONS_TABLE}'"
        )
        if rows:
            names = ", ".join(f'"{r["tablename"]}"' for r in rows)
            await conn.execute_script(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    yield
    await core_db.close_db()


@pytest.fixture
def redis_client_sync(redis_url: str) -> Iterator[None]:
    """Flush the shared test Redis for a synchronous (CLI) test."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None
) -> Iterator[str]:
    """An empty database of its own for one test (migration tests start from nothing)."""
    import asyncio

    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'fresh.sqlite3'}"
        return
    if pg_database is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL must be reachable in CI")
        pytest.skip("PostgreSQL not reachable")
    name = f"siyu_fresh_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    _FRESH_DATABASES.append(name)
    asyncio.run(admin(NO_COMMIT_FLUSH.format(name=name)))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        # Nothing stays connected to it; pg_database drops it at the end of the session.
        asyncio.run(
            admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        )


@pytest.fixture(scope="session")
def analyzer() -> object:
    """The real compliance_nlp analysis with the shipped model (tests.bot.conftest)."""
    from tests.bot.conftest import InThreadAnalyzer

    return InThreadAnalyzer()


@pytest.fixture
async def edge(
    settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[object]:
    """A running edge (tests.bot.harness) with every domain of the root."""
    # db: a migrated, emptied database (PostgreSQL is shared by the session).
    # redis_client: the shared test Redis, flushed for this test.
    from tests.bot.harness import start_edge

    e, closers = await start_edge(settings, analyzer=analyzer)
    try:
        yield e
    finally:
        for close in closers:
            await close()
