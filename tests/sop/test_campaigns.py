"""Campaigns as marketing saves them: field-level refusals, compliance at save and submit,
the approval state machine, versions, and the audit entry of every action."""

from __future__ import annotations

from typing import Any

import pytest

from core.models import AuditEntry
from sop import campaigns
from sop.campaigns import CampaignInvalid, NotAllowed, StateConflict
from sop.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    CampaignVersion,
    Enrolment,
    EnrolmentState,
    Touch,
    TouchState,
    VersionStatus,
)
from sop.schemas import CampaignIn
from tests.sop.seed import OPS, OPS2, REVIEWER, maturity_spec, seed_customers


def _with_step(index: int, **changes: Any) -> CampaignIn:
    spec = maturity_spec()
    raw = spec.model_dump(mode="json", exclude_none=True)
    step = raw["steps"][index]
    for key, value in changes.items():
        if key == "content":
            step["content"] = {**step["content"], **value}
        else:
            step[key] = value
    return CampaignIn.model_validate(raw)


async def _refused(spec: CampaignIn, analyzer: Any) -> list[tuple[str, str]]:
    with pytest.raises(CampaignInvalid) as info:
        await campaigns.do_create_campaign(spec=spec, actor=OPS, analyzer=analyzer)
    assert await Campaign.all().count() == 0  # nothing half-saved
    return [(p.field, p.code) for p in info.value.problems]


async def test_a_valid_campaign_is_saved_as_a_draft_with_its_steps_and_audited(
    db: None, analyzer: Any
) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(spec=maturity_spec(), actor=OPS, analyzer=analyzer)
    c = await Campaign.get(id=saved.campaign.id)
    assert (c.status, c.current_version, c.latest_version) == (CampaignStatus.DRAFT, 0, 1)
    assert c.owner == "operator:7" and c.owner_name == "运营小王"
    v = await CampaignVersion.get(campaign_id=c.id, version=1)
    assert v.trigger == {"kind": "attribute_date", "attribute": "maturity_date", "days_before": 7}
    assert v.product == {"code": "FP2025", "name": "稳享理财 365 天", "risk_level": "R2"}
    steps = await CampaignStep.filter(version_id=v.id).order_by("position")
    assert [s.delivery.value for s in steps] == ["reminder", "mass_send"]
    assert steps[1].content["link"]["url"] == "https://bank.example.com/maturity"
    assert v.findings == []  # the content is clean
    # Three customers are not unsubscribed out of four: a sensible audience.
    assert saved.report.audience_count == 3 and saved.report.customers_total == 4
    entry = await AuditEntry.filter(action="sop.campaign.create").get()
    assert entry.target == f"campaign:{c.id}" and entry.actor_id == "7"


@pytest.mark.parametrize(
    ("index", "changes", "expected"),
    [
        (
            0,
            {"content": {"text": "您好 {customer_nmae}"}},
            ("steps[1].content.text", "unknown_variable"),
        ),
        (0, {"content": {"text": "好" * 1400}}, ("steps[1].content.text", "too_long")),
        # 1,300 CJK characters are 3,900 bytes: under 4,000 until {customer_name} may
        # expand to a 128-character name.
        (
            0,
            {"content": {"text": "好" * 1300 + "{customer_name}"}},
            ("steps[1].content.text", "too_long"),
        ),
        (
            1,
            {"content": {"link": {"title": "标" * 43, "url": "https://x.example.com"}}},
            ("steps[2].content.link.title", "too_long"),
        ),
        (
            1,
            {
                "content": {
                    "link": {"title": "t", "url": "https://x.example.com", "desc": "述" * 171}
                }
            },
            ("steps[2].content.link.desc", "too_long"),
        ),
        (
            1,
            {"content": {"link": {"title": "t", "url": "javascript:alert(1)"}}},
            ("steps[2].content.link.url", "invalid_url"),
        ),
        (
            0,
            {"content": {"text": "您好 {customer_name，到期请联系"}},
            ("steps[1].content.text", "stray_brace"),
        ),
        (
            0,
            {"content": {"text": "您好 {product_code}"}},
            ("steps[1].content.text", "unknown_variable"),
        ),
        (0, {"at_time": "22:30"}, ("steps[1].at_time", "impossible_timing")),
        (
            0,
            {"window_start": "21:00", "window_end": "08:00"},
            ("steps[1].window_end", "impossible_timing"),
        ),
        (0, {"at_time": "25:00"}, ("steps[1].at_time", "invalid_time")),
        (0, {"offset_days": -1}, ("steps[1].offset_days", "impossible_timing")),
        (0, {"delivery": "welcome"}, ("steps[1].delivery", "welcome_needs_add")),
    ],
)
async def test_bad_steps_are_refused_by_field(
    db: None, analyzer: Any, index: int, changes: dict[str, Any], expected: tuple[str, str]
) -> None:
    await seed_customers()
    problems = await _refused(_with_step(index, **changes), analyzer)
    assert expected in problems, problems


