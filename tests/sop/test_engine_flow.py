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
