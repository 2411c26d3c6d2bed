"""「立即同步」on the tag library: the full pull and reconcile started from the console,
in the background, one at a time (a Redis lock), audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from core.models import AuditEntry
from core.settings import Settings
from tagging import jobs
from tagging.models import SyncRun, TagGroup
from tests.admin.console import Console, make_operator, signed_in_client, start_console
from tests.bot.outbox_fakes import FakeCorp
from tests.tagging.test_sync import corp

__all__ = ["corp"]  # fixtures


def wired_to(settings: Settings, corp: FakeCorp) -> Settings:
    """The console's settings with its WeCom client pointed at the sandbox."""
    settings.wecom.corp_id = corp.state.corp_id
    settings.wecom.api_base_url = corp.base_url
    settings.wecom.app_secret = SecretStr(corp.state.secrets["app"])
    settings.wecom.contact_secret = SecretStr(corp.state.secrets["contact"])
    settings.wecom.agent_id = corp.state.agent_id
    return settings


@pytest.fixture
async def wecom_console(
    console_settings: Settings, analyzer: object, corp: FakeCorp
) -> AsyncIterator[Console]:
    c, closers = await start_console(wired_to(console_settings, corp), analyzer=analyzer)
    try:
        yield c
    finally:
        for close in closers:
            await close()


async def finished_run() -> SyncRun:
    """The reconcile the console started, once it has finished (the request returned
    before it did)."""
    for _ in range(500):
        run = await SyncRun.filter(kind="reconcile").order_by("-id").first()
        if run is not None and run.finished_at is not None:
            return run
        await asyncio.sleep(0.02)
    raise AssertionError("the sync never finished")


async def test_sync_now_runs_in_the_background_once_at_a_time(
    wecom_console: Console, corp: FakeCorp, redis_client: Any
) -> None:
    await make_operator("marketing", name="ops", display_name="钱运营")
    client, csrf = await signed_in_client(wecom_console, "ops")
    async with client:
        async with client.get(wecom_console.url("/tags")) as page:
            assert "立即同步" in await page.text()
        async with client.post(
            wecom_console.url("/tags/sync"), data={"_csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and "notice=" in resp.headers["Location"]
        run = await finished_run()
        assert run.ok and run.changes  # the sandbox's corp tags came in
        assert await TagGroup.filter(origin="wecom").count() == len(corp.state.tag_groups)
        started = await AuditEntry.get(action="tagging.sync.start")
        assert (started.actor_kind, started.actor_name) == ("operator", "ops")
        assert await AuditEntry.filter(action="tagging.sync.reconcile").count() == 1
        # The lock is let go once the run ends: the page offers the button again.
        assert await redis_client.get(jobs.SYNC_NOW_KEY) is None

        # One is running (here, from another console process): a second is refused,
        # nothing starts, and the page shows the running one.
        await redis_client.set(
            jobs.SYNC_NOW_KEY, '{"by": "李运营", "at": "2026-12-06T01:00:00+00:00"}', ex=60
        )
        runs = await SyncRun.all().count()
        async with client.post(
            wecom_console.url("/tags/sync"), data={"_csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 409
            assert "已有一次同步正在进行" in await resp.text()
        async with client.get(wecom_console.url("/tags")) as page:
            text = await page.text()
            assert "李运营 于 09:00:00 发起" in text and "同步中…" in text
            assert 'hx-trigger="every 2s"' in text
        assert await SyncRun.all().count() == runs
        assert await AuditEntry.filter(action="tagging.sync.start").count() == 1


async def test_sync_now_without_wecom_says_so(console: Console) -> None:
    await make_operator("marketing", name="ops")
    client, csrf = await signed_in_client(console, "ops")
    async with client:
        async with client.get(console.url("/tags")) as page:
            assert "立即同步" not in await page.text()
        async with client.post(
            console.url("/tags/sync"), data={"_csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 409 and "未配置企业微信" in await resp.text()
    assert await SyncRun.all().count() == 0
