"""Per-domain migrations: keyed by (domain, version); older databases upgrade in place."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from tortoise import Tortoise

from core import db as core_db
from core.settings import Settings
from siyu.domains import DOMAINS
from tests.conftest import SCHEMA


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, database_url=url)


async def _columns(conn: object, dialect: str, table: str) -> set[str]:
    if dialect == "sqlite":
        _, rows = await conn.execute_query(f'PRAGMA table_info("{table}")')  # type: ignore[attr-defined]
        return {r["name"] for r in rows}
    _, rows = await conn.execute_query(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", [table]
    )
    return {r["column_name"] for r in rows}


@pytest.mark.parametrize("domain", [d.name for d in DOMAINS if d.model_modules])
async def test_each_domains_models_match_its_migrated_tables(
    domain: str, fresh_database_url: str, tmp_path: Path
) -> None:
    """Every model column of the domain exists after migrating, on each dialect."""
    d = next(x for x in DOMAINS if x.name == domain)
    s = _settings(tmp_path, fresh_database_url)
    dialect = core_db.dialect_of(fresh_database_url)
    await core_db.init_db(s, SCHEMA)
    try:
        conn = Tortoise.get_connection("default")
        await core_db.migrate(conn, SCHEMA, dialect)
        models = [m for m in Tortoise.apps["models"].values() if m.__module__ in d.model_modules]
        assert models, f"{domain} declares model modules but no model was loaded"
        for model in models:
            table = model._meta.db_table
            have = await _columns(conn, dialect, table)
            want = set(model._meta.fields_db_projection.values())
            assert want <= have, (table, want - have)
    finally:
        await core_db.close_db()


def _legacy_statements(dialect: str) -> list[str]:
    # What `siyu migrate` did before migrations were per domain: one global
    # table, version 1 = today's bot/migrations/0001_initial.
    sql = resources.files("bot.migrations").joinpath(f"0001_initial.{dialect}.sql").read_text()
    return core_db._split_statements(sql)


async def test_database_migrated_before_domains_keeps_its_rows(
    fresh_database_url: str, tmp_path: Path
) -> None:
    s = _settings(tmp_path, fresh_database_url)
    dialect = core_db.dialect_of(fresh_database_url)
    ph = "$1, $2, $3" if dialect == "postgres" else "?, ?, ?"
    now = datetime.now(UTC).isoformat()
    await core_db.init_db(s, SCHEMA)
    try:
        conn = Tortoise.get_connection("default")
        await conn.execute_script(
            "CREATE TABLE siyu_schema_migrations (version INTEGER PRIMARY KEY,"
            " name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL)"
        )
        for stmt in _legacy_statements(dialect):
            await conn.execute_script(stmt)
        await conn.execute_query(
            f"INSERT INTO siyu_schema_migrations (version, name, applied_at) VALUES ({ph})",
            [1, "initial", now],
        )
        await conn.execute_query(
            'INSERT INTO "bot_outbox" (created_at, updated_at, idem_key, api, secret_kind,'
            " payload, state, attempts, next_attempt_at, last_error) VALUES "
            + (
                "($1, $1, $2, 'message/send', 'app', '{}', 'done', 1, $1, '')"
                if dialect == "postgres"
                else "(?, ?, ?, 'message/send', 'app', '{}', 'done', 1, ?, '')"
            ),
            [datetime.now(UTC), "notify:old"]
            if dialect == "postgres"
            else [now, now, "notify:old", now],
        )

        ran = await core_db.migrate(conn, SCHEMA, dialect)
        # 0001 is not applied again (it would fail on the existing tables); 0002 and
        # every later migration of the edge are.
        later = [
            (m.domain, m.version, m.name)
            for m in core_db.available_migrations(SCHEMA, dialect)
            if m.domain == "bot" and m.version > 1
        ]
        assert later[0] == ("bot", 2, "outbox_origin")
        # (Other domains' first migrations run too: their tables are new.)
        assert [(m.domain, m.version) for m in ran if m.domain == "bot"] == [
            (d, v) for d, v, _ in later
        ]
        _, rows = await conn.execute_query(
            "SELECT domain, version, name FROM siyu_migrations WHERE domain = 'bot' "
            "ORDER BY version"
        )
        assert [(r["domain"], r["version"], r["name"]) for r in rows] == [
            ("bot", 1, "initial"),
            *later,
        ]
        assert "origin" in await _columns(conn, dialect, "bot_outbox")
        _, kept = await conn.execute_query("SELECT idem_key, state, origin FROM bot_outbox")
        assert [(r["idem_key"], r["state"], r["origin"]) for r in kept] == [
            ("notify:old", "done", "")
        ]
        assert not await core_db._table_exists(conn, dialect, "siyu_schema_migrations")
        assert await core_db.migrate(conn, SCHEMA, dialect) == []
    finally:
        await core_db.close_db()


async def test_two_domains_may_both_have_a_0001(tmp_path: Path) -> None:
    schema = core_db.Schema(
        model_modules=SCHEMA.model_modules,
        migrations=(*SCHEMA.migrations, ("stub", "tests.stubdomain.migrations")),
    )
    found = [(m.domain, m.version) for m in core_db.available_migrations(schema, "sqlite")]
    assert ("bot", 1) in found and ("stub", 1) in found
    # Applied in the root's order: every bot migration before the stub's.
    assert found.index(("stub", 1)) > max(i for i, f in enumerate(found) if f[0] == "bot")
