"""The console in a real browser (headless Chromium via Playwright), with screenshots.

Sign in (and be locked out after repeated failures), enrol a second factor, create an
API key and use it once, find that use in the audit log; every page at desktop width
and at 375 px (a phone, WeCom's built-in browser).  Screenshots go to var/screenshots/
(git-ignored; the README names the folder) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from tests.admin.console import PASSWORD, Console, make_operator

CHROMIUM = os.environ.get("SIYU_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser(console_settings: Any) -> AsyncIterator[Any]:
    if "postgres" in console_settings.database_url:
        pytest.skip("the browser walk runs once, on SQLite: the database is not what it tests")
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def no_horizontal_overflow(page: Any) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size["width"]
    assert width <= viewport, f"{page.url}: {width}px wide in a {viewport}px viewport"


async def sign_in(page: Any, console: Console, name: str, password: str = PASSWORD) -> None:
    await page.goto(console.url("/login"))
    await page.fill("#name", name)
    await page.fill("#password", password)
    await page.click("button[type=submit]")


async def test_console_walkthrough(console: Console, browser: Any) -> None:
    console.settings.admin.totp_required_roles = ["admin"]
    await make_operator("admin", name="it-admin", display_name="王管理")
    await make_operator("compliance", name="reviewer", display_name="李合规")
    await make_operator("advisor", name="advisor-a", display_name="赵经理")

    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await desk.new_page()

    # Sign-in page, then a locked account after repeated failures.
    await page.goto(console.url("/login"))
    await shot(page, "login")
    for _ in range(console.settings.admin.login_max_failures):
        await sign_in(page, console, "advisor-a", "not the right password")
    assert "临时锁定" in await page.inner_text(".notice")
    await shot(page, "login-locked")
    await sign_in(page, console, "advisor-a")
    assert "临时锁定" in await page.inner_text(".notice"), "the right password is refused too"

    # The administrator must enrol a second factor before anything else.
    await sign_in(page, console, "it-admin")
    await page.wait_for_url("**/account/totp")
    assert await page.locator(".qr svg").count() == 1
    await shot(page, "totp-enrol")
    secret = (await page.inner_text("#totp-secret")).replace(" ", "")
    await page.fill("#code", pyotp.TOTP(secret).now())
    await page.click("button[type=submit]")
    await page.wait_for_url(console.url("/"))
    assert "已存储消息" in await page.inner_text("main")
    assert "王管理" in await page.inner_text(".topbar")
    await shot(page, "home")

    # Users: create one; the temporary password is shown once.
    await page.click("nav >> text=用户")
    await page.fill("#new-name", "marketing-b")
    await page.fill("#new-display", "钱运营")
    await page.select_option("#new-role", "marketing")
    await page.click("text=创建并生成临时密码")
    assert await page.locator("#one-time-password").count() == 1
    await shot(page, "users")

    # API keys: create one, use it once from outside the browser.
    await page.click("nav >> text=API 密钥")
    await page.fill("#key-name", "core-banking")
    await page.check("input[value='compliance:check']")
    await page.click("text=创建密钥")
    key = (await page.inner_text("#new-key")).strip()
    assert re.fullmatch(r"siyu_[0-9a-f]{12}_\S+", key)
    await shot(page, "api-keys")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            console.url("/api/v1/me"), headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200
            assert (await r.json())["name"] == "core-banking"

    # The audit log shows the key's use (and the lockout, and the sign-ins).
    await page.click("nav >> text=审计日志")
    await page.select_option("#f-action", "api_key.use")
    await page.click("text=筛选")
    rows = page.locator("#audit-entries tbody tr")
    assert await rows.count() == 1
    row_text = await rows.first.inner_text()
    assert "core-banking" in row_text and "GET /api/v1/me" in row_text
    await page.goto(console.url("/audit"))
    table = await page.inner_text("#audit-entries")
    assert "登录" in table and "失败" in table
    await shot(page, "audit")
    await page.click("text=校验日志链")
    assert "日志链完整" in await page.inner_text("#verify-result")
    await shot(page, "audit-verify")

    # Not found, inside the shell.
    await page.goto(console.url("/no-such-page"))
    await shot(page, "not-found")
    await desk.close()

    # A phone: 375 px wide, a compliance reviewer.
    phone = await browser.new_context(
        viewport={"width": 375, "height": 812}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    page = await phone.new_page()
    await page.goto(console.url("/login"))
    await no_horizontal_overflow(page)
    await shot(page, "login-375")
    await sign_in(page, console, "reviewer")
    await page.wait_for_url(console.url("/"))
    await no_horizontal_overflow(page)
    await shot(page, "home-375")
    await page.click("label.menu-button")
    assert await page.locator("nav >> text=审计日志").is_visible()
    await shot(page, "menu-375")
    await page.click("nav >> text=审计日志")
    await no_horizontal_overflow(page)
    await shot(page, "audit-375")
    # Forbidden: the same answer whether or not the thing exists.
    for path in ("/users", "/api-keys/1/revoke", "/api-keys"):
        resp = await page.goto(console.url(path))
        assert resp is not None and resp.status in (403, 405)
    await page.goto(console.url("/users"))
    assert "无权访问" in await page.inner_text("main")
    await no_horizontal_overflow(page)
    await shot(page, "forbidden-375")
    await phone.close()
