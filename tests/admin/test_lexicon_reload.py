"""Running processes follow a published lexicon overlay without a restart (bot.rules_overlay):
read before anything is analysed, polled afterwards, checked before it applies, handed to
the analyzer pool's worker processes with their next batch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from bot import rules_overlay
from compliance_nlp.overlay import Overlay
from core.settings import Settings
from tests.admin.console import PASSWORD, make_operator, signed_in_client, start_console

PRODUCT_LINE = "稳赢增利1号今天开放申购，欢迎了解"
SPARED = {"format": 1, "exceptions": [{"id": "EXC-0001", "phrase": "稳赢增利", "categories": []}]}


class Recorder:
    """An analyzer as the follower sees one: it only takes overlays."""

    def __init__(self) -> None:
        self.overlays: list[Overlay | None] = []
        self.changed = asyncio.Event()

    def set_overlay(self, overlay: Overlay | None) -> None:
        self.overlays.append(overlay)
        self.changed.set()

    @property
    def version(self) -> str | None:
        current = self.overlays[-1] if self.overlays else None
        return current.version if current else None


async def publish(version: str, document: dict[str, Any]) -> None:
    async with in_transaction() as conn:
        await rules_overlay.publish_overlay(
            conn=conn, version=version, document=json.dumps(document), published_by="test"
        )


async def test_the_newest_version_applies_at_once_and_each_new_one_on_refresh(db: None) -> None:
    follower = rules_overlay.OverlayFollower(interval_s=60)
    before = Recorder()
    await follower.follow(before)
    assert before.overlays == [None]  # nothing published: the shipped rules alone

    await publish("1", SPARED)
    assert await follower.refresh() is True
    assert before.version == "1"
    assert await follower.refresh() is False  # nothing new: nothing re-applied
    assert len(before.overlays) == 2

    late = Recorder()  # a second analyzer (the check's own pool) joins later
    await follower.follow(late)
    assert late.version == "1"

    await publish("2", {**SPARED, "segments": ["bank"]})
    assert await follower.refresh() is True
    assert before.version == late.version == "2"


async def test_a_version_that_does_not_apply_is_refused_and_the_current_kept(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    await publish("1", SPARED)
    follower = rules_overlay.OverlayFollower(interval_s=60)
    analyzer = Recorder()
    await follower.follow(analyzer)
    bad = {"format": 1, "terms": [{"id": "X-1", "term": "稳赚", "category": "no_such"}]}
    await publish("2", bad)
    assert await follower.refresh() is False
    assert analyzer.version == "1"
    assert "does not apply" in caplog.text
    assert await follower.refresh() is False  # logged once, not every poll


async def test_stand_ins_without_overlays_are_left_alone(db: None) -> None:
    follower = rules_overlay.OverlayFollower(interval_s=60)

    class Plain:
        async def analyze_many(self, items: Any, contexts: Any = None) -> list[Any]:
            return []

    await follower.follow(Plain())
    await publish("1", SPARED)
    assert await follower.refresh() is True  # tracked, applied to nobody


async def test_the_poll_loop_applies_a_version_published_elsewhere(db: None) -> None:
    follower = rules_overlay.OverlayFollower(interval_s=0.05)
    analyzer = Recorder()
    await follower.follow(analyzer)
    analyzer.changed.clear()
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    try:
        await publish("1", SPARED)
        await asyncio.wait_for(analyzer.changed.wait(), timeout=10)
        assert analyzer.version == "1"
    finally:
        stop.set()
        await task


async def test_a_running_api_process_and_its_pool_worker_follow_a_publish(
    console_settings: Settings,
    redis_client: object,
    db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's own analyzer pool (a worker process, no model), the check endpoint, and a
    version published by another process: honoured on the next poll, no restart."""
    monkeypatch.setattr(rules_overlay, "POLL_S", 0.1)
    console_settings.nlp.use_model = False
    console_settings.nlp.pool_size = 1
    console, closers = await start_console(console_settings, analyzer=None)
    try:
        await make_operator("advisor", name="adv", password=PASSWORD)
        client, token = await signed_in_client(console, "adv")
        async with client:

            async def flagged() -> bool:
                async with client.post(
                    console.url("/api/v1/compliance/check"),
                    json={"text": PRODUCT_LINE, "role": "advisor"},
                    headers={"X-CSRF-Token": token},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    return bool((await resp.json())["violations"])

            assert await flagged()
            await publish("1", SPARED)
            async with asyncio.timeout(20):
                while await flagged():  # noqa: ASYNC110 - polled over HTTP, as a client would
                    await asyncio.sleep(0.1)
    finally:
        for close in closers:
            await close()
