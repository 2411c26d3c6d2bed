"""The duplicate pre-check is answered from the (source, msgid) unique index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from bot import models
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
        # SET LOCAL and EXPLAIN on one connection: the pool may hand each call another.
        async with in_transaction() as tx:
            await tx.execute_script("SET LOCAL enable_seqscan = off")
            _, rows = await tx.execute_query(f"EXPLAIN {sql}")
        plan = " ".join(str(next(iter(r.values()))) for r in rows)
        # With a sequential scan ruled out, a plan filtering on msgid alone would still
        # need a full index scan; on the pair it is an index condition on both columns.
        assert "Index" in plan and "source" in plan and "msgid" in plan, plan
        assert "Seq Scan" not in plan, plan


async def test_precheck_finds_only_pairs(settings: Settings, db: None) -> None:
    assert await bot_service.stored_message_keys(keys=[("archive", "x")]) == set()


async def test_the_precheck_of_several_sources_is_one_statement_on_the_index(
    settings: Settings, db: None
) -> None:
    """A read of callbacks and archive records is pre-checked in one statement, each
    source's branch answered from the unique index like the one-source query."""
    async with in_transaction() as conn:
        for source, msgid in [("archive", "a1"), ("callback", "c1"), ("archive", "c1")]:
            await models.Message.create(
                using_db=conn,
                msgid=msgid,
                source=source,
                direction="member_to_app",
                sender_id="lina",
                sender_role="member",
                msgtime=datetime.now(UTC),
                msgtype="text",
                action="send",
            )
    keys = [("archive", "a1"), ("archive", "a2"), ("callback", "c1"), ("callback", "a1")]
    assert await bot_service.stored_message_keys(keys=keys) == {
        ("archive", "a1"),
        ("callback", "c1"),
    }
    conn = Tortoise.get_connection("default")
    postgres = core_db.dialect_of(settings.database_url) == "postgres"
    sql, params = bot_service.stored_message_sql(
        {"archive": ["m1", "m2"], "callback": ["m3"]}, postgres=postgres
    )
    if not postgres:
        _, rows = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(r[-1]) for r in rows)
        assert plan.count("USING COVERING INDEX") + plan.count("USING INDEX") >= 2, plan
        assert "SCAN bot_message" not in plan, plan
    else:
        async with in_transaction() as tx:
            await tx.execute_script("SET LOCAL enable_seqscan = off")
            _, rows = await tx.execute_query(f"EXPLAIN {sql}", params)
        plan = " ".join(str(next(iter(r.values()))) for r in rows)
        assert plan.count("Index") >= 2 and "Seq Scan" not in plan, plan


