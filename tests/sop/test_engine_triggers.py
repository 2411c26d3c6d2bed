"""Job-driven triggers (tags, audience snapshots), new versions, mass-send results."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import time_machine
from tortoise.transactions import in_transaction

from bot.keys import WECOM_CLIENT
from core.audit import Actor
from sop.engine import enrol, planner, results, store
from sop.models import CampaignStep, CampaignVersion, Enrolment, Touch
from tagging import flows
from tagging.models import TagSource
from tagging.schemas import GroupIn, TagIn
from tests.bot.harness import Edge
from tests.sop.test_engine_flow import add_relation, drain, make_campaign, sh, text

OPS = Actor("operator", "1", "运营")
CALM = "{customer_name}您好，近期市场有波动，如有疑问可以随时联系我"
THANKS = "您好，感谢您一直以来的信任，有任何问题欢迎随时联系"


async def tag(ext: str, name: str, tags: dict[str, Any], *, remove: bool = False) -> None:
    async with in_transaction() as conn:
        if remove:
            await flows.untag_customer(
                conn=conn,
                external_userid=ext,
                tag=tags[name],
                source=TagSource.MANUAL,
                actor_ref="operator:1",
                push=False,
            )
        else:
            await flows.tag_customer(
                conn=conn,
                external_userid=ext,
                tag=tags[name],
                source=TagSource.MANUAL,
                applied_by="operator:1",
                push=False,
            )


async def library(*names: str) -> dict[str, Any]:
    group = await flows.do_create_group(spec=GroupIn(name="画像"), actor=OPS)
    return {
        n: await flows.do_create_tag(spec=TagIn(group_id=group.id, name=n), actor=OPS)
        for n in names
    }


async def test_tag_added_enrols_and_goal_tag_exits(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        tags = await library("高净值", "已购买")
        campaign = await make_campaign(
            trigger={"kind": "tag_added", "tag": "高净值"},
            goal={"tag": "已购买"},
            exits=[{"kind": "goal"}],
            steps=[
                {
                    "delivery": "reminder",
                    "offset_days": 1,
                    "at_time": "10:00",
                    "content": text(CALM),
                },
            ],
        )
        await add_relation("zhaomin", "wmTAG1", name="钱多多", attributes={})
        await add_relation("zhaomin", "wmTAG2", name="李四", attributes={})
        await tag("wmTAG1", "高净值", tags)
        cursor = enrol.TagCursor()
        now = sh(2026, 9, 15, 9, 0)
        await enrol.run_tag_triggers(cursor, now=now)
        await enrol.run_tag_triggers(cursor, now=now + timedelta(minutes=5))  # rescans: idempotent
        enrolment = await Enrolment.get(campaign_id=campaign.id)
        assert (enrolment.customer, enrolment.advisor) == ("wmTAG1", "zhaomin")
        assert await Enrolment.all().count() == 1
        assert cursor.settled > 0
        # The goal tag arrives: goal reached, journey over, the touch never goes.
        clock.shift(3600)
        await tag("wmTAG1", "已购买", tags)
        await enrol.run_tag_triggers(cursor, now=sh(2026, 9, 15, 10, 0))
        enrolment = await Enrolment.get(id=enrolment.id)
        assert (enrolment.state, enrolment.exit_reason) == ("exited", "goal")
        assert enrolment.goal_reached_at is not None
        assert (await Touch.get(enrolment_id=enrolment.id)).reason == "exited:goal"


async def test_tag_removed_trigger(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False):
        tags = await library("关注养老")
        campaign = await make_campaign(
            trigger={"kind": "tag_removed", "tag": "关注养老"},
            steps=[{"delivery": "reminder", "content": text(CALM)}],
        )
        await add_relation("zhaomin", "wmTAG3", name="王五", attributes={})
        await tag("wmTAG3", "关注养老", tags)
        await tag("wmTAG3", "关注养老", tags, remove=True)
        await enrol.run_tag_triggers(enrol.TagCursor(), now=sh(2026, 9, 15, 9, 0))
        assert [e.customer for e in await Enrolment.filter(campaign_id=campaign.id)] == ["wmTAG3"]


async def test_audience_only_campaign_enrols_its_snapshot_once(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False):
        for i, level in enumerate(["C1", "C3", "C4", "C5"]):
            await add_relation(
                "lina", f"wmAUD{i}", name=f"客户{i}", attributes={"risk_level": level}
            )
        await make_campaign(
            audience="attr.risk_level >= C3",
            steps=[{"delivery": "reminder", "content": text(CALM)}],
        )
        done: set[int] = set()
        assert await enrol.run_audience_snapshots(done) == 3
        assert await enrol.run_audience_snapshots(done) == 0
        assert await enrol.run_audience_snapshots(set()) == 0  # a restarted process
        assert sorted(e.customer for e in await Enrolment.all()) == ["wmAUD1", "wmAUD2", "wmAUD3"]


async def test_a_new_version_takes_over_touches_not_yet_due(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {"delivery": "reminder", "at_time": "10:00", "content": text(CALM)},
                {
                    "delivery": "reminder",
                    "offset_days": 2,
                    "at_time": "10:00",
                    "content": text(CALM),
                },
                {
                    "delivery": "reminder",
                    "offset_days": 5,
                    "at_time": "10:00",
                    "content": text(CALM),
                },
            ],
        )
        await add_relation("chenjie", "wmVER1", name="客户", attributes={})
        v1 = await CampaignVersion.get(campaign_id=campaign.id)
        plan = await planner.load_plan(store.conn(), version_id=v1.id)
        await enrol.enrol_list(plan, customers=["wmVER1"], ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)  # step 1 goes under version 1
        # Version 2: step 2 moves to +3 days at 15:00, step 3 is dropped, a step 3' is new.
        v2 = await CampaignVersion.create(
            campaign=campaign, version=2, status="active", trigger={"kind": "manual"}
        )
        await CampaignStep.create(
            version=v2, position=1, delivery="reminder", at_time="10:00", content=text(CALM)
        )
        await CampaignStep.create(
            version=v2,
            position=2,
            delivery="reminder",
            offset_days=3,
            at_time="15:00",
            content=text(CALM),
        )
        await campaign.__class__.filter(id=campaign.id).update(current_version=2)
        async with in_transaction() as conn:
            await planner.adopt_version(conn, campaign_id=campaign.id, version_id=v2.id)
        touches = await Touch.all().order_by("id").prefetch_related("step")
        got = [(t.step.position, t.version_id, t.state, t.reason) for t in touches]  # type: ignore[attr-defined]
        assert got == [
            (1, v1.id, "sent", None),  # results stay with the version that sent it
            (2, v2.id, "planned", None),
            (3, v1.id, "skipped", "superseded"),
        ]
        assert touches[1].due_at.astimezone(sh(2026, 1, 1).tzinfo) == sh(2026, 9, 18, 15)


async def test_mass_send_results_are_read_back_and_laggards_nudged(edge: Edge) -> None:
    edge.state.auto_confirm_mass_send = False
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        exts = list(edge.state.follows["wangfang"])[:2]
        for ext in exts:
            await add_relation("wangfang", ext, name=edge.state.contacts[ext].name, attributes={})
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[{"delivery": "mass_send", "at_time": "10:00", "content": text(THANKS)}],
        )
        version = await CampaignVersion.get(campaign_id=campaign.id)
        plan = await planner.load_plan(store.conn(), version_id=version.id)
        await enrol.enrol_list(plan, customers=exts, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)
        (task,) = edge.state.mass_sends.values()
        assert {t.state for t in await Touch.all()} == {"sent"}
        assert {t.msgid for t in await Touch.all()} == {task.msgid}
        client = edge.app[WECOM_CLIENT]
        assert client is not None
        # Not confirmed yet: nothing changes; after remind_after, one nudge.
        await results.follow_up_mass_sends(client, remind_after=timedelta(hours=4))
        clock.shift(4 * 3600 + 60)
        await results.follow_up_mass_sends(client, remind_after=timedelta(hours=4))
        await results.follow_up_mass_sends(client, remind_after=timedelta(hours=4))
        await drain(edge)
        assert len(edge.state.groupmsg_reminders[task.msgid]) == 1
        # The advisor confirms; the next round reads the results back.
        edge.state.confirm_mass_send(task.msgid)
        assert await results.follow_up_mass_sends(client, remind_after=timedelta(hours=4)) == 2
        touches = await Touch.all()
        assert {t.state for t in touches} == {"confirmed"}
        assert all(t.confirmed_at is not None for t in touches)
        assert {e.state for e in await Enrolment.all()} == {"completed"}


async def test_a_year_without_holiday_data_is_planned_then_refused(edge: Edge) -> None:
    from sop.engine import holidays, runtime

    last = holidays.covered_years()[1]
    with time_machine.travel(sh(last, 12, 30, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {
                    "delivery": "reminder",
                    "offset_days": 5,
                    "at_time": "10:00",
                    "skip_holidays": True,
                    "content": text(CALM),
                }
            ],
        )
        await add_relation("chenjie", "wmCAL1", name="客户", attributes={})
        version = await CampaignVersion.get(campaign_id=campaign.id)
        plan = await planner.load_plan(store.conn(), version_id=version.id)
        await enrol.enrol_list(plan, customers=["wmCAL1"], ref="m:1")
        touch = await Touch.get(customer="wmCAL1")
        assert touch.reason == planner.CALENDAR_MISSING
        clock.move_to(sh(last + 1, 1, 4, 10, 0, 1))
        await runtime.current().tick()
        touch = await Touch.get(customer="wmCAL1")
        assert (touch.state, touch.reason) == ("skipped", "holiday_calendar")
