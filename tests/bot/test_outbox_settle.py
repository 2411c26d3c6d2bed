"""A row's outcome and its on-settled callback: committed together, and never lost to a
callback that fails (the outcome then commits alone and the callback is retried)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from tortoise.backends.base.client import BaseDBAsyncClient

from bot import models, outbox
from bot.outbox import OutboxPolicies, Settled
from tests.bot.outbox_fakes import FakeCorp, enqueue, start_fake_corp


@pytest.fixture
async def corp(db: None, redis_client: aioredis.Redis) -> AsyncIterator[FakeCorp]:
    fake, close = await start_fake_corp(redis_client)
    try:
        yield fake
    finally:
        await close()


def app_text(text: str) -> outbox.Write:
    return outbox.app_text(agent_id=1000002, touser="zhangwei", content=text)


async def test_the_callback_sees_its_row_settled_in_the_same_transaction(corp: FakeCorp) -> None:
    seen: list[tuple[str, bool]] = []

    async def on_settled(s: Settled, conn: BaseDBAsyncClient) -> None:
        # Read through the callback's connection: the outcome is already written there.
        mine = await models.OutboxItem.filter(id=s.id).using_db(conn).first()
        assert mine is not None
        seen.append((mine.state, mine.notify_pending))

    item_id = await enqueue("s1", app_text("提醒一"))
    d = corp.dispatcher(policies=OutboxPolicies(settled=(("test", on_settled),)))
    assert await d.dispatch_due() == 1
    assert seen == [("done", False)]
    after = await models.OutboxItem.get(id=item_id)
    assert (after.state, after.notify_pending) == ("done", False)
    assert await d.notify_settled() == 0  # nothing owed


async def test_a_failing_callback_leaves_the_outcome_recorded_and_is_retried(
    corp: FakeCorp,
) -> None:
    calls: list[str] = []

    async def on_settled(s: Settled, conn: BaseDBAsyncClient) -> None:
        calls.append(s.outcome)
        if len(calls) <= 2:
            raise RuntimeError("the origin's tables are locked")

    item_id = await enqueue("s2", app_text("提醒二"))
    d = corp.dispatcher(policies=OutboxPolicies(settled=(("test", on_settled),)))
    assert await d.dispatch_due() == 1
    row = await models.OutboxItem.get(id=item_id)
    # Sent once and recorded as sent, the callback still owed (not lost with it): it
    # failed with the outcome (rolled back together) and again on its own.
    assert (row.state, row.notify_pending) == ("done", True)
    assert row.result and row.result.get("msgid")
    assert len(corp.state.delivered_app_messages("zhangwei")) == 1
    assert calls == ["sent", "sent"]
    assert await d.notify_settled() == 1
    final = await models.OutboxItem.get(id=item_id)
    assert (final.state, final.notify_pending) == ("done", False)
    assert calls == ["sent", "sent", "sent"]
    assert len(corp.state.delivered_app_messages("zhangwei")) == 1
