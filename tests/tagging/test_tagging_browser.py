"""The tagging pages in a real browser (headless Chromium), against the WeCom sandbox.

Marketing finds the sandbox's corp tags in the library, creates a tag there and the
sandbox receives it (the outbox drained as the scheduler does); writes a rule, sees
its dry-run count, enables it; builds an audience and sees the live count, and the
error at its character.  An advisor sees only their own customers' tags.  At 1280 px
and 375 px; screenshots in var/screenshots/ (tagging-*.png).
"""

from __future__ import annotations

from typing import Any

from admin.models import Operator
from core.appkit import KEYRING
from core.models import AuditEntry
from tagging import attributes, sync
from tagging.models import Tag, TagRule
from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.bot.outbox_fakes import FakeCorp
from tests.tagging import seed
from tests.tagging.test_sync import corp, drain, wecom_library

__all__ = ["browser", "corp"]  # fixtures


async def _count_is(page: Any, selector: str, value: int) -> None:
    await page.wait_for_function(
        "([sel, want]) => { const e = document.querySelector(sel);"
        " return e !== null && e.textContent.trim() === want; }",
        arg=[selector, str(value)],
    )


async def test_marketing_library_rule_and_audience(
    console: Console, browser: Any, corp: FakeCorp
) -> None:
    await sync.sync_library(client=corp.client(), kind="reconcile")
    book = await seed.book()
    wecom_group = sorted(corp.state.tag_groups.values(), key=lambda g: g.order)[0]
    await make_operator("marketing", name="ops", display_name="钱运营")

    desk = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    page = await desk.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    await sign_in(page, console, "ops")
    await page.wait_for_url(console.url("/"))

    # The library: the sandbox's corp tags are there, with the last reconcile report.
    await page.click("nav >> text=标签库")
    await page.wait_for_url("**/tags")
    main = await page.inner_text("main")
    assert wecom_group.group_name in main and "客户画像" in main
    assert "成功" in await page.inner_text("#sync-status")
    await shot(page, "tagging-library")

    # A tag created in a WeCom group goes out through the outbox; the sandbox has it.
    section = page.locator("section.tag-group", has_text=wecom_group.group_name)
    await section.locator("form.add-tag input[name=name]").fill("双十一到店")
    await section.locator("button:has-text('添加标签')").click()
    await page.wait_for_url("**/tags?notice=*")
    assert "正在同步到企业微信" in await page.inner_text("#tagging-notice")
    row = page.locator("section.tag-group tr", has_text="双十一到店")
    assert "推送中" in await row.inner_text()
    assert await drain(corp) >= 1
    assert "双十一到店" in wecom_library(corp)[wecom_group.group_name]
    await page.reload()
    assert "已同步" in await row.inner_text()
    assert (await Tag.get(name="双十一到店")).wecom_tag_id

    # A name the group has already is refused with the reason; nothing is created.
    await section.locator("form.add-tag input[name=name]").fill("双十一到店")
    await section.locator("button:has-text('添加标签')").click()
    assert "已有同名" in await page.inner_text("#tagging-error")
    assert await Tag.filter(name="双十一到店").count() == 1
    await shot(page, "tagging-library-refused")

    # A tag's customers: names masked for marketing, reasons shown.
    await page.goto(console.url(f"/tags/{book.tags['高净值'].id}"))
    table = await page.inner_text("#tag-customers")
    assert "周**" in table and "周大福" not in table and "电话回访确认" in table
    await shot(page, "tagging-tag-customers")

    # A rule: the dry run counts as the form changes; saved enabled; listed as such.
    await page.click("nav >> text=打标规则")
    await page.click("#new-rule")
    await page.fill("#r-name", "养老意向客群")
    await page.select_option("#r-trigger", "schedule")
    assert await page.locator("#r-audience").is_visible()
    assert not await page.locator("#r-intent").is_visible()
    await page.fill("#r-audience", 'tag:"关注养老" AND attr.risk_level >= C3')
    await page.select_option("#r-add", [str(book.tags["养老客群"].id)])
    await _count_is(page, "#dry-run-count", 1)
    assert "wmBO…0001" in await page.inner_text("#dry-run")
    await shot(page, "tagging-rule-dry-run")
    await page.fill("#r-audience", 'tag:"关注养老" AND (attr.risk_level >= C3')
    await page.wait_for_selector("#dry-run .expr-error")
    assert "表达式不完整" in await page.inner_text("#dry-run")
    await page.fill("#r-audience", 'tag:"关注养老"')
    await _count_is(page, "#dry-run-count", 2)
    await page.check("#r-enabled")
    await page.click("#save-rule")
    await page.wait_for_url("**/tags/rules/*?notice=*")
    assert "试运行命中 2 位客户" in await page.inner_text("#rule-notice")
    rule = await TagRule.get(name="养老意向客群")
    assert rule.enabled
    await page.click("nav >> text=打标规则")
    assert "已启用" in await page.inner_text("#rules")
    await shot(page, "tagging-rules")

    # An audience: the live count, then an error marked at its character.
    await page.click("nav >> text=人群圈选")
    await page.fill("#expr", 'tag:"高净值" AND NOT tag:"已退订"')
    await _count_is(page, "#audience-count", 3)
    assert "周**" in await page.inner_text("#audience-sample")
    await page.fill("#audience-name", "高净值在册")
    await page.click("#save-audience")
    await page.wait_for_url("**/tags/audiences?*")
    assert "高净值在册" in await page.inner_text("#saved-audiences")
    await _count_is(page, "#audience-count", 3)
    await shot(page, "tagging-audience")
    sealed = 'tag:"高净值" AND attr.aum > 5000000'
    await page.fill("#expr", sealed)
    await page.wait_for_selector("#audience-error")
    error = await page.inner_text("#audience-error")
    at = sealed.index("attr.aum") + 1
    assert "加密保存的敏感属性" in error and "attr.aum_band" in error and f"第 {at} 个字符" in error
    assert await page.locator("#audience-error mark.caret").inner_text() == "a"
    await shot(page, "tagging-audience-error")

    # The attribute schema and the import history are readable to marketing.
    await page.click("nav >> text=客户属性")
    assert "加密存储" in await page.inner_text("#attribute-fields")
    await shot(page, "tagging-attributes")
    assert refused == [], refused
    await desk.close()

    # A phone (WeCom's built-in browser): the same pages, nothing wider than the screen.
    phone = await browser.new_context(
        viewport={"width": 375, "height": 812}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    page = await phone.new_page()
    await sign_in(page, console, "ops")
    await page.wait_for_url(console.url("/"))
    for path, name in (
        ("/tags", "library"),
        (f"/tags/rules/{rule.id}", "rule"),
        ("/tags/audiences?expr=" + 'tag:"高净值"', "audience"),
        ("/tags/imports", "imports"),
    ):
        await page.goto(console.url(path))
        if name == "audience":
            await _count_is(page, "#audience-count", 3)
        if name == "rule":
            await _count_is(page, "#dry-run-count", 2)
        await no_horizontal_overflow(page)
        await shot(page, f"tagging-{name}-375")
    await phone.close()


async def test_an_advisor_sees_only_their_own_customers_tags(
    console: Console, browser: Any
) -> None:
    book = await seed.book()
    op = await make_operator("advisor", name="zhao", display_name="赵经理")
    await Operator.filter(id=op.id).update(wecom_userid="adv-zhao")
    zhou = book.customers["wmBOOK00000000000000001"]
    await attributes.do_import_attributes(
        rows=[{"external_userid": "wmBOOK00000000000000001", "attributes": {"aum": "4200000"}}],
        actor=seed.OPS,
        keyring=console.app[KEYRING],
    )

    for width, suffix in ((1280, ""), (375, "-375")):
        context = await browser.new_context(
            viewport={"width": width, "height": 800}, locale="zh-CN", device_scale_factor=1
        )
        page = await context.new_page()
        await sign_in(page, console, "zhao")
        await page.wait_for_url(console.url("/"))
        await page.goto(console.url("/tags"))
        nav = await page.inner_text("nav.nav")
        assert "标签库" in nav and "打标规则" not in nav and "人群圈选" not in nav
        section = page.locator("section.tag-group", has_text="客户画像")
        row = await section.locator("tr", has_text="高净值").inner_text()
        assert row.split()[1] == "2"  # zhao's two, not qian's
        assert await section.locator("text=添加标签").count() == 0
        await no_horizontal_overflow(page)
        await shot(page, f"tagging-advisor-library{suffix}")

        await page.goto(console.url(f"/tags/{book.tags['高净值'].id}"))
        table = await page.inner_text("#tag-customers")
        assert "周大福" in table and "吴小姐" in table  # their own, in full
        assert "王老板" not in table and "王**" not in table  # qian's customer
        assert "编辑标签" not in await page.inner_text("main")
        await no_horizontal_overflow(page)
        await shot(page, f"tagging-advisor-tag{suffix}")
        response = await page.goto(console.url("/tags/rules"))
        assert response is not None and response.status == 403

        # The customer page: tagging's panels — tags with reasons, the sealed AUM opened
        # on request (audited).
        await page.goto(console.url(f"/customers/{zhou}"))
        tags = await page.inner_text("#customer-tags")
        assert "高净值" in tags and "电话回访确认" in tags
        assert "4200000" not in await page.inner_text("main")
        await page.click("#open-sealed")
        await page.wait_for_selector("#sealed-values dd.mono")
        assert "4200000" in await page.inner_text("#sealed-values")
        await no_horizontal_overflow(page)
        await shot(page, f"tagging-customer-panels{suffix}")
        await context.close()
    assert await AuditEntry.filter(action="tagging.attributes.open").count() == 2
