"""The outbox dispatcher against the fake WeCom API: done, rescheduled, failed."""

from __future__ import annotations

from datetime import timedelta

from tortoise.transactions import in_transaction

from bot import models
from bot import service as bot_service
from bot.jobs import OutboxDispatcher
from bot.keys import METRICS, WECOM_CLIENT
from tests.bot.harness import Edge


def app_text(touser: str, content: str) -> dict:
    return {"touser": touser, "msgtype": "text", "agentid": 1000002, "text": {"content": content}}


async def enqueue(key: str, payload: dict, api: str = "message/send") -> None:
    async with in_transaction() as conn:
        await bot_service.enqueue_outbox(
            conn=conn, idem_key=key, api=api, payload=payload, origin="test"
        )


def dispatcher(edge: Edge) -> OutboxDispatcher:
    return OutboxDispatcher(
        client=edge.app[WECOM_CLIENT], settings=edge.settings.outbox, metrics=edge.app[METRICS]
    )


async def test_row_is_sent_once_and_marked_done(edge: Edge) -> None:
    await enqueue("k1", app_text("zhangwei", "【提醒】测试"))
    await enqueue("k1", app_text("zhangwei", "【提醒】测试"))  # same business key: ignored
    d = dispatcher(edge)
    assert await d.dispatch_due() == 1
    assert await d.dispatch_due() == 0
    item = await models.OutboxItem.get(idem_key="k1")
    assert item.state == "done" and item.attempts == 1 and item.result["errcode"] == 0
    delivered = edge.state.delivered_app_messages("zhangwei")
    assert [m.content["content"] for m in delivered] == ["【提醒】测试"]


async def test_rate_limited_row_waits_at_least_a_minute(edge: Edge) -> None:
    edge.state.inject("message/send", 45009)
    await enqueue("k2", app_text("zhangwei", "x"))
    before = bot_service.now()
    await dispatcher(edge).dispatch_due()
    item = await models.OutboxItem.get(idem_key="k2")
    assert item.state == "pending" and item.last_errcode == 45009
    assert item.next_attempt_at >= before + timedelta(seconds=60)
    assert await dispatcher(edge).dispatch_due() == 0  # not due yet


async def test_invalid_params_fail_for_an_operator_to_see(edge: Edge) -> None:
    await enqueue("k3", {"touser": "zhangwei", "agentid": 1000002})  # no msgtype/content
    await dispatcher(edge).dispatch_due()
    item = await models.OutboxItem.get(idem_key="k3")
    assert item.state == "failed" and item.last_errcode not in (None, 0)
    assert item.last_error


async def test_busy_is_retried_later_then_done(edge: Edge) -> None:
    edge.state.inject("message/send", -1, times=4)  # outlasts the client's own retries
    await enqueue("k4", app_text("wangfang", "y"))
    await dispatcher(edge).dispatch_due()
    item = await models.OutboxItem.get(idem_key="k4")
    assert item.state == "pending" and item.last_errcode == -1
    await models.OutboxItem.filter(id=item.id).update(next_attempt_at=bot_service.now())
    await dispatcher(edge).dispatch_due()
    item = await models.OutboxItem.get(idem_key="k4")
    assert item.state == "done" and item.attempts == 2


async def test_crashed_dispatcher_lease_is_taken_over(edge: Edge) -> None:
    await enqueue("k5", app_text("lina", "z"))
    item = await models.OutboxItem.get(idem_key="k5")
    now = bot_service.now()
    claimed = await bot_service.claim_outbox(item_id=item.id, at=now, lease=timedelta(seconds=5))
    assert claimed is not None
    # A second dispatcher cannot take a leased row ...
    assert (
        await bot_service.claim_outbox(item_id=item.id, at=now, lease=timedelta(seconds=5)) is None
    )
    # ... until the lease has run out (the first one died mid-call).
    later = now + timedelta(seconds=6)
    assert (
        await bot_service.claim_outbox(item_id=item.id, at=later, lease=timedelta(seconds=5))
        is not None
    )


async def test_alert_reaches_the_advisor_through_the_outbox(edge: Edge) -> None:
    from tests.bot.test_archive import a_relation, record

    userid, ext = a_relation(edge)
    await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=[record("o1", userid, ext, "把手机银行密码和验证码发我，我替您下单")],
    )
    await edge.process_all()
    await dispatcher(edge).dispatch_due()
    texts = [m.content["content"] for m in edge.state.delivered_app_messages(userid)]
    assert any("合规提醒" in t for t in texts)
