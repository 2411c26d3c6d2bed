"""The tagging console's management pages in a real browser (headless Chromium).

An administrator edits a custom attribute field (a narrowing that stored values
break is refused with the count), tries to retire it while a saved audience uses it
(the use is listed), retires it once free and restores it.  Marketing starts a sync
of the corp tags from the library and reads who applied a customer's tags by name.
Screenshots in var/screenshots/ (tagging-field-*.png, tagging-sync-now-*.png).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot import models as bot_models
from core.models import AuditEntry
from tagging import attributes, jobs
from tagging.models import Audience
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.bot.outbox_fakes import FakeCorp
from tests.tagging import seed
from tests.tagging.test_sync_now import corp, finished_run, wecom_console

__all__ = ["browser", "corp", "wecom_console"]  # fixtures


async def test_admin_edits_retires_and_restores_a_custom_field(
    console: Console, browser: Any
) -> None:
    await make_operator("admin", name="it", display_name="王管理")
    await attributes.do_add_field(
        spec=attributes.FieldIn(
            name="tier", type="enum", label="等级", enum_values=("普通", "白金")
        ),
        actor=seed.OPS,
    )
    await bot_models.Customer.create(external_userid="wmFB01", attributes={"tier": "普通"})
    await Audience.create(name="白金客户", expr='attr.tier = "白金"')

    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    confirmed: list[str] = []
    page.on("dialog", lambda d: (confirmed.append(d.message), asyncio.ensure_future(d.accept())))
    await sign_in(page, console, "it")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=客户属性")
    await page.click("#field-tier a")
    await page.wait_for_url("**/tags/attributes/tier")

    # Dropping a value a customer holds is refused with how many hold it.
    await page.fill("#e-values", "白金")
    await page.click("#edit-field-submit")
    assert "1 位客户" in await page.inner_text("#field-error")
    assert (await attributes.load_schema())["tier"].values == ("普通", "白金")
    await shot(page, "tagging-field-refused")

    # A new value, a label and a description are saved.
    await page.fill("#e-values", "普通，金卡，白金")
    await page.fill("#e-label", "客户等级")
    await page.fill("#e-desc", "CRM 会员等级，每晚同步")
    await page.click("#edit-field-submit")
    await page.wait_for_url("**/tags/attributes/tier?notice=*")
    assert "已保存" in await page.inner_text("#field-notice")
    assert (await attributes.load_schema())["tier"].values == ("普通", "金卡", "白金")

    # Retiring while a saved audience uses it: the use is listed, nothing changes.
    await page.click("#retire-field-submit")
    await page.wait_for_selector("#field-uses")
    assert "已保存人群「白金客户」" in await page.inner_text("#field-uses")
    assert not (await attributes.load_schema())["tier"].retired
    await shot(page, "tagging-field-in-use")

    assert confirmed == ["停用字段 tier？"]
    await Audience.filter(name="白金客户").delete()
    await page.click("#retire-field-submit")
    await page.wait_for_url("**/tags/attributes/tier?notice=*")
    assert await page.locator("#field-retired").count() == 1
    await shot(page, "tagging-field-retired")
    await page.click("text=← 客户属性")
    assert "已停用" in await page.locator("#field-tier").inner_text()
    # The audience builder no longer offers it.
    await page.click("nav >> text=人群圈选")
    assert "tier" not in await page.inner_text("table.attr-ref")

    await page.goto(console.url("/tags/attributes/tier"))
    await page.click("#restore-field-submit")
    await page.wait_for_url("**/tags/attributes/tier?notice=*")
    assert await page.locator("#field-retired").count() == 0
    assert [
        e.action for e in await AuditEntry.filter(target="attribute_field:tier").order_by("id")
    ] == [
        "tagging.attribute_field.create",
        "tagging.attribute_field.edit",
        "tagging.attribute_field.retire",
        "tagging.attribute_field.restore",
    ]
    await page.set_viewport_size({"width": 375, "height": 812})
    await no_horizontal_overflow(page)
    await shot(page, "tagging-field-375")
    assert refused == [], refused
    await context.close()


async def test_marketing_syncs_now_and_sees_who_applied_tags(
    wecom_console: Console, browser: Any, corp: FakeCorp, redis_client: Any
) -> None:
    """「立即同步」: the sandbox's corp tags arrive with the report, the panel reloads
    itself while a sync runs; the customer's tags name the operator who applied them."""
    await make_operator("marketing", name="ops", display_name="钱运营")  # operator:1
    book = await seed.book()
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    await sign_in(page, wecom_console, "ops")
    await page.wait_for_url(wecom_console.url("/"))
    await page.click("nav >> text=标签库")
    assert "尚无对账记录" in await page.inner_text("#sync-report")
    await page.click("#sync-now-submit")
    await page.wait_for_url("**/tags?notice=*")
    assert "已开始同步" in await page.inner_text("#tagging-notice")
    await finished_run()
    await page.reload()
    report = await page.inner_text("#sync-report")
    group = sorted(corp.state.tag_groups.values(), key=lambda g: g.order)[0]
    assert "新增标签组" in report or group.group_name in report
    assert await page.locator("#sync-now-submit").is_enabled()
    await shot(page, "tagging-sync-now-done")

    # Another process's sync is running: the button waits, and the panel reloads
    # itself until it ends.
    await redis_client.set(
        jobs.SYNC_NOW_KEY, '{"by": "李运营", "at": "2026-12-06T01:00:00+00:00"}', ex=60
    )
    await page.reload()
    assert "李运营" in await page.inner_text("#sync-running")
    assert not await page.locator("#sync-now-submit").is_enabled()
    await shot(page, "tagging-sync-now-running")
    await redis_client.delete(jobs.SYNC_NOW_KEY)
    await page.locator("#sync-now-submit:enabled").wait_for()
    assert await page.locator("#sync-running").count() == 0

    # The customer page: who applied each tag, by name.
    await page.goto(wecom_console.url(f"/customers/{book.customers['wmBOOK00000000000000001']}"))
    tags = await page.inner_text("#customer-tags")
    assert "钱运营" in tags and "用户 #" not in tags
    await shot(page, "tagging-applied-by-names")
    assert refused == [], refused
    await context.close()
