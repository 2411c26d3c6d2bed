"""SOP campaigns in a real browser (headless Chromium): marketing builds a maturity
reminder, the inline check flags a violating step and the submission is refused,
compliance approves the corrected version, marketing activates it, the results page
draws its funnel — at desktop width, and the list and results at 375 px.
Screenshots go to var/screenshots/ (sop-*.png)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot import models as bot_models
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
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.sop.seed import seed_customers

__all__ = ["browser"]

VIOLATING = (
    "{customer_name}您好，您的理财将于{maturity_date}到期。续作这款产品保本保收益，稳赚不赔。"
)
CLEAN = (
    "{customer_name}您好，您持有的{product_name}将于{maturity_date}到期，"
    "如需了解续作安排可随时联系我。"
)


async def _dates_in_the_next_weeks() -> None:
    today = datetime.now(UTC).date()
    for ext, days in (("wmSOP00000000000000001", 12), ("wmSOP00000000000000002", 20)):
        c = await bot_models.Customer.get(external_userid=ext)
        c.attributes = {**c.attributes, "maturity_date": (today + timedelta(days=days)).isoformat()}
        await c.save()


def _csp_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def test_build_check_approve_activate_and_results(console: Console, browser: Any) -> None:
    await seed_customers()
    await _dates_in_the_next_weeks()
    await make_operator("marketing", name="ops", display_name="运营小王")
    await make_operator("compliance", name="reviewer", display_name="合规老周")

    desk = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await desk.new_page()
    errors = _csp_errors(page)
    await sign_in(page, console, "ops")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=SOP 运营")
    await page.wait_for_url("**/campaigns")
    await page.click("#new-campaign")
    await page.wait_for_url("**/campaigns/new")

    # Entry: 7 days before the imported maturity date, everyone not unsubscribed.
    await page.fill("#name", "理财到期提醒")
    await page.select_option("#segment", "bank")
    await page.select_option("#trigger_kind", "attribute_date")
    assert await page.is_hidden("#trigger_tag")  # only the chosen trigger's fields show
    await page.select_option("#trigger_attribute", "maturity_date")
    await page.fill("#trigger_days_before", "7")
    await page.fill("#audience", 'NOT tag:"已退订"')
    await page.wait_for_selector("#audience-n")
    assert "3" in await page.inner_text("#audience-n")
    await page.select_option("#goal_intent", "purchase_intent")
    await page.check("input[name=exit_goal]")
    await page.fill("#product_code", "FP2025")
    await page.fill("#product_name", "稳享理财 365 天")
    await page.select_option("#product_risk_level", "R2")

    # Step 1: remind the advisor at 10:00 on entry — with a promise of principal and return.
    await page.select_option("#s1_delivery", "reminder")
    await page.fill("#s1_at_time", "10:00")
    await page.fill("#s1_text", VIOLATING)
    await page.click("#check-btn-1")
    flagged = page.locator("#check-1 [data-check-result=violation]")
    await flagged.wait_for()
    mark = page.locator("#check-1 mark.hl-violation").first
    assert await mark.inner_text() == "保本保收益"
    assert "资管新规" in await page.inner_text("#check-1") or "指导意见" in await page.inner_text(
        "#check-1"
    )

    # Step 2: the day before maturity, a mass-send link card, weekdays only.
    await page.click("#add-step")
    await page.wait_for_selector("#step-2")
    assert await page.input_value("#s1_text") == VIOLATING  # the form survived the re-render
    await page.fill("#s2_name", "到期前一天群发")
    await page.select_option("#s2_anchor", "entry")
    await page.fill("#s2_offset_days", "6")
    await page.fill("#s2_at_time", "10:00")
    await page.check("input[name=s2_skip_weekends]")
    await page.check("input[name=s2_skip_holidays]")
    await page.select_option("#s2_kind", "link")
    assert await page.is_visible("#s2_link_title") and await page.is_hidden("#s2_mp_appid")
    await page.fill("#s2_text", "{customer_name}您好，产品明天到期，资金将按合同约定划回。")
    await page.fill("#s2_link_title", "到期资金安排说明")
    await page.fill("#s2_link_url", "https://bank.example.com/maturity")
    await page.fill("#s2_link_desc", "到期资金将按合同约定划回您的账户。")
    # The calendar shows the two customers' touches in the coming weeks: the first step
    # on the entry day, the second six days later on a workday.
    async with page.expect_response("**/campaigns/builder/calendar"):
        await page.dispatch_event("#s2_link_desc", "change")
    await page.wait_for_function(
        "document.querySelector('#calendar-summary') &&"
        " document.querySelector('#calendar-summary').textContent.includes('共 4 次')"
    )
    busy = await page.eval_on_selector_all(
        "#calendar td[data-total]:not([data-total='0'])", "els => els.map(e => e.dataset.day)"
    )
    assert len(busy) == 4, busy
    await page.evaluate("window.scrollTo(0, 0)")  # the sticky bar back at the top
    await shot(page, "sop-builder-violation")

    # Saving and submitting: saved as a draft, the submission refused for the violation.
    await page.click("#save-submit")
    await page.wait_for_selector("#problems")
    problems = await page.inner_text("#problems")
    assert "第 1 步 · 正文：内容违规：「保本保收益」" in problems
    c = await Campaign.get(name="理财到期提醒")
    v = await CampaignVersion.get(campaign_id=c.id, version=1)
    assert (c.status, v.status) == (CampaignStatus.DRAFT, VersionStatus.DRAFT)
    assert await page.locator("#check-1 mark.hl-violation").count() >= 1
    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, "sop-submit-refused")

    # Corrected, saved and submitted.
    await page.fill("#s1_text", CLEAN)
    await page.click("#save-submit")
    await page.wait_for_url(f"**/campaigns/{c.id}?done=submitted")
    assert "待审批" in await page.inner_text("#campaign-status")
    await shot(page, "sop-campaign-submitted")

    # Compliance: the approval queue, the review view, approve with a comment.
    review = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    rpage = await review.new_page()
    errors += _csp_errors(rpage)
    await sign_in(rpage, console, "reviewer")
    await rpage.wait_for_url(console.url("/"))
    await rpage.click("nav >> text=SOP 审批")
    await rpage.click("#approval-table >> text=理财到期提醒")
    await rpage.wait_for_url(f"**/campaigns/{c.id}/review")
    assert "稳享理财" in await rpage.inner_text("main")
    await rpage.fill("#comment", "已核对到期提醒内容与链接，同意")
    await shot(rpage, "sop-review")
    await rpage.click("#approve")
    await rpage.wait_for_url(f"**/campaigns/{c.id}?done=approved")
    v = await CampaignVersion.get(campaign_id=c.id, version=1)
    assert v.status == VersionStatus.APPROVED and v.approval_comment.startswith("已核对")

    # Marketing activates it.
    await page.goto(console.url(f"/campaigns/{c.id}"))
    await page.click("#activate")
    await page.wait_for_url(f"**/campaigns/{c.id}?done=activated")
    assert "运行中" in await page.inner_text("#campaign-status")
    c = await Campaign.get(id=c.id)
    assert (c.status, c.current_version) == (CampaignStatus.ACTIVE, 1)
    await shot(page, "sop-campaign-active")

    # What the engine would have written: enrolments and touches in every state.
    steps = await CampaignStep.filter(version_id=v.id).order_by("position")
    now = datetime.now(UTC)
    plan = [
        ("wmSOP00000000000000001", TouchState.CONFIRMED, TouchState.SENT, None, True),
        ("wmSOP00000000000000002", TouchState.SENT, TouchState.PLANNED, None, False),
        ("wmSOP00000000000000004", TouchState.SKIPPED, TouchState.SKIPPED, "unsuitable", False),
    ]
    for ext, first, second, reason, replied in plan:
        e = await Enrolment.create(
            campaign_id=c.id,
            version_id=v.id,
            customer=ext,
            advisor="adv-li",
            entered_at=now - timedelta(days=2),
            trigger_ref="date:maturity_date",
            state=EnrolmentState.EXITED if replied else EnrolmentState.ACTIVE,
            exit_reason="replied" if replied else None,
            goal_reached_at=now if replied else None,
        )
        for step, state in zip(steps, (first, second), strict=True):
            sent = state in (TouchState.SENT, TouchState.CONFIRMED)
            await Touch.create(
                enrolment=e,
                step=step,
                version=v,
                campaign_id=c.id,
                customer=ext,
                advisor="adv-li",
                due_at=now - timedelta(days=1),
                state=state,
                reason=reason if state == TouchState.SKIPPED else None,
                reminded_at=now if sent else None,
                sent_at=now - timedelta(days=1) if sent else None,
                replied_at=now if replied and step.position == 1 else None,
            )
    await page.click("text=效果")
    await page.wait_for_url(f"**/campaigns/{c.id}/results")
    await page.wait_for_selector("#chart-funnel[data-drawn='1']")
    await page.wait_for_selector("#chart-steps[data-drawn='1']")
    table = await page.inner_text("#results-table")
    assert table.count("适当性不匹配 1") == 2  # one per step
    await shot(page, "sop-results")

    # A phone: the list and the results fit 375 px.
    phone = await browser.new_context(viewport={"width": 375, "height": 800}, locale="zh-CN")
    ppage = await phone.new_page()
    await sign_in(ppage, console, "ops")
    await ppage.wait_for_url(console.url("/"))
    for path, name in (
        ("/campaigns", "sop-list-375"),
        (f"/campaigns/{c.id}/results", "sop-results-375"),
    ):
        await ppage.goto(console.url(path))
        await no_horizontal_overflow(ppage)
        await shot(ppage, name)
    await page.goto(console.url("/campaigns"))
    await shot(page, "sop-list")
    assert not [e for e in errors if "Content Security Policy" in e], errors
