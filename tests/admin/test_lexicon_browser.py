"""The lexicon in a real browser (headless Chromium): a compliance reviewer adds an exception,
sees the dry run, narrows the exception when the dry run shows it would hide labelled
violations, publishes, and the next ``/api/v1/compliance/check`` honours it; versions and
the page at 375 px. Screenshots go to var/screenshots/ (lexicon-*.png)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.admin.console import Console, make_operator
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.admin.test_lexicon import lex_console, pool

__all__ = ["browser", "lex_console", "pool"]  # fixtures shared with other tests

PRODUCT_LINE = "稳赢增利1号今天开放申购，欢迎了解"


async def check(page: Any, console: Console, text: str) -> list[dict[str, Any]]:
    """``POST /api/v1/compliance/check`` as the signed-in page would send it."""
    headers = json.loads(await page.get_attribute("body", "hx-headers"))
    resp = await page.request.post(
        console.url("/api/v1/compliance/check"),
        data=json.dumps({"text": text, "role": "advisor"}),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    findings: list[dict[str, Any]] = (await resp.json())["violations"]
    return findings


async def add_exception(page: Any, phrase: str, note: str) -> None:
    await page.click("#lexicon-tabs >> text=例外")
    await page.fill("#e-text", phrase)
    await page.fill("#e-note", note)
    await page.click("#add-submit")
    await page.wait_for_selector("#lexicon-notice")


async def test_an_exception_is_dry_run_published_and_honoured(
    lex_console: Console, browser: Any
) -> None:
    console = lex_console
    await make_operator("compliance", name="reviewer", display_name="李合规")
    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))

    before = await check(page, console, PRODUCT_LINE)
    assert [f["rule_id"] for f in before] == ["GR-002"]
    assert before[0]["suggestion"]  # the rewording the sidebar shows

    await page.click("nav >> text=合规词库")
    assert "尚未发布" in await page.inner_text("#lexicon-status")
    # Too broad: every 稳赚 spared.
    await add_exception(page, "稳赚", "产品名里有“稳赚”二字")
    assert "草稿有 1 处未发布的修改" in await page.inner_text("#draft-changes")
    await page.click("#dry-run")
    await page.wait_for_selector("#dry-run-stats")
    removed = int(await page.inner_text("#findings-removed"))
    assert removed > 0
    stats = await page.inner_text("#dry-run-stats")
    assert "可能漏报" in stats
    rows = page.locator("#dry-run-lines tbody tr.suspect")
    assert await rows.count() > 0  # lines labelled violations that would lose a finding
    assert "jsonl:" in await rows.first.inner_text()
    await shot(page, "lexicon-dry-run-broad")

    # Narrow it to the product's name: the dry run shows no labelled line changes.
    await page.click("text=← 返回词库")
    await page.click("#lexicon-tabs >> text=例外")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))  # data-confirm
    await page.click("#lexicon-entries >> text=删除")
    await page.wait_for_selector("#lexicon-notice")
    await add_exception(page, "稳赢增利", "本行理财产品“稳赢增利”系列的名称，不是收益承诺")
    await shot(page, "lexicon-draft")
    await page.click("#dry-run")
    await page.wait_for_selector("#dry-run-stats")
    assert await page.inner_text("#findings-removed") == "0"
    assert await page.inner_text("#findings-added") == "0"
    assert "没有任何一行的命中发生变化" in await page.inner_text("#dry-run-lines")
    # Still only a draft: the check has not changed.
    assert [f["rule_id"] for f in await check(page, console, PRODUCT_LINE)] == ["GR-002"]

    await page.click("#publish")  # no reason: refused, nothing published
    assert "请说明本次变更的原因" in await page.inner_text("#publish-panel")
    await page.fill("#reason", "本行产品名“稳赢增利”不是收益承诺，经法规部确认")
    await shot(page, "lexicon-dry-run")
    await page.click("#publish")
    await page.wait_for_url("**/lexicon/versions/1?published=1*")
    assert "已发布 v1" in await page.inner_text("#published-notice")
    await shot(page, "lexicon-version")

    # The next check honours it; the same term outside the name is still a promise.
    assert await check(page, console, PRODUCT_LINE) == []
    assert [f["rule_id"] for f in await check(page, console, "这款稳赢，放心买")] == ["GR-002"]

    await page.click("text=版本记录")
    assert "李合规" in await page.inner_text("#lexicon-version-list") or "reviewer" in (
        await page.inner_text("#lexicon-version-list")
    )
    await page.click("nav >> text=审计日志")
    assert "发布词库版本" in await page.inner_text("main")

    # Segment packs: the insurer's starter terms, imported into the draft's pack.
    await page.goto(console.url("/lexicon?tab=segment"))
    await page.click("#starter-packs summary >> text=保险")
    await page.click("#import-insurance")
    await page.wait_for_selector("#lexicon-notice")
    assert "草稿有 4 处未发布的修改" in await page.inner_text("#draft-changes")
    await page.check("#segment-packs input[value=insurance]")
    await page.click("#save-segments")
    await page.wait_for_selector("#lexicon-notice")
    await page.click("#starter-packs summary >> text=保险")
    await shot(page, "lexicon-packs")
    await desk.close()

    phone = await browser.new_context(
        viewport={"width": 375, "height": 740}, locale="zh-CN", device_scale_factor=2
    )
    page = await phone.new_page()
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))
    await page.goto(console.url("/lexicon?tab=exception"))
    await no_horizontal_overflow(page)
    await shot(page, "lexicon-375")
    await page.goto(console.url("/lexicon/versions/1"))
    await no_horizontal_overflow(page)
    await phone.close()