async def test_clock_times_are_stored_as_the_engine_reads_them(db: None, analyzer: Any) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(
        spec=_with_step(0, at_time="9:30", window_start="8:00"), actor=OPS, analyzer=analyzer
    )
    step = await CampaignStep.get(version_id=saved.version.id, position=1)
    assert (step.at_time, step.window_start, step.window_end) == ("09:30", "08:00", "21:00")


async def test_two_mass_sends_on_one_day_are_refused(db: None, analyzer: Any) -> None:
    await seed_customers()
    spec = _with_step(0, delivery="mass_send", at_time="09:00")
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["steps"][1].update(offset_days=0, at_time="15:00", skip_weekends=False, skip_holidays=False)
    problems = await _refused(CampaignIn.model_validate(raw), analyzer)
    assert ("steps[2].offset_days", "mass_send_same_day") in problems


async def test_a_step_always_before_the_previous_one_is_refused(db: None, analyzer: Any) -> None:
    await seed_customers()
    spec = _with_step(0, offset_days=8)
    problems = await _refused(spec, analyzer)
    assert ("steps[2].offset_days", "out_of_order") in problems


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"trigger": None, "audience": None}, ("trigger", "required")),
        ({"audience": 'tag:"高净值" AND ('}, ("audience", "invalid_expression")),
        ({"audience": 'tag:"没有这个标签"'}, ("audience", "invalid_expression")),
        ({"trigger": None, "audience": 'tag:"已购买"'}, ("audience", "audience_empty")),
        ({"trigger": None, "audience": 'NOT tag:"已购买"'}, ("audience", "audience_everyone")),
        ({"trigger": {"kind": "tag_added", "tag": "不存在"}}, ("trigger.tag", "unknown_tag")),
        (
            {"trigger": {"kind": "intent", "intent": "lottery"}},
            ("trigger.intent", "unknown_intent"),
        ),
        (
            {"trigger": {"kind": "intent", "intent": "purchase_intent", "tag": "高净值"}},
            ("trigger.tag", "unexpected"),
        ),
        (
            {"trigger": {"kind": "attribute_date", "attribute": "birthday"}},
            ("trigger.days_before", "required"),
        ),
        ({"goal": None}, ("exit_conditions[3]", "goal_missing")),
        ({"product": None}, ("steps[1].content.text", "variable_without_product")),
        ({"steps": []}, ("steps", "required")),
    ],
)
async def test_bad_campaigns_are_refused_by_field(
    db: None, analyzer: Any, overrides: dict[str, Any], expected: tuple[str, str]
) -> None:
    await seed_customers()
    raw = maturity_spec().model_dump(mode="json", exclude_none=True)
    raw.update(overrides)
    problems = await _refused(CampaignIn.model_validate(raw), analyzer)
    assert expected in problems, problems


async def test_personal_numbers_in_content_are_refused(db: None, analyzer: Any) -> None:
    await seed_customers()
    problems = await _refused(
        _with_step(0, content={"text": "有事请打我手机 13812345678"}), analyzer
    )
    assert ("steps[1].content.text", "personal_data") in problems


