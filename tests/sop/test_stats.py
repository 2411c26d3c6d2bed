"""Results per campaign, version and step, from enrolment and touch rows (GROUP BY),
on SQLite and PostgreSQL: counts by state and reason, the 3-day reply window, the funnel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sop import campaigns, stats
from sop.models import CampaignStep, Enrolment, EnrolmentState, Touch, TouchState
from tests.sop.seed import OPS, maturity_spec, seed_customers

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


async def test_figures_per_version_and_step(db: None, analyzer: Any) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(spec=maturity_spec(), actor=OPS, analyzer=analyzer)
    c, v1 = saved.campaign, saved.version
    s1, s2 = await CampaignStep.filter(version_id=v1.id).order_by("position")

    async def enrol(ext: str, **kw: Any) -> Enrolment:
        return await Enrolment.create(
            campaign_id=c.id, version_id=v1.id, customer=ext, advisor="adv", entered_at=T0, **kw
        )

    async def touch(e: Enrolment, step: CampaignStep, state: TouchState, **kw: Any) -> None:
        await Touch.create(
            enrolment=e,
            step=step,
            version=v1,
            campaign_id=c.id,
            customer=e.customer,
            advisor="adv",
            due_at=T0,
            state=state,
            **kw,
        )

    a = await enrol("wmA", state=EnrolmentState.EXITED, exit_reason="goal", goal_reached_at=T0)
    b = await enrol("wmB", state=EnrolmentState.EXITED, exit_reason="opted_out")
    d = await enrol("wmD")
    # a: reminded and sent, replied after 2 days (counts); then confirmed mass-send.
    await touch(
        a, s1, TouchState.SENT, reminded_at=T0, sent_at=T0, replied_at=T0 + timedelta(days=2)
    )
    await touch(a, s2, TouchState.CONFIRMED, sent_at=T0, confirmed_at=T0)
    # b: sent, replied after 4 days (outside the window); step 2 skipped: opted out.
    await touch(
        b, s1, TouchState.SENT, reminded_at=T0, sent_at=T0, replied_at=T0 + timedelta(days=4)
    )
    await touch(b, s2, TouchState.SKIPPED, reason="opted_out")
    # d: step 1 skipped as unsuitable, step 2 failed with WeCom's errcode, nothing sent.
    await touch(d, s1, TouchState.SKIPPED, reason="unsuitable")
    await touch(d, s2, TouchState.FAILED, reason="wecom:41048")

    result = await stats.campaign_stats(c)
    (v,) = result.versions
    assert (v.enrolled, v.active, v.goal_reached, v.opted_out) == (3, 1, 1, 1)
    assert v.exited == {"goal": 1, "opted_out": 1}
    one, two = v.steps
    assert (one.planned, one.reminded, one.sent, one.confirmed, one.replied) == (3, 2, 2, 0, 1)
    assert one.skipped == {"unsuitable": 1}
    assert (two.planned, two.sent, two.confirmed) == (3, 1, 1)
    assert two.skipped == {"opted_out": 1} and two.failed == {"wecom:41048": 1}
    t = result.totals()
    assert (t["planned"], t["sent"], t["replied_within_3d"]) == (6, 3, 1)
    funnel = {k: n for k, _, n in result.funnel()}
    assert funnel == {
        "enrolled": 3,
        "planned": 3,
        "reminded": 2,
        "sent": 2,
        "confirmed": 1,
        "replied_within_3d": 1,
        "goal_reached": 1,
    }
    csv_text = stats.to_csv(result)
    assert "1,1,提醒客户经理,reminder,3,0,2,2,0,1,1,0,unsuitable=1," in csv_text
    assert stats.reason_label("wecom:41048") == "企业微信错误 41048"

    # The list's counts come from the same rows.
    counts = await stats.campaign_counts([c.id])
    assert counts[c.id] == {"enrolled": 3, "active": 1, "planned": 6, "sent": 3}
