"""The customer pages in a real browser (headless Chromium): search a customer by their
number, open the 360 page, see the conversation with the finding highlighted and the
customer's intent, show the numbers in clear as compliance; an advisor sees only the
customers they follow — at desktop width and at 375 px.  Screenshots go to
var/screenshots/ (customers-*.png, customer-*.png)."""

from __future__ import annotations

from typing import Any

from admin.models import Operator
from core.appkit import KEYRING
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.admin.test_customers import ZHOU_PHONE, seed_book

__all__ = ["browser"]  # the fixture, shared with the console walk


def _csp_watch(page: Any) -> list[str]:
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return refused


async def test_search_open_and_read_a_customer(console: Console, browser: Any) -> None:
    book = await seed_book(console.app[KEYRING])
    await make_operator("compliance", name="reviewer", display_name="李合规")

    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()
    refused = _csp_watch(page)
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))

    await page.click("nav >> text=客户")
    await page.wait_for_url("**/customers")
    rows = page.locator("#customers tbody tr")
    assert await rows.count() == 5
    await shot(page, "customers-list")

    # A whole number, spelled as a person types it, finds the one customer.
    await page.fill("#q", "+86 138 1234 5678")
    await page.click("#search-submit")
    # Answered on the post: the number is in no URL (history, a proxy's log).
    await page.wait_for_url("**/customers/search")
    assert await rows.count() == 1
    assert "周先生" in await rows.first.inner_text()
    assert "138****5678" in await rows.first.inner_text()
    await shot(page, "customers-search")

    await rows.first.locator("a").first.click()
    await page.wait_for_url(f"**/customers/{book.zhou.id}")
    mark = page.locator("#timeline li.flagged mark.hl-violation").first
    assert await mark.inner_text() == "保本保收益"
    assert await mark.is_visible()
    timeline = await page.inner_text("#timeline")
    assert "到期本金能拿回来吧" in timeline and "有问题随时找我" in timeline  # both sides
    assert ZHOU_PHONE not in timeline
    assert await page.locator("#timeline .intent", has_text="赎回意向").count() == 1
    assert "赵经理" in await page.inner_text("#advisors")
    assert "赎回意向" in await page.inner_text("#alerts")
    await shot(page, "customer-360")

    # Compliance reads the numbers in clear, with a reason; the reading is audited.
    await page.fill("#reason", "核实客户投诉身份")
    await page.click("#unmask-submit")
    await page.wait_for_selector("#unmasked")
    assert ZHOU_PHONE in await page.inner_text("#unmasked")
    assert "查看客户手机号原文" in await page.inner_text("#customer-audit")
    await shot(page, "customer-360-unmasked")
    assert refused == []

    # From the review case of that flagged line, the customer is one click away.
    await page.goto(console.url(f"/review/{book.promise_case.id}"))
    await page.click("#case-customer")
    await page.wait_for_url(f"**/customers/{book.zhou.external_userid}")
    assert await page.inner_text("#customer-name") == "周先生"

    # A phone: the same page, one column, nothing wider than the screen.
    phone = await browser.new_context(viewport={"width": 375, "height": 740}, locale="zh-CN")
    small = await phone.new_page()
    await sign_in(small, console, "reviewer")
    await small.wait_for_url(console.url("/"))
    await small.goto(console.url(f"/customers/{book.zhou.id}"))
    assert await small.locator("#timeline mark.hl-violation").first.is_visible()
    await no_horizontal_overflow(small)
    await shot(small, "customer-360-375")
    await small.goto(console.url("/customers"))
    await no_horizontal_overflow(small)
    await shot(small, "customers-list-375")


async def test_an_advisor_sees_only_their_customers(console: Console, browser: Any) -> None:
    book = await seed_book(console.app[KEYRING])
    op = await make_operator("advisor", name="zhao", display_name="赵经理")
    await Operator.filter(id=op.id).update(wecom_userid="adv-zhao")

    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()
    await sign_in(page, console, "zhao")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=客户")
    names = await page.locator("#customers tbody td.c-name a").all_inner_texts()
    assert sorted(names) == ["冯女士", "周先生"]
    await shot(page, "customers-advisor")
    # Another advisor's customer: the same answer as a customer that does not exist.
    await page.goto(console.url(f"/customers/{book.wu.id}"))
    assert "页面不存在" in await page.inner_text("main")
    await page.goto(console.url(f"/customers/{book.zhou.id}"))
    assert await page.locator("#timeline mark.hl-violation").count() >= 1
    assert await page.locator("#unmask").count() == 0  # compliance only