async def test_a_violation_is_saved_with_its_span_and_basis_but_blocks_submission(
    db: None, analyzer: Any
) -> None:
    await seed_customers()
    text = "{customer_name}您好，这款产品保本保收益，稳赚不赔。"
    saved = await campaigns.do_create_campaign(
        spec=_with_step(0, content={"text": text}), actor=OPS, analyzer=analyzer
    )
    found = [f for f in saved.findings if f["severity"] == "violation"]
    assert found and all(f["step"] == 1 and f["field"] == "text" for f in found)
    assert any(text[f["start"] : f["end"]] == "保本保收益" for f in found)
    assert all(f["basis"] for f in found)
    with pytest.raises(CampaignInvalid) as info:
        await campaigns.do_submit(campaign_id=saved.campaign.id, actor=OPS, analyzer=analyzer)
    assert info.value.code == "compliance_violation"
    assert info.value.problems[0].field == "steps[1].content.text"
    c = await Campaign.get(id=saved.campaign.id)
    v = await CampaignVersion.get(campaign_id=c.id, version=1)
    assert (c.status, v.status) == (CampaignStatus.DRAFT, VersionStatus.DRAFT)
    refused = await AuditEntry.filter(action="sop.campaign.submit").get()
    assert refused.result == "refused:compliance_violation"
    with pytest.raises(StateConflict):
        await campaigns.do_activate(campaign_id=c.id, actor=OPS)


async def test_review_findings_need_an_approvers_comment(db: None, analyzer: Any) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(
        spec=_with_step(0, content={"text": "到期前有疑问可以加微信详聊。"}),
        actor=OPS,
        analyzer=analyzer,
    )
    assert [f["severity"] for f in saved.findings] == ["review"]
    await campaigns.do_submit(campaign_id=saved.campaign.id, actor=OPS, analyzer=analyzer)
    with pytest.raises(CampaignInvalid) as info:
        await campaigns.do_approve(
            campaign_id=saved.campaign.id, version=None, comment="", actor=REVIEWER
        )
    assert info.value.field == "comment"
    v = await campaigns.do_approve(
        campaign_id=saved.campaign.id,
        version=1,
        comment="企业微信内沟通，可存档，同意",
        actor=REVIEWER,
    )
    assert (v.status, v.approved_by) == (VersionStatus.APPROVED, "operator:9")
    assert v.approval_comment == "企业微信内沟通，可存档，同意"


