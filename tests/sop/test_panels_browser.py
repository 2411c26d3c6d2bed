"""SOP on other pages, in headless Chromium: the customer page's SOP 旅程 box (compliance
at 1280 px, the advisor at 375 px), the dashboard's campaign funnel with its CSV, the
approval view's diff against the running version, and the chat sidebar's touches due
for the customer (the text put in the checked send box and sent, a link card sent).
Screenshots: var/screenshots/sop-panel-*.png."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from admin.models import Operator
from bot import models as bot_models
from core.settings import Settings
from sop import campaigns
from sop.models import Campaign, EnrolmentState, TouchState
from tests.admin import review_seed
from tests.admin.console import Console, make_operator
from tests.admin.sidebar_support import ADVISOR, CUSTOMER, SidebarWorld, start_world
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.admin.test_sidebar_browser import WECOM_CLIENT_STUB, WECOM_UA, _verifier
from tests.sop.seed import OPS, maturity_spec
from tests.sop.test_panels import Rows, running_campaign
from tests.sop.test_review_diff import _edited

__all__ = ["browser"]


def _csp_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def test_customer_panel_dashboard_funnel_and_approval_diff(
    console: Console, browser: Any, analyzer: Any
) -> None:
    zhao = await review_seed.advisor("adv-zhao", "赵经理")
    zhou = await review_seed.customer("wmPanelB001", "周先生")
    await bot_models.FollowRelation.create(customer=zhou, advisor=zhao, status="active")
    c, v = await running_campaign(analyzer)
    rows = Rows(c, v)
    s1, s2 = await rows.steps()
    now = datetime.now(UTC)
    e = await rows.enrol("wmPanelB001", "adv-zhao", now - timedelta(days=1))
    await rows.touch(e, s1, now - timedelta(hours=20), TouchState.SENT, reminded_at=now)
    await rows.touch(e, s2, now + timedelta(days=5), TouchState.PLANNED)
    old = await rows.enrol(
        "wmPanelB001",
        "adv-zhao",
        now - timedelta(days=40),
        state=EnrolmentState.EXITED,
        exit_reason="replied",
        exited_at=now - timedelta(days=38),
    )
    await rows.touch(
        old, s1, now - timedelta(days=40), TouchState.SENT, reminded_at=now, replied_at=now
    )
    await rows.touch(old, s2, now - timedelta(days=34), TouchState.SKIPPED, reason="exited:replied")
    # More customers in the funnel, one of them skipped as unsuitable.
    for i, (first, second) in enumerate(
        [
            (TouchState.SENT, TouchState.CONFIRMED),
            (TouchState.SENT, TouchState.PLANNED),
            (TouchState.SKIPPED, TouchState.SKIPPED),
        ]
    ):
        other = await rows.enrol(f"wmPanelB10{i}", "adv-zhao", now - timedelta(days=2))
        for step, state in ((s1, first), (s2, second)):
            await rows.touch(
                other,
                step,
                now - timedelta(days=1),
                state,
                reminded_at=now if state != TouchState.SKIPPED else None,
                reason="unsuitable" if state == TouchState.SKIPPED else None,
            )
    # A second running campaign with a smaller funnel.
    c2, v2 = await running_campaign(analyzer, name="生日关怀")
    rows2 = Rows(c2, v2)
    b1, _ = await rows2.steps()
    birthday = await rows2.enrol("wmPanelB200", "adv-zhao", now - timedelta(days=3))
    await rows2.touch(birthday, b1, now - timedelta(days=1), TouchState.SENT, reminded_at=now)
    # The running campaign's next version waits for compliance.
    await campaigns.do_update_campaign(
        campaign_id=c.id, spec=_edited(), actor=OPS, analyzer=analyzer
    )
    await campaigns.do_submit(campaign_id=c.id, actor=OPS, analyzer=analyzer)

    await make_operator("compliance", name="hg-panels", display_name="合规老周")
    await make_operator("marketing", name="ops-panels", display_name="运营小王")
    adv = await make_operator("advisor", name="zhao-panels", display_name="赵经理")
    await Operator.filter(id=adv.id).update(wecom_userid="adv-zhao")

    # Compliance: the customer page's SOP box, then the approval view's diff.
    desk = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await desk.new_page()
    errors = _csp_errors(page)
    await sign_in(page, console, "hg-panels")
    await page.wait_for_url(console.url("/"))
    await page.goto(console.url(f"/customers/{zhou.id}"))
    box = page.locator("#panel-sop-journeys")
    await box.wait_for()
    text = await box.inner_text()
    assert "SOP 旅程" in text and text.count("到期提醒") == 2
    assert (
        "已提醒客户经理" in text and "已计划" in text and "原因：客户已退出旅程（客户回复）" in text
    )
    # Drawn with its stylesheet: the touches hang under their journey, not as bullets.
    style = await page.eval_on_selector(
        "ol.sop-touches", "el => getComputedStyle(el).listStyleType"
    )
    assert style == "none"
    await box.scroll_into_view_if_needed()
    await shot(page, "sop-panel-customer")

    await page.click("nav >> text=SOP 审批")
    await page.click("#approval-table >> text=到期提醒")
    await page.wait_for_url(f"**/campaigns/{c.id}/review")
    diff = page.locator("#review-diff")
    assert "与 v1（运行中）相比" in await diff.inner_text()
    assert await page.locator("#diff-step-1 del.diff-del").first.inner_text() == "可"
    assert await page.locator("#diff-step-1 ins.diff-ins").first.inner_text() == "，欢迎"
    assert await page.locator("#diff-step-3 .tag.ok").inner_text() == "新增"
    assert "前 5 天" in await page.inner_text("#diff-trigger")
    colours = await page.eval_on_selector(
        "#diff-step-1 del.diff-del", "el => getComputedStyle(el).textDecorationLine"
    )
    assert colours == "line-through"
    await shot(page, "sop-panel-review-diff")

    # Marketing: the dashboard's funnel of both running campaigns, and its CSV.
    ops_ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    ops = await ops_ctx.new_page()
    errors += _csp_errors(ops)
    await sign_in(ops, console, "ops-panels")
    await ops.wait_for_url(console.url("/"))
    await ops.goto(console.url("/dashboard?days=7"))
    await ops.wait_for_selector("#chart-sop-funnel[data-drawn='1']")
    card = ops.locator("section.dash-card", has=ops.locator("#chart-sop-funnel"))
    assert "SOP 活动转化漏斗" in await card.inner_text()
    # Full width: the funnels sit side by side across the grid.
    width = await ops.eval_on_selector(
        "#chart-sop-funnel", "el => el.getBoundingClientRect().width"
    )
    assert width > 900
    async with ops.expect_download() as download_info:
        await card.locator("text=下载 CSV").click()
    download = await download_info.value
    assert download.suggested_filename == "siyu-sop-funnel-7d.csv"
    body = open(await download.path(), encoding="utf-8-sig").read()  # noqa: ASYNC230 - a small local file
    assert body.splitlines()[0] == "阶段,到期提醒,生日关怀"
    assert body.splitlines()[1] == "入组客户,4,1"
    await card.scroll_into_view_if_needed()
    await shot(ops, "sop-panel-dashboard-funnel")

    # The advisor on a phone: their customer's journeys fit 375 px.
    phone = await browser.new_context(viewport={"width": 375, "height": 800}, locale="zh-CN")
    ppage = await phone.new_page()
    errors += _csp_errors(ppage)
    await sign_in(ppage, console, "zhao-panels")
    await ppage.wait_for_url(console.url("/"))
    await ppage.goto(console.url(f"/customers/{zhou.id}"))
    await ppage.wait_for_selector("#panel-sop-journeys")
    assert f'href="/campaigns/{c.id}"' not in await ppage.inner_html("#panel-sop-journeys")
    await no_horizontal_overflow(ppage)
    await ppage.locator("#panel-sop-journeys").scroll_into_view_if_needed()
    await shot(ppage, "sop-panel-customer-375")
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


async def test_the_sidebar_hands_a_due_touch_to_its_send_actions(
    world: SidebarWorld, browser: Any, analyzer: Any
) -> None:
    world.customer.attributes = {**world.customer.attributes, "maturity_date": "2026-12-13"}
    await world.customer.save()
    steps = maturity_spec().model_dump(mode="json")["steps"]
    steps[1]["delivery"] = "reminder"  # a link card for the advisor to send
    steps[1]["offset_days"] = 1
    c, v = await running_campaign(analyzer, steps=steps)
    rows = Rows(c, v)
    s1, s2 = await rows.steps()
    now = datetime.now(UTC)
    e = await rows.enrol(CUSTOMER, ADVISOR, now - timedelta(hours=2))
    reminder = await rows.touch(e, s1, now - timedelta(hours=1), TouchState.SENT, reminded_at=now)
    card = await rows.touch(e, s2, now + timedelta(days=1), TouchState.PLANNED)
    assert await Campaign.filter(id=c.id).count() == 1

    ctx = await browser.new_context(
        viewport={"width": 375, "height": 667},
        locale="zh-CN",
        user_agent=WECOM_UA,
        is_mobile=True,
        has_touch=True,
    )
    verified: list[dict[str, Any]] = []
    await ctx.expose_function("verifyAgentConfig", _verifier(world, verified))
    await ctx.add_init_script(WECOM_CLIENT_STUB)
    page = await ctx.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    world.sandbox.oauth_member = ADVISOR
    await page.goto(world.console.url("/sidebar/"))
    await page.wait_for_selector("#sb-who-card >> text=周大福")

    await page.click("#tab-customer")
    due = page.locator("#panel-sop-due")
    await due.wait_for()
    assert await page.locator(f"#sop-touch-{reminder.id}").count() == 1
    text = await page.inner_text(f"#sop-touch-{reminder.id} .sop-due-text")
    assert text == (
        "周大福您好，您持有的稳享理财 365 天将于2026-12-13到期，如需了解续作安排可随时联系我。"
    )
    await due.scroll_into_view_if_needed()
    await no_horizontal_overflow(page)
    await shot(page, "sop-panel-sidebar-due")

    # The text goes into the send box, is checked there, and sent with the sidebar's button.
    await page.click(f"#sop-touch-{reminder.id} >> text=填入并检查")
    await page.wait_for_selector("#pane-check:not([hidden])")
    assert await page.input_value("#sb-text") == text
    await page.wait_for_selector("#sb-status >> text=未发现合规问题")
    await page.click("#sb-send")
    await page.wait_for_selector("#sb-toast >> text=已发送")
    sent = await page.evaluate("window.__wecomClient.sent")
    assert sent[-1]["msgtype"] == "text" and sent[-1]["text"] == {"content": text}

    # The link card is sent as the WeCom client takes a news message.
    await page.click("#tab-customer")
    await page.click(f"#sop-touch-{card.id} >> text=发送链接卡片")
    await page.wait_for_function("window.__wecomClient.sent.length === 2")
    sent = await page.evaluate("window.__wecomClient.sent")
    assert sent[-1]["msgtype"] == "news"
    assert sent[-1]["news"]["link"] == "https://bank.example.com/maturity"
    assert sent[-1]["news"]["title"] == "到期资金安排说明"
    assert not refused, refused
