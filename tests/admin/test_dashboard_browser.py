"""The dashboard in a real browser (headless Chromium): every chart draws on its canvas
under the console's CSP, at desktop width and at 375 px.  Screenshots go to
var/screenshots/ (dashboard.png, dashboard-375.png)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from admin import dashboard, dashboard_pages
from admin.dashboard_models import DashDaily
from bot import models
from core.appkit import KEYRING
from tests.admin import review_seed as seed
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in

__all__ = ["browser"]  # the fixture, shared with the console walk

CATEGORIES = ("guaranteed_return", "misleading_promotion", "off_book_dealing", "insider_tip")
INTENTS = ("product_inquiry", "purchase_intent", "redemption_intent", "complaint", "chitchat")
ADVISORS = ("adv-zhao", "adv-sun", "adv-li", "adv-zhou", "adv-wu")


NAMES = ("赵经理", "孙经理", "李经理", "周经理", "吴经理")
TEAMS = ("财富管理一部", "财富管理二部", "个人金融部")


async def _seed(keyring: Any) -> None:
    """30 days of plausible counters (fixed seed), a few alerts and open cases."""
    rng = random.Random(15)
    today = dashboard.today_in_shanghai()
    rows: list[DashDaily] = []
    for back in range(30):
        day = (today - timedelta(days=back)).isoformat()
        messages = rng.randint(300, 900)
        rows.append(DashDaily(day=day, metric="messages", dim="", n=messages))
        rows.append(DashDaily(day=day, metric="customers", dim="", n=messages // 6))
        for c in CATEGORIES:
            if n := rng.randint(0, 4):
                rows.append(DashDaily(day=day, metric="violation_category", dim=c, n=n))
        for a in ADVISORS:
            if n := rng.randint(0, 3):
                rows.append(DashDaily(day=day, metric="violation_advisor", dim=a, n=n))
        for i in INTENTS:
            rows.append(DashDaily(day=day, metric="intent", dim=i, n=rng.randint(5, 60)))
    await DashDaily.bulk_create(rows)
    now = datetime.now(UTC)
    for i, userid in enumerate(ADVISORS):
        row = await seed.advisor(userid, NAMES[i], department=TEAMS[i % len(TEAMS)])
        # Open review cases of several ages, for the backlog chart.
        for j in range(i + 1):
            await seed.conversation(
                keyring=keyring,
                advisor_row=row,
                customer_row=await seed.customer(f"wmCust{i}{j:03d}", "客户"),
                turns=[("advisor", "您放心，这个产品保本保收益，年化5%稳赚")],
                start=now - timedelta(days=j * 2, hours=3),
                msgid_prefix=f"{userid}-{j}",
            )
    for i in range(40):
        kind = rng.choice(("violation", "redemption_intent", "complaint", "churn"))
        alert = await models.Alert.create(idem_key=f"{kind}:seed{i}", kind=kind)
        at = now - timedelta(days=rng.randint(0, 29), hours=rng.randint(0, 23))
        await models.Alert.filter(id=alert.id).update(created_at=at)


async def _charts_drawn(page: Any) -> None:
    for chart in dashboard_pages.CHARTS:
        canvas = page.locator(f"#chart-{chart.name} canvas")
        assert await canvas.count() >= 1, chart.name
        box = await canvas.first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, (chart.name, box)
        assert await page.get_attribute(f"#chart-{chart.name}", "data-drawn") == "1"


async def test_dashboard_draws_its_charts(console: Console, browser: Any) -> None:
    await _seed(console.app[KEYRING])
    await make_operator("marketing", name="ops", display_name="陈运营")
    refused: list[str] = []

    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    await sign_in(page, console, "ops")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=数据看板")
    await page.wait_for_url("**/dashboard")
    await page.wait_for_selector("#chart-backlog[data-drawn='1']")
    await _charts_drawn(page)
    # A tooltip on hover: drawn on the canvas, so the CSP has nothing to refuse.
    box = await page.locator("#chart-activity canvas").first.bounding_box()
    assert box
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert not refused, refused
    await shot(page, "dashboard")

    # The CSV link of a chart downloads its file.
    async with page.expect_download() as info:
        await page.click("a[href^='/dashboard/activity.csv']")
    download = await info.value
    assert download.suggested_filename == "siyu-activity-30d.csv"

    phone = await browser.new_context(viewport={"width": 375, "height": 740}, locale="zh-CN")
    small = await phone.new_page()
    small.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    await sign_in(small, console, "ops")
    await small.wait_for_url(console.url("/"))
    await small.goto(console.url("/dashboard?days=7"))
    await small.wait_for_selector("#chart-backlog[data-drawn='1']")
    await _charts_drawn(small)
    await no_horizontal_overflow(small)
    assert not refused, refused
    await shot(small, "dashboard-375")
