"""bot_message carries the indexes its queries need and no more (migration 0014).

Every stored message writes each index of the table: a single-column index on roomid
(which (roomid, msgtime) answers as well) and one on sender_id (no query looks messages
up by sender alone) cost each insert and served nothing; intent is indexed only where a
message has one (customers' messages), and a query naming an intent still uses it —
checked with the value bound, as the application sends it, so the plan cannot lean on
a literal.
"""

from __future__ import annotations

from typing import Any

from tortoise import Tortoise

from core import db as core_db
from core.settings import Settings


async def _indexes(settings: Settings) -> dict[str, str]:
    conn = Tortoise.get_connection("default")
    if core_db.dialect_of(settings.database_url) == "sqlite":
        _, rows = await conn.execute_query(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'bot_message' AND sql IS NOT NULL"
        )
        return {str(r["name"]): str(r["sql"]) for r in rows}
    _, rows = await conn.execute_query(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'bot_message'"
    )
    return {str(r["indexname"]): str(r["indexdef"]) for r in rows}


def _columns(definition: str) -> str:
    """The column list of an index definition, unquoted: ``roomid, msgtime``."""
    on = definition.split(" ON ", 1)[1]
    cols = on[on.index("(") + 1 : on.index(")")]
    return ", ".join(c.strip().strip('"') for c in cols.split(","))


async def test_no_index_that_another_covers_or_nothing_reads(settings: Settings, db: None) -> None:
    indexes = await _indexes(settings)
    columns = {name: _columns(d) for name, d in indexes.items()}
    assert "roomid" not in columns.values(), indexes  # (roomid, msgtime) answers it
    assert "sender_id" not in columns.values(), indexes
    assert "roomid, msgtime" in columns.values() and "customer_id, msgtime" in columns.values()
    intent = [d for name, d in indexes.items() if columns[name] == "intent"]
    assert len(intent) == 1 and "IS NOT NULL" in intent[0].upper(), indexes


async def _plan(settings: Settings, sql: str, params: list[Any]) -> str:
    conn = Tortoise.get_connection("default")
    if core_db.dialect_of(settings.database_url) == "sqlite":
        _, rows = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(str(r[-1]) for r in rows)
    # A generic plan, as a prepared statement gets after its first runs: the value of
    # the parameter is unknown to the planner.
    values = ", ".join(f"'{p}'" for p in params)
    await conn.execute_script(
        f"SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; PREPARE q AS {sql}"
    )
    try:
        _, rows = await conn.execute_query(f"EXPLAIN EXECUTE q({values})")
    finally:
        await conn.execute_script("DEALLOCATE q; RESET plan_cache_mode; RESET enable_seqscan")
    return " | ".join(str(next(iter(r.values()))) for r in rows)


async def test_a_query_naming_an_intent_or_a_room_still_uses_an_index(
    settings: Settings, db: None
) -> None:
    sqlite = core_db.dialect_of(settings.database_url) == "sqlite"
    mark = (lambda i: "?") if sqlite else (lambda i: f"${i}")
    by_intent = await _plan(
        settings,
        f'SELECT "id" FROM "bot_message" WHERE "intent" = {mark(1)} AND "sender_role" = {mark(2)}',
        ["purchase_intent", "customer"],
    )
    in_room = await _plan(
        settings,
        f'SELECT "id" FROM "bot_message" WHERE "roomid" = {mark(1)} AND "sender_id" = {mark(2)}',
        ["wrROOM", "lina"],
    )
    if sqlite:
        assert "idx_bot_message_intent_set" in by_intent, by_intent
        assert "idx_bot_message_roomid_msgtime" in in_room, in_room
    else:
        assert "idx_bot_message_intent_set" in by_intent and "Seq Scan" not in by_intent
        assert "idx_bot_message_roomid_msgtime" in in_room and "Seq Scan" not in in_room
