"""Crash and rerun without duplicates, WeCom's limits never exceeded, pause, opt-out."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from bot import models as bot_models
from sop.engine import enrol, planner, runtime, store
from sop.models import Campaign, CampaignVersion, Enrolment, OptOut, Touch
from tests.bot.harness import Edge
from tests.sop.test_engine_flow import (
    add_relation,
    archive_line,
    dispatcher,
    drain,
    make_campaign,
    sh,
    text,
)

CALM = "{customer_name}您好，近期市场有波动，如有疑问可以随时联系我"


async def reminder_campaign(n: int, advisor: str = "zhangwei", **kw: Any) -> planner.VersionPlan:
    campaign = await make_campaign(
        trigger={"kind": "manual"},
        steps=[{"delivery": "reminder", "at_time": "10:00", "content": text(CALM)}],
        **kw,
    )
    for i in range(n):
        await add_relation(advisor, f"wmREL{campaign.id}x{i:04d}", name=f"客户{i}", attributes={})
    version = await CampaignVersion.get(campaign_id=campaign.id)
    return await planner.load_plan(store.conn(), version_id=version.id)


async def test_crash_and_rerun_produce_no_duplicate_touches_or_sends(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import outbox

    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        plan = await reminder_campaign(40)
        customers = [f"wmREL{plan.campaign_id}x{i:04d}" for i in range(40)]
        assert await enrol.enrol_list(plan, customers=customers, ref="manual:op:1") == 40
        # The same snapshot run again after a crash: nothing new.
        assert await enrol.enrol_list(plan, customers=customers, ref="manual:op:1") == 0
        assert await Touch.all().count() == 40
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        real = outbox.enqueue
        calls = {"n": 0}

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise ConnectionError("database gone mid-batch")
            return await real(*args, **kwargs)

        monkeypatch.setattr(outbox, "enqueue", flaky)
        with pytest.raises(ConnectionError):
            await runtime.current().tick()
        # The batch rolled back whole: no row half handed over.
        assert await bot_models.OutboxItem.filter(origin__startswith="sop.").count() == 0
        assert {t.state for t in await Touch.all()} == {"planned"}
        monkeypatch.setattr(outbox, "enqueue", real)
        # The settled callback fails once too (the dispatcher retries it).
        engine = runtime.current()
        real_settled = engine.on_settled
        failed = {"n": 0}

        async def settle_once_failing(settled: Any, conn: Any) -> None:
            if not failed["n"]:
                failed["n"] += 1
                raise RuntimeError("crash after WeCom answered")
            await real_settled(settled, conn)

        monkeypatch.setattr(engine, "on_settled", settle_once_failing)
        await drain(edge)
        await drain(edge)
        rows = await bot_models.OutboxItem.filter(origin__startswith="sop.")
        assert len(rows) == 3 and {r.state for r in rows} == {"done"}
        delivered = edge.state.delivered_app_messages("zhangwei")
        assert len(delivered) == 3
        touches = await Touch.all()
        assert len(touches) == 40 and {t.state for t in touches} == {"sent"}
        assert len({t.outbox_id for t in touches}) == 3


async def test_member_caps_are_never_exceeded_against_the_sandbox(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 59), tick=False) as clock:
        engine = runtime.current()
        engine.config = dataclasses.replace(engine.config, digest_max_items=1)
        plan = await reminder_campaign(50)
        customers = [f"wmREL{plan.campaign_id}x{i:04d}" for i in range(50)]
        await enrol.enrol_list(plan, customers=customers, ref="manual:op:1")
        start = sh(2026, 9, 15, 10, 0, 1)
        for minute in range(4):
            clock.move_to(start + timedelta(seconds=61 * minute))
            await drain(edge)
        sent = sorted(m.sent_at for m in edge.state.app_messages if m.touser == "zhangwei")
        assert edge.state.dropped_app_messages("zhangwei") == []
        assert len(sent) == 50
        cap = edge.settings.sop.member_minute_cap
        for i, t in enumerate(sent):
            in_minute = [s for s in sent[i:] if s < t + 60]
            assert len(in_minute) <= cap <= 30
        assert {t.state for t in await Touch.all()} == {"sent"}


async def test_one_mass_send_a_day_per_customer_across_campaigns(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        exts = list(edge.state.follows["wangfang"])[:2]
        plans = []
        for name in ("中秋问候", "国庆问候"):
            campaign = await make_campaign(
                name=name,
                trigger={"kind": "manual"},
                steps=[
                    {
                        "delivery": "mass_send",
                        "at_time": "10:00",
                        "content": text("您好，感谢您一直以来的信任，有任何问题欢迎随时联系"),
                    }
                ],
            )
            version = await CampaignVersion.get(campaign_id=campaign.id)
            plans.append(await planner.load_plan(store.conn(), version_id=version.id))
        for ext in exts:
            await add_relation("wangfang", ext, name=edge.state.contacts[ext].name, attributes={})
        for plan in plans:
            await enrol.enrol_list(plan, customers=exts, ref="manual:op:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)
        touches = await Touch.all().order_by("campaign_id", "customer")
        first, second = touches[:2], touches[2:]
        assert {t.state for t in first} == {"sent"}
        assert {(t.state, t.reason) for t in second} == {("skipped", "mass_send_allowance")}
        # One task for both customers (same text), and WeCom never had to refuse one.
        assert len(edge.state.mass_sends) == 1
        statuses = [r["status"] for t in edge.state.mass_sends.values() for r in t.results]
        assert statuses == [1, 1]


async def test_rate_limited_send_backs_off_and_goes_once(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        plan = await reminder_campaign(3, advisor="lina")
        await enrol.enrol_list(
            plan, customers=[f"wmREL{plan.campaign_id}x{i:04d}" for i in range(3)], ref="m:1"
        )
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        edge.state.inject("message/send", 45009)
        await drain(edge)
        assert edge.state.delivered_app_messages("lina") == []
        clock.shift(30)
        await drain(edge)
        assert edge.state.delivered_app_messages("lina") == []  # backs off ≥ 60 s
        clock.shift(40)
        await drain(edge)
        assert len(edge.state.delivered_app_messages("lina")) == 1
        assert {t.state for t in await Touch.all()} == {"sent"}


async def test_pausing_stops_touches_already_queued(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        plan = await reminder_campaign(5, advisor="chenjie")
        await enrol.enrol_list(
            plan, customers=[f"wmREL{plan.campaign_id}x{i:04d}" for i in range(5)], ref="m:1"
        )
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        assert await runtime.current().tick() == 5  # handed to the outbox ...
        await Campaign.filter(id=plan.campaign_id).update(status="paused")
        d = dispatcher(edge)
        await d.dispatch_due()
        await d.notify_settled()
        # ... and stopped before WeCom was called.
        assert edge.state.delivered_app_messages("chenjie") == []
        assert {t.state for t in await Touch.all()} == {"due"}
        assert await runtime.current().tick() == 0  # paused: nothing claimed
        await Campaign.filter(id=plan.campaign_id).update(status="active")
        clock.shift(60)
        await drain(edge)
        assert len(edge.state.delivered_app_messages("chenjie")) == 1
        assert {t.state for t in await Touch.all()} == {"sent"}


async def test_a_customers_tuiding_opts_out_of_every_journey(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
        await add_relation(userid, ext, name="客户", attributes={})
        plan = await reminder_campaign(0, advisor=userid)
        await enrol.enrol_list(plan, customers=[ext], ref="m:1")
        await archive_line(edge, "td1", ext, userid, "退订")
        assert (await OptOut.get(customer=ext)).source == "customer_reply"
        # An opt-out, not a redemption intent (the model reads 退 as one): no alert to
        # the advisor, no intent stored for triggers and rules.
        stored = await bot_models.Message.get(msgid="td1")
        assert stored.intent is None
        assert not await bot_models.Alert.filter(kind="redemption_intent").exists()
        # A redemption the customer does ask for still alerts.
        await archive_line(edge, "td2", ext, userid, "我想赎回")
        assert (await bot_models.Message.get(msgid="td2")).intent == "redemption_intent"
        assert await bot_models.Alert.filter(kind="redemption_intent").count() == 1
        enrolment = await Enrolment.get(customer=ext)
        assert (enrolment.state, enrolment.exit_reason) == ("exited", "opted_out")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)
        # The advisor hears of the redemption (td2), not of the 退订, and no SOP touch.
        texts = [m.content["content"] for m in edge.state.delivered_app_messages(userid)]
        assert not [t for t in texts if "SOP" in t]
        assert [t for t in texts if "赎回" in t and "我想赎回" in t]
        assert not [t for t in texts if "「退订」" in t]
        assert [(t.state, t.reason) for t in await Touch.all()] == [("skipped", "exited:opted_out")]
        # Opted out: not enrolled again by a later trigger.
        assert await enrol.enrol_list(plan, customers=[ext], ref="m:2") == 0


def test_opt_out_words() -> None:
    assert enrol.is_opt_out("退订") and enrol.is_opt_out(" TD ") and enrol.is_opt_out("退订。")
    assert not enrol.is_opt_out("退订的产品什么时候到账") and not enrol.is_opt_out("我想赎回")