async def test_the_life_of_a_campaign_and_its_versions(db: None, analyzer: Any) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(spec=maturity_spec(), actor=OPS, analyzer=analyzer)
    cid = saved.campaign.id
    # Not approved: marketing cannot activate.
    with pytest.raises(StateConflict, match="合规批准"):
        await campaigns.do_activate(campaign_id=cid, actor=OPS)
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
    assert (await Campaign.get(id=cid)).status == CampaignStatus.PENDING_APPROVAL
    # Four eyes: the author does not approve their own version.
    with pytest.raises(NotAllowed):
        await campaigns.do_approve(campaign_id=cid, version=1, comment="ok", actor=OPS)
    # A rejection needs a reason and sends the campaign back to draft.
    with pytest.raises(CampaignInvalid):
        await campaigns.do_reject(campaign_id=cid, version=1, comment="  ", actor=REVIEWER)
    await campaigns.do_reject(campaign_id=cid, version=1, comment="请补充风险提示", actor=REVIEWER)
    assert (await Campaign.get(id=cid)).status == CampaignStatus.DRAFT
    await campaigns.do_update_campaign(
        campaign_id=cid,
        spec=maturity_spec(name="到期提醒（含风险提示）"),
        actor=OPS,
        analyzer=analyzer,
    )
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
    await campaigns.do_approve(campaign_id=cid, version=1, comment="", actor=REVIEWER)
    c = await campaigns.do_activate(campaign_id=cid, actor=OPS)
    assert (c.status, c.current_version) == (CampaignStatus.ACTIVE, 1)

    # Editing the running campaign writes version 2; version 1 keeps running.
    edited = await campaigns.do_update_campaign(
        campaign_id=cid,
        spec=_with_step(0, at_time="11:00"),
        actor=OPS2,
        analyzer=analyzer,
    )
    assert edited.new_version and edited.version.version == 2
    c = await Campaign.get(id=cid)
    assert (c.status, c.current_version, c.latest_version) == (CampaignStatus.ACTIVE, 1, 2)
    v1 = await CampaignVersion.get(campaign_id=cid, version=1)
    assert v1.status == VersionStatus.ACTIVE
    assert (await CampaignStep.get(version_id=v1.id, position=1)).at_time == "10:00"
    # A second edit of the draft edits version 2 in place.
    again = await campaigns.do_update_campaign(
        campaign_id=cid, spec=_with_step(0, at_time="11:30"), actor=OPS2, analyzer=analyzer
    )
    assert not again.new_version and again.version.version == 2
    await campaigns.do_submit(campaign_id=cid, actor=OPS2, analyzer=analyzer)
    assert (await Campaign.get(id=cid)).status == CampaignStatus.ACTIVE  # still running v1
    await campaigns.do_approve(campaign_id=cid, version=2, comment="", actor=REVIEWER)
    c = await campaigns.do_activate(campaign_id=cid, actor=OPS2)
    assert c.current_version == 2
    statuses = {v.version: v.status for v in await CampaignVersion.filter(campaign_id=cid)}
    assert statuses == {1: VersionStatus.SUPERSEDED, 2: VersionStatus.ACTIVE}

    c = await campaigns.do_pause(campaign_id=cid, actor=OPS)
    assert c.status == CampaignStatus.PAUSED and c.paused_at is not None
    with pytest.raises(StateConflict):
        await campaigns.do_pause(campaign_id=cid, actor=OPS)
    c = await campaigns.do_resume(campaign_id=cid, actor=OPS)
    assert c.status == CampaignStatus.ACTIVE and c.paused_at is None

    actions = [e.action for e in await AuditEntry.filter(target=f"campaign:{cid}").order_by("seq")]
    assert actions == [
        "sop.campaign.create",
        "sop.campaign.submit",
        "sop.campaign.reject",
        "sop.campaign.edit",
        "sop.campaign.submit",
        "sop.campaign.approve",
        "sop.campaign.activate",
        "sop.campaign.edit",
        "sop.campaign.edit",
        "sop.campaign.submit",
        "sop.campaign.approve",
        "sop.campaign.activate",
        "sop.campaign.pause",
        "sop.campaign.resume",
    ]


async def test_archiving_skips_what_was_planned_and_ends_enrolments(
    db: None, analyzer: Any
) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(spec=maturity_spec(), actor=OPS, analyzer=analyzer)
    cid = saved.campaign.id
    v = saved.version
    steps = await CampaignStep.filter(version_id=v.id).order_by("position")
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    e = await Enrolment.create(
        campaign_id=cid,
        version_id=v.id,
        customer="wmSOP00000000000000001",
        advisor="li",
        entered_at=now,
    )
    await Touch.create(
        enrolment=e,
        step=steps[0],
        version=v,
        campaign_id=cid,
        customer=e.customer,
        advisor="li",
        due_at=now,
        state=TouchState.SENT,
    )
    await Touch.create(
        enrolment=e,
        step=steps[1],
        version=v,
        campaign_id=cid,
        customer=e.customer,
        advisor="li",
        due_at=now,
        state=TouchState.PLANNED,
    )
    await campaigns.do_archive(campaign_id=cid, actor=OPS)
    states = sorted((t.state.value, t.reason) for t in await Touch.filter(campaign_id=cid))
    assert states == [("sent", None), ("skipped", "archived")]
    e = await Enrolment.get(id=e.id)
    assert (e.state, e.exit_reason) == (EnrolmentState.EXITED, "archived")
    with pytest.raises(StateConflict):
        await campaigns.do_update_campaign(
            campaign_id=cid, spec=maturity_spec(), actor=OPS, analyzer=analyzer
        )
    entry = await AuditEntry.filter(action="sop.campaign.archive").get()
    assert '"touches_skipped":1' in entry.detail