async def test_the_written_out_conversation_query_finds_what_the_orm_query_finds(
    settings: Settings, db: None
) -> None:
    """``conversation_turns`` runs written-out SQL; the ORM query beside it (whose plan
    bench/precheck_plan.py prints) must find the same turns in the same order."""
    now = datetime.now(UTC).replace(microsecond=0)
    async with in_transaction() as conn:
        advisors = await bot_service.ensure_advisors(conn=conn, userids=["lina", "wang"])
        customers = await bot_service.ensure_customers(
            conn=conn, external_userids=["wmA", "wmB", "wmC"]
        )
        rows = [
            # (msgid, advisor, customer, roomid, minutes ago, masked text)
            ("1", "lina", "wmA", None, 30, "本金能拿回来吧？"),
            ("2", "lina", "wmA", None, 20, "是的"),
            ("3", "lina", "wmB", None, 10, "明天到账"),
            ("4", "wang", "wmA", None, 5, "别的顾问"),  # a pair not asked for
            ("5", "lina", "wmA", None, 60 * 25, "昨天之前"),  # outside the window
            ("6", "lina", "wmA", None, 1, ""),  # no text
            ("7", "lina", None, "room1", 15, "群里的话"),
            ("8", "lina", "wmC", "room2", 15, "别的群"),
            ("9", "lina", "wmA", None, 0, "正在判的这条"),  # at `until`: not before it
        ]
        for msgid, advisor, customer, roomid, ago, text in rows:
            await models.Message.create(
                using_db=conn,
                msgid=msgid,
                source="archive",
                direction="group" if roomid else "advisor_to_customer",
                sender_id=advisor,
                sender_role="advisor",
                roomid=roomid,
                msgtime=now - timedelta(minutes=ago),
                msgtype="text",
                action="send",
                masked_text=text,
                advisor_id=advisors[advisor],
                customer_id=customers[customer].id if customer else None,
            )
    ask = {
        "rooms": {"room1"},
        "pairs": {("lina", "wmA"), ("lina", "wmB"), ("wang", "wmB")},
        "since": now - timedelta(hours=24),
        "until": now,
    }
    turns = await bot_service.conversation_turns(**ask)  # type: ignore[arg-type]
    orm = await bot_service.conversation_turns_query(**ask)  # type: ignore[arg-type]
    expected = [
        (r["roomid"], r["advisor__userid"], r["customer__external_userid"], r["masked_text"])
        for r in orm
        if r["roomid"] or (r["advisor__userid"], r["customer__external_userid"]) in ask["pairs"]
    ]
    assert [(t.roomid, t.advisor_userid, t.external_userid, t.masked_text) for t in turns] == (
        expected
    )
    assert [t.masked_text for t in turns] == ["本金能拿回来吧？", "是的", "群里的话", "明天到账"]
    assert [t.msgtime for t in turns] == [
        r["msgtime"] for r in orm if r["masked_text"] in {t.masked_text for t in turns}
    ]
    assert all(t.msgtime.tzinfo is not None for t in turns)


async def test_the_conversation_read_starts_from_the_customers_on_sqlite(
    settings: Settings, db: None
) -> None:
    """A one-to-one chat's lines are reached from its customer by the (customer_id,
    msgtime) index: the OR over the joined tables walked every one-to-one line of the
    window by (roomid, msgtime), a cost that grew with the lines stored that day."""
    if core_db.dialect_of(settings.database_url) != "sqlite":
        pytest.skip("the SQLite statement's plan")
    at = datetime.now(UTC)
    sql, params = bot_service.conversation_turns_sql(
        rooms={"room1"},
        pairs={("lina", "wmA"), ("wang", "wmB")},
        since=at - timedelta(days=1),
        until=at,
        postgres=False,
    )
    conn = Tortoise.get_connection("default")
    _, rows = await conn.execute_query(f"EXPLAIN QUERY PLAN {sql}", params)
    plan = [str(r[-1]) for r in rows]
    searches = [step for step in plan if step.startswith(("SEARCH m ", "SCAN m"))]
    assert searches == [
        "SEARCH m USING INDEX idx_bot_message_roomid_msgtime "
        "(roomid=? AND msgtime>? AND msgtime<?)",
        "SEARCH m USING INDEX idx_bot_message_customer_msgtime "
        "(customer_id=? AND msgtime>? AND msgtime<?)",
    ], plan


def test_the_reads_of_a_batch_are_one_statement_text_whatever_its_length_on_postgresql() -> None:
    """On PostgreSQL the pre-check and the conversation read bind a read's keys as one
    array each: the text does not change with the read's length, so asyncpg prepares
    each statement once per connection (an IN list of each new length was parsed and
    planned again, and pushed older statements out of the driver's cache)."""
    one, _ = bot_service.stored_message_sql({"archive": ["a"]}, postgres=True)
    three, params = bot_service.stored_message_sql({"archive": ["a", "b", "c"]}, postgres=True)
    assert one == three and params == ["archive", ["a", "b", "c"]]
    at = datetime.now(UTC)
    ask = {"rooms": {"r1"}, "since": at - timedelta(days=1), "until": at, "postgres": True}
    turns_one, _ = bot_service.conversation_turns_sql(pairs={("lina", "wmA")}, **ask)  # type: ignore[arg-type]
    turns_three, _ = bot_service.conversation_turns_sql(
        pairs={("lina", "wmA"), ("wang", "wmB"), ("lina", "wmC")},
        **ask,  # type: ignore[arg-type]
    )
    assert turns_one == turns_three
