"""Two dispatchers on one database and a slow WeCom: every row is sent exactly once.

The dispatchers are two ``OutboxDispatcher``s with clients of their own (as two
``siyu serve --role scheduler`` processes would be), sharing the database of the
``db`` fixture (SQLite and PostgreSQL).  Wall time is frozen with time-machine and
moved by the test; WeCom's slow answers are held at the fake server by a gate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
import time_machine

from bot import models, outbox
from bot.outbox import OutboxPolicies, Settled
from core.settings import OutboxSettings
from tests.bot.outbox_fakes import FakeCorp, enqueue, now, start_fake_corp

LEASE_S = OutboxSettings().lease_s


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
async def corp(db: None, redis_client: aioredis.Redis) -> AsyncIterator[FakeCorp]:
    fake, close = await start_fake_corp(redis_client)
    try:
        yield fake
    finally:
        await close()


def mass_send(corp: FakeCorp, text: str) -> outbox.Write:
    return outbox.add_msg_template(
        sender="zhangwei", text=text, external_userid=[corp.customer_of("zhangwei")]
    )


def app_text(text: str) -> outbox.Write:
    return outbox.app_text(agent_id=1000002, touser="zhangwei", content=text)


async def row(item_id: int) -> models.OutboxItem:
    return await models.OutboxItem.get(id=item_id)


async def test_a_late_claim_in_a_long_round_is_not_taken_by_a_second_dispatcher(
    corp: FakeCorp, clock: time_machine.Traveller
) -> None:
    # Two mass sends due; the first answer is slow, longer than a whole lease.
    first = await enqueue("m1", mass_send(corp, "第一条"), not_before=now() - timedelta(seconds=2))
    second = await enqueue("m2", mass_send(corp, "第二条"), not_before=now() - timedelta(seconds=1))
    corp.gate.held |= {"第一条", "第二条"}
    a, b = corp.dispatcher(), corp.dispatcher()

    round_a = asyncio.create_task(a.dispatch_due())
    assert await corp.gate.arrived.get() == "第一条"
    clock.shift(LEASE_S + 1)
    corp.gate.release("第一条")
    assert await corp.gate.arrived.get() == "第二条"  # claimed late in A's round
    # B looks now: the second row's lease runs from when A claimed it, not from A's round.
    assert await b.dispatch_due() == 0
    corp.gate.release("第二条")
    assert await round_a == 2

    assert corp.mass_sends_with("第一条") == 1
    assert corp.mass_sends_with("第二条") == 1
    assert {(await row(first)).state, (await row(second)).state} == {"done"}


async def test_a_finish_that_no_longer_owns_its_row_changes_nothing(
    corp: FakeCorp, clock: time_machine.Traveller, caplog: pytest.LogCaptureFixture
) -> None:
    settled: list[Settled] = []

    async def on_settled(s: Settled, conn: object) -> None:
        settled.append(s)

    policies = OutboxPolicies(settled=(("test", on_settled),))
    item_id = await enqueue("a1", app_text("提醒一"))
    corp.gate.held.add("提醒一")
    a, b = corp.dispatcher(policies=policies), corp.dispatcher(policies=policies)

    round_a = asyncio.create_task(a.dispatch_due())
    assert await corp.gate.arrived.get() == "提醒一"
    clock.shift(LEASE_S + 1)  # A's lease ran out (a stalled process renews nothing)
    # An app message is safe to repeat (WeCom's duplicate check): B takes the row over.
    assert await b.dispatch_due() == 1
    taken = await row(item_id)
    assert taken.state == "done" and taken.attempts == 2
    with caplog.at_level(logging.WARNING, logger="bot.jobs"):
        corp.gate.release("提醒一")
        await round_a
    after = await row(item_id)
    assert after.result == taken.result  # A's late answer did not overwrite B's
    assert after.updated_at == taken.updated_at
    assert [s.outcome for s in settled] == ["sent"]  # the callback ran once, for B
    assert any(r.getMessage() == "outbox finish lost its claim" for r in caplog.records)
    assert len(corp.state.delivered_app_messages("zhangwei")) == 1


async def test_a_mass_send_in_doubt_is_never_sent_again_by_another_dispatcher(
    corp: FakeCorp, clock: time_machine.Traveller
) -> None:
    item_id = await enqueue("m3", mass_send(corp, "第三条"))
    corp.gate.held.add("第三条")
    a, b = corp.dispatcher(), corp.dispatcher()

    round_a = asyncio.create_task(a.dispatch_due())
    assert await corp.gate.arrived.get() == "第三条"
    clock.shift(LEASE_S + 1)
    # A's request has left and A may be dead: a second add_msg_template would make a
    # second task for the advisor, so B marks the row for an operator instead.
    assert await b.dispatch_due() == 0
    assert (await row(item_id)).state == "unknown"
    clock.shift(LEASE_S + 1)
    assert await b.dispatch_due() == 0
    assert corp.gate.seen["第三条"] == 1  # A's request alone, still on its way
    # A was only slow: its answer settles the row (nobody else claimed it).
    corp.gate.release("第三条")
    await round_a
    done = await row(item_id)
    assert done.state == "done" and done.result["msgid"].startswith("msg")
    assert corp.mass_sends_with("第三条") == 1


@pytest.mark.parametrize(
    ("make", "count", "state"),
    [
        (lambda corp, text: mass_send(corp, text), FakeCorp.mass_sends_with, "unknown"),
        (lambda corp, text: app_text(text), FakeCorp.app_messages_with, "pending"),
    ],
    ids=["add_msg_template", "message_send"],
)
async def test_an_answer_lost_after_the_request_left(
    corp: FakeCorp, clock: time_machine.Traveller, make: object, count: object, state: str
) -> None:
    item_id = await enqueue("lost", make(corp, "丢失的回答"))  # type: ignore[operator]
    corp.gate.lose_answer.add("丢失的回答")
    d = corp.dispatcher()
    await d.dispatch_due()
    item = await row(item_id)
    assert item.state == state and item.last_errcode == -100
    assert count(corp, "丢失的回答") == 1  # type: ignore[operator]
    clock.shift(3600)
    await d.dispatch_due()
    if state == "unknown":
        # Not idempotent: waits for an operator, never resent blindly.
        assert count(corp, "丢失的回答") == 1  # type: ignore[operator]
        assert (await row(item_id)).state == "unknown"


async def test_two_dispatchers_draining_together_send_each_row_once(corp: FakeCorp) -> None:
    texts = [f"批量{i}" for i in range(12)]
    for i, text in enumerate(texts):
        await enqueue(f"b{i}", mass_send(corp, text))
    a, b = corp.dispatcher(), corp.dispatcher()
    sent = await asyncio.gather(a.dispatch_due(), b.dispatch_due())
    assert sum(sent) == len(texts)
    assert [corp.mass_sends_with(t) for t in texts] == [1] * len(texts)
    assert set(await models.OutboxItem.all().values_list("state", flat=True)) == {"done"}


class SteppedSleep:
    """The lease keeper's sleep, stepped by the test: each step is one renewal."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[float] = asyncio.Queue()
        self.steps: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.waiting.put_nowait(seconds)
        await self.steps.get()

    async def step(self) -> None:
        self.steps.put_nowait(None)
        await self.waiting.get()  # the keeper renewed and went back to sleep


