"""The duplicate pre-check is answered from the (source, msgid) unique index."""

from __future__ import annotations

from tortoise import Tortoise

from bot import service as bot_service
from core import db as core_db
from core.settings import Settings


async def test_precheck_plan_uses_the_unique_index(settings: Settings, db: None) -> None:
    conn = Tortoise.get_connection("default")
    sql = (
        bot_service.stored_message_query("archive", ["m1", "m2", "m3"])
        .values_list("source", "msgid")
        .sql(params_inline=True)
    )
    if core_db.dialect_of(settings.database_url) == "sqlite":
        _, rows = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}")
        plan = " ".join(str(r[-1]) for r in rows)
        assert "USING COVERING INDEX" in plan or "USING INDEX" in plan, plan
        assert "SCAN" not in plan, plan
    else:
        await conn.execute_script("SET enable_seqscan = off")
        _, rows = await conn.execute_query(f"EXPLAIN {sql}")
        plan = " ".join(str(next(iter(r.values()))) for r in rows)
        # With a sequential scan ruled out, a plan filtering on msgid alone would still
        # need a full index scan; on the pair it is an index condition on both columns.
        assert "Index" in plan and "source" in plan and "msgid" in plan, plan
        assert "Seq Scan" not in plan, plan


async def test_precheck_finds_only_pairs(settings: Settings, db: None) -> None:
    assert await bot_service.stored_message_keys(keys=[("archive", "x")]) == set()
