"""A digest's deep link into the chat sidebar, in headless Chromium at 375×667 with the
stand-in for the WeCom client (tests/admin/test_sidebar_browser.py).

Walk: the advisor, signed out, taps the link of a reminder in a digest
(``/sidebar/?customer=…&touch=…``); WeCom's OAuth signs them in and brings the link back
whole; the touch is on top of the page — campaign, step, due time, state, the content
filled in for the customer; 填入并检查 puts it in the checked box, the compliance check
passes, the send button sends it into the chat, and the touch is recorded as sent from
the sidebar.  Opened again, it says it was sent.  Then what is not to be sent: a skipped
touch, someone else's touch, a touch opened outside a chat with its customer.
Screenshots: var/screenshots/sidebar-touch-*.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import audit
from core.settings import Settings
from sop.models import Enrolment, Touch, TouchState
from tests.admin.sidebar_support import ADVISOR, CUSTOMER, SidebarWorld, start_world
from tests.admin.test_browser import browser, no_horizontal_overflow, shot
from tests.admin.test_sidebar_browser import wecom_phone
from tests.sop.test_touch_send import FILLED, Journey, today_at

__all__ = ["browser"]


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


async def _sent(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.__wecomClient.sent"))


async def _recorded(page: Any, touch_id: int) -> Touch:
    """The touch once the page's record reached the server (polled from here)."""
    for _ in range(200):
        row = await Touch.get(id=touch_id)
        if row.sent_via is not None:
            return row
        await page.wait_for_timeout(50)
    raise AssertionError(f"touch {touch_id} was not recorded")


async def test_a_digest_link_opens_the_touch_and_its_send_is_recorded(
    world: SidebarWorld, browser: Any, analyzer: Any
) -> None:
    journey = await Journey.build(world, analyzer)
    touch = await journey.reminder()  # the digest reached the advisor this morning
    # The journey's next step, a mass send in two days, keeps it running.
    enrolment = await Enrolment.get(id=touch.enrolment_id)  # type: ignore[attr-defined]
    await journey.rows.touch(enrolment, journey.s2, today_at(10, days=2), TouchState.PLANNED)
    verified: list[dict[str, Any]] = []
    refused: list[str] = []
    ctx, page = await wecom_phone(world, browser, verified, refused)

    # The digest's link, as dispatch writes it, opened by a member not yet signed in.
    link = f"/sidebar/?customer={CUSTOMER}&touch={touch.id}"
    world.sandbox.oauth_member = ADVISOR
    await page.goto(world.console.url(link))
    card = page.locator("#sb-touch")
    await card.locator("text=到期提醒").wait_for()
    # Back from WeCom's OAuth with the link whole (the fragment WeCom adds aside).
    assert page.url.split("#")[0] == world.console.url(link)
    assert [v["ok"] for v in verified] == [True]
    await page.locator("#sb-who-card", has_text="周大福").wait_for()

    text = await card.inner_text()
    assert "第 1 步 提醒客户经理" in text and "今天 09:00" in text
    assert "已提醒客户经理" in text
    assert FILLED in text
    assert await page.locator("#sb-touch-compose").is_enabled()
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-touch-open")

    # 填入并检查: the content goes into the send box and through the same check.
    await page.click("#sb-touch-compose")
    assert await page.input_value("#sb-text") == FILLED
    await page.locator("#sb-status", has_text="未发现合规问题").wait_for()
    assert await page.is_enabled("#sb-send")
    await shot(page, "sidebar-touch-composed")
    await page.click("#sb-send")
    await page.locator("#sb-toast", has_text="并记录到 SOP 触达").wait_for()
    sent = await _sent(page)
    assert [(m["msgtype"], m["text"]) for m in sent] == [("text", {"content": FILLED})]

    row = await _recorded(page, touch.id)
    assert (row.state, row.sent_via) == (TouchState.SENT, "sidebar")
    assert row.sent_by is not None and row.sent_by.startswith("operator:")
    await card.locator(".sb-touch-done", has_text="发送给客户").wait_for()
    assert await page.locator("#sb-touch-compose").count() == 0
    # The SOP panel of the customer tab no longer offers it.
    assert await page.locator(f'[data-sb-touch="{touch.id}"]').count() == 0
    entries = await audit.entries(
        where=audit.AuditFilter(action="sop.touch.sent", target=f"touch:{touch.id}")
    )
    assert len(entries) == 1
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-touch-recorded")

    # The link opened again: sent, said plainly, nothing to send.
    await page.goto(world.console.url(link))
    await card.locator(".sb-touch-done").wait_for()
    assert "客户经理已发送" in await card.inner_text()
    assert await page.locator("#sb-touch-compose").count() == 0
    await page.click("#tab-customer")
    panel = page.locator(f"#sop-touch-{touch.id}")
    await panel.wait_for()
    assert "从侧边栏发送给客户" in await panel.inner_text()
    await shot(page, "sidebar-touch-sent-panel")
    assert refused == []
    await ctx.close()


async def test_a_touch_not_to_send_says_why(
    world: SidebarWorld, browser: Any, analyzer: Any
) -> None:
    journey = await Journey.build(world, analyzer)
    skipped = await journey.reminder(TouchState.SKIPPED, reason="unsuitable")
    theirs = await journey.reminder(advisor="wangfang")
    mine = await journey.reminder()
    verified: list[dict[str, Any]] = []
    refused: list[str] = []
    ctx, page = await wecom_phone(world, browser, verified, refused)
    world.sandbox.oauth_member = ADVISOR
    card = page.locator("#sb-touch")

    await page.goto(world.console.url(f"/sidebar/?customer={CUSTOMER}&touch={skipped.id}"))
    await card.locator(".sb-touch-problem").wait_for()
    assert "这条触达已跳过（适当性不匹配），不再发送。" in await card.inner_text()
    assert await page.locator("#sb-touch-compose").count() == 0
    await shot(page, "sidebar-touch-skipped")

    await page.goto(world.console.url(f"/sidebar/?customer={CUSTOMER}&touch={theirs.id}"))
    await card.locator("text=找不到这条提醒，或它不是分配给您的").wait_for()
    assert "到期提醒" not in await card.inner_text()

    # Opened from the digest itself, not beside the chat: the customer and the touch are
    # shown; sending waits for the chat with that customer.
    await ctx.add_init_script("window.__wecomClient.opened.entry = 'normal';")
    await page.goto(world.console.url(f"/sidebar/?customer={CUSTOMER}&touch={mine.id}"))
    await card.locator(".sb-touch-problem").wait_for()
    assert "请在与该客户的单聊中打开侧边栏发送" in await card.inner_text()
    assert FILLED in await card.inner_text()
    await page.locator("#sb-who-card", has_text="周大福").wait_for()
    assert await page.locator("#sb-touch-compose").count() == 0
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-touch-outside-chat")
    assert await _sent(page) == []
    assert (await Touch.get(id=mine.id)).sent_via is None

    # A customer without the maturity date the text uses: no literal {maturity_date}.
    world.customer.attributes = {
        k: v for k, v in world.customer.attributes.items() if k != "maturity_date"
    }
    await world.customer.save()
    await page.goto(world.console.url(f"/sidebar/?customer={CUSTOMER}&touch={mine.id}"))
    await card.locator(".sb-touch-problem").wait_for()
    assert "客户资料中没有「到期日」" in await card.inner_text()
    assert "将于{maturity_date}" not in await page.locator("body").inner_text()
    assert await page.locator("#sb-touch-compose").count() == 0
    await shot(page, "sidebar-touch-missing-value")
    assert refused == []
    await ctx.close()
