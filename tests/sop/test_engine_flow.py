"""The engine end to end against the sandbox: triggers, planning, the scheduler, the
outbox's re-check, WeCom's answers and limits — walking through days with time-machine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import time_machine
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from bot.jobs import OutboxDispatcher
from bot.keys import METRICS, OUTBOX_POLICIES, WECOM_CLIENT
from bot.models import RelationStatus
from sop.engine import runtime
from sop.engine.timing import SHANGHAI
from sop.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    CampaignVersion,
    Enrolment,
    Touch,
    VersionStatus,
)
from tests.bot.harness import Edge, xml


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SHANGHAI)


async def make_campaign(
    *,
    steps: Sequence[dict[str, Any]],
    trigger: dict[str, Any] | None = None,
    audience: str | None = None,
    exits: Sequence[dict[str, Any]] = (),
    goal: dict[str, Any] | None = None,
    product: dict[str, Any] | None = None,
    reentry: str = "never",
    name: str = "测试旅程",
) -> Campaign:
    """An active campaign with one approved, current version (as the builder leaves it)."""
    campaign = await Campaign.create(
        name=name, owner="operator:1", status=CampaignStatus.ACTIVE, current_version=1
    )
    version = await CampaignVersion.create(
        campaign=campaign,
        version=1,
        status=VersionStatus.ACTIVE,
        trigger=trigger,
        audience=audience,
        reentry=reentry,
        exit_conditions=list(exits),
        goal=goal,
        product=product,
    )
    for i, step in enumerate(steps, 1):
        await CampaignStep.create(version=version, position=i, **step)
    return campaign


def text(t: str, kind: str = "text") -> dict[str, Any]:
    return {"kind": kind, "text": t}


async def add_relation(userid: str, ext: str, *, name: str, attributes: dict[str, Any]) -> None:
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        await (
            bot_models.Customer.filter(id=customer.id)
            .using_db(conn)
            .update(name=name, attributes=attributes)
        )
        customer = await bot_models.Customer.get(id=customer.id).using_db(conn)
        advisor = await bot_service.upsert_advisor(conn=conn, userid=userid)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=datetime.now(UTC),
        )


def dispatcher(edge: Edge) -> OutboxDispatcher:
    return OutboxDispatcher(
        client=edge.app[WECOM_CLIENT],
        settings=edge.settings.outbox,
        metrics=edge.app[METRICS],
        policies=edge.app[OUTBOX_POLICIES],
    )


async def drain(edge: Edge) -> int:
    """Scheduler ticks and outbox rounds until neither has work (at the frozen now)."""
    sent = 0
    for _ in range(50):
        ticked = await runtime.current().tick()
        d = dispatcher(edge)
        n = await d.dispatch_due(limit=500)
        n += await d.notify_settled()
        sent += n
        if not ticked and not n:
            break
    return sent


def contact_event(change: str, userid: str, ext: str, **extra: Any) -> str:
    return xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "sys",
            "CreateTime": int(datetime.now(UTC).timestamp()),
            "MsgType": "event",
            "Event": "change_external_contact",
            "ChangeType": change,
            "UserID": userid,
            "ExternalUserID": ext,
            **extra,
        }
    )


# ---------------------------------------------------------------- welcome


async def test_new_contact_gets_the_welcome_within_the_window(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 10, 0), tick=False) as clock:
        await make_campaign(
            trigger={"kind": "customer_added", "state": "wealth_salon"},
            steps=[
                {
                    "delivery": "welcome",
                    "content": text(
                        "{customer_name}您好，我是{advisor_name}，感谢您添加我，有任何问题欢迎随时联系"
                    ),
                },
                {
                    "delivery": "reminder",
                    "offset_days": 1,
                    "at_time": "10:00",
                    "content": text("{customer_name}您好，近期市场有波动，如有疑问可以随时联系我"),
                },
            ],
        )
        userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
        code = edge.state.issue_welcome_code(userid=userid, external_userid=ext)
        other_userid, other_ext = [
            (u, e) for u, fs in edge.state.follows.items() for e in fs if e != ext
        ][0]
        other_code = edge.state.issue_welcome_code(userid=other_userid, external_userid=other_ext)
        await edge.post_callback(
            contact_event(
                "add_external_contact", userid, ext, State="wealth_salon", WelcomeCode=code
            )
        )
        # Another channel: not this campaign's.
        await edge.post_callback(
            contact_event(
                "add_external_contact",
                other_userid,
                other_ext,
                State="poster",
                WelcomeCode=other_code,
            )
        )
        clock.shift(3)
        await edge.process_all()
        clock.shift(3)
        await dispatcher(edge).dispatch_due()
        await dispatcher(edge).notify_settled()
        welcomes = edge.state.welcome_messages
        assert len(welcomes) == 1
        assert welcomes[0]["external_userid"] == ext
        assert welcomes[0]["sent_at"] - edge.state.welcome_codes[code].issued_at <= 20
        name = edge.state.contacts[ext].name
        assert welcomes[0]["text"].startswith(f"{name}您好，我是{edge.state.members[userid].name}")
        touches = await Touch.filter(customer=ext).order_by("due_at")
        assert [t.state for t in touches] == ["sent", "planned"]
        assert touches[1].due_at.astimezone(SHANGHAI) == sh(2026, 9, 16, 10)
        # The same callback redelivered enrols nobody twice.
        await edge.post_callback(
            contact_event(
                "add_external_contact", userid, ext, State="wealth_salon", WelcomeCode=code
            )
        )
        await edge.process_all()
        assert await Enrolment.filter(customer=ext).count() == 1
        assert len(edge.state.welcome_messages) == 1
        # The next day at 10:00 the advisor gets the follow-up reminder.
        clock.move_to(sh(2026, 9, 16, 10, 0, 5))
        await drain(edge)
        texts = [m.content["content"] for m in edge.state.delivered_app_messages(userid)]
        assert any(f"{name}您好，近期市场" in t and "/sidebar/?customer=" in t for t in texts)
        enrolment = await Enrolment.get(customer=ext)
        assert enrolment.state == "completed"


async def test_a_welcome_that_missed_its_twenty_seconds_is_skipped_not_sent(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 10, 0), tick=False) as clock:
        await make_campaign(
            trigger={"kind": "customer_added"},
            steps=[{"delivery": "welcome", "content": text("您好")}],
        )
        userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
        code = edge.state.issue_welcome_code(userid=userid, external_userid=ext)
        await edge.post_callback(
            contact_event("add_external_contact", userid, ext, WelcomeCode=code)
        )
        await edge.process_all()
        clock.shift(25)  # the dispatcher was down for longer than the code lives
        await dispatcher(edge).dispatch_due()
        await dispatcher(edge).notify_settled()
        assert edge.state.welcome_messages == []
        touch = await Touch.get(customer=ext)
        assert (touch.state, touch.reason) == ("skipped", "late")
        assert edge.state.calls["externalcontact/send_welcome_msg"] == 0


# ---------------------------------------------------------------- maturity digests


async def test_maturity_campaign_produces_digested_reminders(edge: Edge) -> None:
    from sop.engine import enrol

    with time_machine.travel(sh(2026, 9, 14, 8, 0), tick=False) as clock:
        await make_campaign(
            trigger={"kind": "attribute_date", "attribute": "maturity_date", "days_before": 7},
            steps=[
                {
                    "delivery": "reminder",
                    "at_time": "09:30",
                    "skip_weekends": True,
                    "skip_holidays": True,
                    "content": text(
                        "{customer_name}，您持有的理财产品将在7天后到期，如需了解续作安排请联系我"
                    ),
                }
            ],
        )
        for i in range(35):
            await add_relation(
                "zhangwei",
                f"wmMAT{i:05d}",
                name=f"客户{i:02d}",
                attributes={"maturity_date": "2026-09-21", "risk_level": "C3"},
            )
        # Matures on another day: not enrolled today.
        await add_relation(
            "zhangwei", "wmMATother", name="别人", attributes={"maturity_date": "2026-09-22"}
        )
        assert await enrol.run_date_triggers() == 35
        assert await enrol.run_date_triggers() == 0  # the daily job rerun: nobody twice
        assert await drain(edge) == 0  # due at 09:30, not before
        clock.move_to(sh(2026, 9, 14, 9, 30, 1))
        await drain(edge)
        delivered = edge.state.delivered_app_messages("zhangwei")
        assert edge.state.dropped_app_messages("zhangwei") == []
        # 35 touches, at most 15 a digest: three messages, not 35.
        assert len(delivered) == 3
        listed = "\n".join(m.content["content"] for m in delivered)
        assert all(f"客户{i:02d}" in listed for i in range(35))
        assert all(len(m.content["content"].encode()) <= 2048 for m in delivered)
        touches = await Touch.all()
        assert len(touches) == 35 and {t.state for t in touches} == {"sent"}
        assert all(t.reminded_at is not None for t in touches)


# ---------------------------------------------------------------- win-back


async def archive_line(edge: Edge, msgid: str, sender: str, to: str, line: str) -> None:
    record = {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(datetime.now(UTC).timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": line},
    }
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=[record])
    assert status == 200 and body["accepted"] == 1, body
    await edge.process_all()


async def test_redemption_intent_enrols_a_win_back_and_a_reply_exits_it(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 14, 0), tick=False) as clock:
        campaign = await make_campaign(
            name="赎回挽留",
            trigger={"kind": "intent", "intent": "redemption_intent"},
            exits=[{"kind": "replied"}],
            steps=[
                {
                    "delivery": "reminder",
                    "offset_minutes": 30,
                    "content": text("{customer_name}您好，近期市场有波动，如有疑问可以随时联系我"),
                },
                {
                    "delivery": "mass_send",
                    "anchor": "previous",
                    "offset_days": 2,
                    "at_time": "10:00",
                    "content": text(
                        "{customer_name}您好，感谢您一直以来的信任，有任何问题欢迎随时联系"
                    ),
                },
            ],
        )
        userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
        await add_relation(userid, ext, name=edge.state.contacts[ext].name, attributes={})
        await archive_line(edge, "wb1", ext, userid, "我想把那个理财赎回了，最近急用钱")
        enrolment = await Enrolment.get(campaign_id=campaign.id, customer=ext)
        assert enrolment.advisor == userid and enrolment.state == "active"
        touches = await Touch.filter(enrolment_id=enrolment.id).order_by("due_at")
        assert [t.due_at.astimezone(SHANGHAI) for t in touches] == [
            sh(2026, 9, 15, 14, 30),
            sh(2026, 9, 17, 10, 0),
        ]
        clock.move_to(sh(2026, 9, 15, 14, 31))
        await drain(edge)
        assert any(
            "近期市场有波动" in m.content["content"]
            for m in edge.state.delivered_app_messages(userid)
        )
        # The customer answers the next morning: the journey ends, the mass send never goes.
        clock.move_to(sh(2026, 9, 16, 9, 0))
        await archive_line(edge, "wb2", ext, userid, "好的，谢谢，我再考虑一下")
        enrolment = await Enrolment.get(id=enrolment.id)
        assert (enrolment.state, enrolment.exit_reason) == ("exited", "replied")
        clock.move_to(sh(2026, 9, 17, 10, 1))
        await drain(edge)
        touches = await Touch.filter(enrolment_id=enrolment.id).order_by("due_at")
        assert [(t.state, t.reason) for t in touches] == [
            ("sent", None),
            ("skipped", "exited:replied"),
        ]
        assert touches[0].replied_at is not None  # the reply counts for the reminder
        assert edge.state.calls["externalcontact/add_msg_template"] == 0


# ---------------------------------------------------------------- suitability


async def test_r4_product_is_skipped_for_a_c2_customer_with_the_reason(edge: Edge) -> None:
    from sop.engine import enrol, planner

    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            product={"code": "EQ001", "name": "成长精选", "risk_level": "R4"},
            steps=[
                {
                    "delivery": "mass_send",
                    "at_time": "10:00",
                    "content": text(
                        "{customer_name}您好，我们新推出一款理财产品，过往业绩不代表未来表现，如有兴趣可以了解"
                    ),
                }
            ],
        )
        exts = list(edge.state.follows["lina"])[:3]
        levels = {exts[0]: "C2", exts[1]: "C4", exts[2]: "C5"}
        for ext, level in levels.items():
            await add_relation(
                "lina", ext, name=edge.state.contacts[ext].name, attributes={"risk_level": level}
            )
        version = await CampaignVersion.get(campaign_id=campaign.id)
        plan = await planner.load_plan(await_conn(), version_id=version.id)
        assert await enrol.enrol_list(plan, customers=exts, ref="manual:operator:1") == 3
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)
        by_customer = {t.customer: t for t in await Touch.all()}
        assert (by_customer[exts[0]].state, by_customer[exts[0]].reason) == (
            "skipped",
            "unsuitable",
        )
        assert {by_customer[e].state for e in exts[1:]} == {"sent"}
        # One task for the two suitable customers (same text? names differ: one each).
        tasks = list(edge.state.mass_sends.values())
        sent_to = {r["external_userid"] for t in tasks for r in t.results}
        assert sent_to == set(exts[1:])


def await_conn():  # type: ignore[no-untyped-def]
    from sop.engine import store

    return store.conn()
