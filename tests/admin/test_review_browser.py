"""The review queue in a real browser (headless Chromium): filter the queue, open a case,
see the highlighted span, decide it, find the decision in the audit log — at desktop
width and at 375 px.  Screenshots go to var/screenshots/ (review-*.png)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from admin.models import Operator
from core.appkit import KEYRING
from tests.admin import review_seed as seed
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in

__all__ = ["browser"]  # the fixture, shared with the console walk


async def _seed(console: Console) -> dict[str, Any]:
    keyring = console.app[KEYRING]
    now = datetime.now(UTC)
    lead = await seed.advisor("lead-qian", "钱主管", department="财富管理一部")
    zhao = await seed.advisor("adv-zhao", "赵经理", department="财富管理一部", manager=lead.userid)
    sun = await seed.advisor("adv-sun", "孙经理", department="财富管理二部", manager="lead-wu")
    await seed.advisor("lead-wu", "吴主管", department="财富管理二部")
    li = await seed.advisor("adv-li", "李经理", department="个人金融部", manager=lead.userid)
    promise = await seed.conversation(
        keyring=keyring,
        advisor_row=zhao,
        customer_row=await seed.customer("wmCust0001", "周先生"),
        turns=[
            ("customer", "这个理财到期本金能拿回来吧？我年纪大了不想亏"),
            ("advisor", "您放心，这个产品保本保收益，年化5%稳赚，有事打我13812345678"),
            ("customer", "好的，那我再考虑一下"),
            ("advisor", "好的，有问题随时找我"),
        ],
        start=now - timedelta(days=4, hours=2),
        msgid_prefix="zhao",
    )
    await seed.conversation(
        keyring=keyring,
        advisor_row=sun,
        customer_row=await seed.customer("wmCust0002", "吴女士"),
        turns=[("customer", "怎么买比较方便？"), ("advisor", "钱直接转我卡上就行，不用走系统")],
        start=now - timedelta(hours=30),
        msgid_prefix="sun",
    )
    await seed.conversation(
        keyring=keyring,
        advisor_row=li,
        customer_row=await seed.customer("wmCust0003", "郑先生"),
        turns=[
            ("customer", "最近有什么股票推荐吗"),
            ("advisor", "这只股票明天肯定涨停，内部消息，别告诉别人"),
        ],
        start=now - timedelta(hours=3),
        msgid_prefix="li",
    )
    await seed.conversation(
        keyring=keyring,
        advisor_row=zhao,
        customer_row=await seed.customer("wmCust0004", "冯女士"),
        turns=[
            ("customer", "风险测评过期了怎么办"),
            ("advisor", "我帮您做测评吧，这题选C就能买R4了"),
        ],
        start=now - timedelta(hours=50),
        msgid_prefix="zhao2",
    )
    return {"promise": promise.cases[0]}


async def test_review_walkthrough(console: Console, browser: Any) -> None:
    seeded = await _seed(console)
    await make_operator("compliance", name="reviewer", display_name="李合规")
    await make_operator("compliance", name="reviewer-2", display_name="吴合规")

    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))

    # The queue: oldest first, counts per filter value; filter it by category.
    await page.click("nav >> text=审核队列")
    rows = page.locator("#review-cases tbody tr")
    assert await rows.count() == 4
    assert "3天" not in await rows.nth(3).inner_text()
    assert "4天" in await rows.first.inner_text()
    await shot(page, "review-queue")
    await page.select_option("#f-category", "guaranteed_return")
    await page.click("#apply-filters")
    await page.wait_for_url("**/review?*category=guaranteed_return*")
    assert await rows.count() == 1
    assert "赵经理" in await rows.first.inner_text()

    # The case: the flagged span highlighted in the masked conversation.
    await page.click(f"#review-cases a[href^='/review/{seeded['promise'].id}']")
    await page.wait_for_url(f"**/review/{seeded['promise'].id}*")
    marks = page.locator("#thread li.flagged mark.hl-violation")
    assert await marks.count() == 2
    assert await marks.first.inner_text() == "保本保收益"
    assert await marks.first.is_visible()
    thread = await page.inner_text("#thread")
    assert "138****5678" in thread and "13812345678" not in thread
    assert "到期本金能拿回来吧" in thread and "好的，那我再考虑一下" in thread
    await shot(page, "review-case")

    # Decide it: the comment is required; the decision is then shown and audited.
    await page.check("input[name=decision][value=confirmed]")
    await page.click("#decide-submit")
    assert "请填写审核意见" in await page.inner_text("#decide-form")
    await page.check("input[name=decision][value=confirmed]")
    await page.fill("#comment", "承诺保本保收益，已约谈客户经理并回访客户")
    await page.click("#decide-submit")
    await page.wait_for_url("**decided=confirmed")
    assert "确认违规" in await page.inner_text("#case-status")
    assert "审核结论" in await page.inner_text("#case-audit")
    await shot(page, "review-case-decided")

    await page.click("nav >> text=审计日志")
    await page.select_option("#f-action", "review.decide")
    await page.click("text=筛选")
    entries = page.locator("#audit-entries tbody tr")
    assert await entries.count() == 1
    row = await entries.first.inner_text()
    assert "李合规" in row or "reviewer" in row
    assert f"review_case:{seeded['promise'].id}" in row
    await shot(page, "review-audit")
    await desk.close()

    # A phone (WeCom's built-in browser): the same pages, nothing wider than the screen.
    phone = await browser.new_context(
        viewport={"width": 375, "height": 740}, locale="zh-CN", device_scale_factor=2
    )
    page = await phone.new_page()
    await sign_in(page, console, "reviewer-2")
    await page.wait_for_url(console.url("/"))
    await page.goto(console.url("/review?status=all"))
    await no_horizontal_overflow(page)
    await shot(page, "review-queue-375")
    await page.goto(console.url(f"/review/{seeded['promise'].id}"))
    await no_horizontal_overflow(page)
    assert await page.locator("#thread mark.hl-violation").first.is_visible()
    await shot(page, "review-case-375")
    await phone.close()
    assert await Operator.filter(name="reviewer").exists()
