"""On PostgreSQL the worker's conversation read reaches a one-to-one chat from its customer.

One OR over the joined tables (``m.roomid = ANY(rooms) OR (m.roomid IS NULL AND
advisor AND customer)``) was answered by walking every one-to-one line of the day by the
(roomid, msgtime) index and joining each to its advisor and customer: every read of
every worker paid for all the lines stored that day (21 ms a read at 3,000 lines).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from bot import models
from bot import service as bot_service
from core import db as core_db
from core.settings import Settings


def _message_scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(how, index condition) of each read of bot_message: an index's name (an index scan,
    or the bitmap index scan under a bitmap heap scan), or the node type (Seq Scan)."""
    if node.get("Relation Name") == "bot_message":
        if "Index Name" in node:
            yield node["Index Name"], node.get("Index Cond", "")
        elif node["Node Type"] == "Bitmap Heap Scan":
            for child in node.get("Plans", ()):
                yield child.get("Index Name", child["Node Type"]), child.get("Index Cond", "")
        else:
            yield node["Node Type"], ""
        return
    for child in node.get("Plans", ()):
        yield from _message_scans(child)


async def test_a_one_to_one_chat_is_read_by_its_customer_not_by_the_days_lines(
    settings: Settings, db: None
) -> None:
    if core_db.dialect_of(settings.database_url) != "postgres":
        pytest.skip("the PostgreSQL statement's plan (SQLite's has its own test)")
    now = datetime.now(UTC).replace(microsecond=0)
    # A day of one-to-one lines with other customers, as a busy worker has stored
    # (20,000 lines of 500 customers: a table too big to read whole for two pairs).
    async with in_transaction() as conn:
        advisors = await bot_service.ensure_advisors(conn=conn, userids=["lina", "wang"])
        await bot_service.ensure_customers(
            conn=conn, external_userids=[f"wm{i:03d}" for i in range(500)]
        )
        await models.Message.create(
            using_db=conn,
            msgid="group",
            source="archive",
            direction="group",
            sender_id="lina",
            sender_role="advisor",
            roomid="room1",
            msgtime=now - timedelta(minutes=1),
            msgtype="text",
            action="send",
            masked_text="群里的话",
            advisor_id=advisors["lina"],
        )
        await conn.execute_query(
            'INSERT INTO "bot_message" ("created_at", "updated_at", "msgid", "source", '
            '"direction", "sender_id", "sender_role", "receiver_ids", "msgtime", "msgtype", '
            '"action", "masked_text", "has_violation", "advisor_id", "customer_id") '
            "SELECT now(), now(), 'm' || i, 'archive', 'advisor_to_customer', 'lina', "
            "'advisor', '[]', now() - make_interval(secs => i * 4), 'text', 'send', "
            "'第' || i || '句', false, $1, c.id "
            'FROM generate_series(1, 20000) AS i JOIN "bot_customer" c '
            """ON c."external_userid" = 'wm' || lpad((i % 500)::text, 3, '0')""",
            [advisors["lina"]],
        )
    conn = Tortoise.get_connection("default")
    # Statistics as autovacuum gathers them: the plan is the planner's choice on what the
    # table holds, not on what an earlier test's rows left in pg_statistic.
    await conn.execute_script('ANALYZE "bot_message", "bot_customer", "bot_advisor"')
    sql, params = bot_service.conversation_turns_sql(
        rooms={"room1"},
        pairs={("lina", "wm001"), ("wang", "wm002")},
        since=now - timedelta(hours=24),
        until=now,
        postgres=True,
    )
    _, rows = await conn.execute_query(f"EXPLAIN (FORMAT JSON) {sql}", params)
    plan = next(iter(rows[0].values()))
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans = list(_message_scans(plan[0]["Plan"]))
    by_index = dict(scans)
    # The room's lines by its room, the pairs' lines by their customer: no scan of the
    # day's one-to-one lines (roomid IS NULL over the window), no sequential scan.
    assert set(by_index) == {
        "idx_bot_message_roomid_msgtime",
        "idx_bot_message_customer_msgtime",
    }, scans
    assert "IS NULL" not in by_index["idx_bot_message_roomid_msgtime"], scans
    assert "customer_id" in by_index["idx_bot_message_customer_msgtime"], scans
