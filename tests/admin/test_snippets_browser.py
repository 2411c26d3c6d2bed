"""The reply library in a real browser (headless Chromium): marketing writes a snippet (and a
link card), compliance sees the live check and approves it, an advisor finds it by search;
at desktop width and at 375 px. Screenshots go to var/screenshots/ (snippets-*.png)."""

from __future__ import annotations

from typing import Any

from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.admin.test_lexicon import lex_console, pool

__all__ = ["browser", "lex_console", "pool"]  # fixtures shared with other tests

TEXT = "本产品不保本，过往业绩不代表未来表现。稳健理财系列本周开放，详情请以产品说明书为准。"


async def test_a_snippet_is_written_approved_and_found(lex_console: Console, browser: Any) -> None:
    console = lex_console
    await make_operator("marketing", name="ops", display_name="王运营")
    await make_operator("compliance", name="reviewer", display_name="李合规")
    await make_operator("advisor", name="adv", display_name="赵经理")
    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")

    # Marketing writes: a text snippet, and a link card that promises a return.
    page = await desk.new_page()
    await sign_in(page, console, "ops")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=合规话术库")
    await page.click("#new-snippet")
    assert await page.is_hidden("fieldset[data-kind=link]")  # text: the card's fields hide
    await page.click("#snippet-submit")
    assert "请填写标题" in await page.inner_text("#snippet-form")
    await page.fill("#s-title", "稳健理财开放提醒")
    await page.fill("#s-topic", "产品介绍")
    await page.select_option("#s-segment", "bank")
    await page.fill("#s-text", TEXT)
    await shot(page, "snippets-new")
    await page.click("#snippet-submit")
    await page.wait_for_url("**/snippets/*?done=created")
    assert "待审核" in await page.inner_text("#snippet-status")

    await page.goto(console.url("/snippets/new"))
    await page.select_option("#s-kind", "link")
    assert await page.is_visible("fieldset[data-kind=link]")
    await page.fill("#s-title", "高收益理财推荐")
    await page.fill("#s-topic", "产品介绍")
    await page.fill("#s-link-title", "年化8%保本保收益，名额有限")
    await page.fill("#s-link-url", "https://example.com/p/8")
    await page.click("#snippet-submit")
    await page.wait_for_url("**/snippets/*?done=created")
    await page.context.clear_cookies()

    # Compliance: the live check beside the approve button.
    page = await desk.new_page()
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=合规话术库")
    await page.click("#snippet-tabs >> text=待审核")
    rows = page.locator("#snippet-rows tbody tr")
    assert await rows.count() == 2
    await shot(page, "snippets-pending")
    await page.click("#snippet-rows >> text=高收益理财推荐")
    check = await page.inner_text("#check-result")
    assert "违规" in check and "保本保收益" in check and "建议改为" in check
    assert await page.is_disabled("#approve")
    await shot(page, "snippets-violation")
    await page.fill("#reject-reason", "承诺保本保收益，请改写")
    await page.click("#reject")
    await page.wait_for_url("**done=rejected")

    await page.click("text=← 话术库")
    await page.click("#snippet-tabs >> text=待审核")
    await page.click("#snippet-rows >> text=稳健理财开放提醒")
    assert "未发现问题" in await page.inner_text("#check-result")
    await page.click("#approve")
    await page.wait_for_url("**done=approved")
    approval = await page.inner_text("#approval")
    assert "reviewer" in approval and "lexicon" in approval
    await shot(page, "snippets-approved")
    await page.context.clear_cookies()

    # The advisor finds it by search; the rejected card is not there.
    page = await desk.new_page()
    await sign_in(page, console, "adv")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=合规话术库")
    assert await page.locator("#snippet-tabs").count() == 0  # approved only: no tabs
    await page.fill("#f-q", "稳健理财")
    await page.click("#search-snippets")
    await page.wait_for_url("**q=*")
    rows = page.locator("#snippet-rows tbody tr")
    assert await rows.count() == 1
    assert "稳健理财开放提醒" in await rows.first.inner_text()
    await page.fill("#f-q", "高收益")
    await page.click("#search-snippets")
    await page.wait_for_url("**q=*")
    assert "没有符合条件的话术" in await page.inner_text("#snippet-rows")
    await shot(page, "snippets-advisor")
    api = await page.request.get(console.url("/api/v1/snippets?q=稳健理财&segment=bank"))
    assert [i["title"] for i in (await api.json())["items"]] == ["稳健理财开放提醒"]
    await desk.close()

    phone = await browser.new_context(
        viewport={"width": 375, "height": 740}, locale="zh-CN", device_scale_factor=2
    )
    page = await phone.new_page()
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))
    await page.goto(console.url("/snippets?status=all"))
    await no_horizontal_overflow(page)
    await shot(page, "snippets-375")
    await page.click("#snippet-rows >> text=稳健理财开放提醒")
    await no_horizontal_overflow(page)
    await shot(page, "snippets-detail-375")
    await phone.close()