async def test_a_call_slower_than_the_lease_keeps_its_row_by_renewing(
    corp: FakeCorp, clock: time_machine.Traveller
) -> None:
    item_id = await enqueue("slow", app_text("续租"))
    corp.gate.held.add("续租")
    sleep = SteppedSleep()
    a, b = corp.dispatcher(lease_sleep=sleep), corp.dispatcher()

    round_a = asyncio.create_task(a.dispatch_due())
    assert await corp.gate.arrived.get() == "续租"
    assert await sleep.waiting.get() == LEASE_S / 3
    clock.shift(LEASE_S - 10)
    await sleep.step()
    clock.shift(20)  # past the first lease, within the renewed one
    assert await b.dispatch_due() == 0
    corp.gate.release("续租")
    assert await round_a == 1
    item = await row(item_id)
    assert item.state == "done" and item.attempts == 1
    assert corp.app_messages_with("续租") == 1


async def test_a_request_that_never_left_is_retried_even_when_not_idempotent(
    corp: FakeCorp,
) -> None:
    from tests.bot.procs import free_port

    item_id = await enqueue("refused", mass_send(corp, "未发出"))
    # The shared access token is in Redis already, so the write itself is refused:
    # nothing listens at that port, the request never leaves.
    await corp.client().list_external_contacts("zhangwei")  # the contact secret's token
    await corp.dispatcher(base_url=f"http://127.0.0.1:{free_port()}").dispatch_due()
    item = await row(item_id)
    assert item.state == "pending" and item.last_errcode == -100
    assert item.request_at is None
    await models.OutboxItem.filter(id=item_id).update(next_attempt_at=now())
    await corp.dispatcher().dispatch_due()
    assert (await row(item_id)).state == "done"
    assert corp.mass_sends_with("未发出") == 1


async def test_an_operator_retry_while_an_old_answer_is_on_its_way(
    corp: FakeCorp, clock: time_machine.Traveller
) -> None:
    from bot import service as bot_service

    item_id = await enqueue("m4", mass_send(corp, "第四条"))
    corp.gate.held.add("第四条")
    a = corp.dispatcher()
    round_a = asyncio.create_task(a.dispatch_due())
    assert await corp.gate.arrived.get() == "第四条"
    clock.shift(LEASE_S + 1)
    assert await corp.dispatcher().dispatch_due() == 0  # left in doubt
    # The operator checked WeCom, found nothing yet, and retries: the row is queued
    # with no claim, so A's late answer cannot settle (or resettle) it.
    assert await bot_service.retry_outbox(item_id=item_id)
    corp.gate.release("第四条")
    await round_a
    item = await row(item_id)
    assert item.state == "pending" and item.claim is None and item.attempts == 0


async def test_a_discarded_row_tells_its_origin_once_and_others_are_not_rescanned(
    corp: FakeCorp,
) -> None:
    from bot import service as bot_service

    settled: list[Settled] = []

    async def on_settled(s: Settled, conn: object) -> None:
        settled.append(s)

    policies = OutboxPolicies(settled=(("sop.touch", on_settled),))
    told = await enqueue("d1", mass_send(corp, "撤回一"), origin="sop.touch:7")
    silent = await enqueue("d2", mass_send(corp, "撤回二"), origin="bot.alert:9")
    for item_id in (told, silent):
        assert await bot_service.discard_outbox(item_id=item_id, reason="discarded by test: x")
    d = corp.dispatcher(policies=policies)
    assert await d.tick() == 1
    assert [(s.id, s.outcome) for s in settled] == [(told, "cancelled")]
    # No callback for bot.alert: its flag is cleared, not picked up by every round.
    assert not (await row(silent)).notify_pending
    assert await d.tick() == 0 and len(settled) == 1
    assert corp.gate.seen["撤回一"] == corp.gate.seen["撤回二"] == 0
