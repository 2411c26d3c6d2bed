"""POST /api/v1/compliance/check as the sidebar and other systems call it: rate limits per
key and per advisor, and analyzer capacity of its own (a check never waits on intake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from admin import flows
from admin.permissions import load_table
from bot.keys import ANALYZER
from bot.precheck import CHECK_ANALYZER, CHECK_GATE, CheckBusy, CheckGate
from core.server import start_site
from core.settings import Settings
from siyu.app import create_app
from tests.admin.console import CLI, Console, make_operator, signed_in_client

TEXT = "这款理财保本保息，年化收益至少4.5%，闭着眼睛买都不会亏。"


class Blocked:
    """An analyzer that never answers until released: intake stuck on a long batch."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0
        self.texts: list[str] = []

    async def analyze_many(self, items: Any, contexts: Any = None, **_: Any) -> list[Any]:
        self.calls += 1
        self.texts += [text for text, _role in items]
        self.entered.set()
        await self.release.wait()
        raise RuntimeError("released")


async def _start(settings: Settings, **keys: Any) -> tuple[Console, Any]:
    analyzer = keys.pop("analyzer")
    app = create_app(settings, ("admin",), auto_migrate=True, analyzer=analyzer)
    for key, value in keys.items():
        app[{"check_analyzer": CHECK_ANALYZER}[key]] = value
    runner, port = await start_site(app, "127.0.0.1", 0)
    return Console(settings=settings, app=app, base=f"http://127.0.0.1:{port}"), runner


@pytest.fixture
async def limited(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[Console]:
    console_settings.check.per_key_per_minute = 3
    console_settings.check.per_operator_per_minute = 2
    console, runner = await _start(console_settings, analyzer=analyzer)
    try:
        yield console
    finally:
        await runner.cleanup()


async def _key(name: str) -> str:
    created = await flows.do_create_api_key(
        actor=CLI, source="test", name=name, scopes=["compliance:check"], table=load_table()
    )
    return created.plaintext


async def _check(
    console: Console, client: aiohttp.ClientSession, headers: dict[str, str]
) -> tuple[int, dict[str, Any], str]:
    async with client.post(
        console.url("/api/v1/compliance/check"),
        json={"text": TEXT, "role": "advisor"},
        headers=headers,
    ) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def test_each_key_has_its_own_minute(limited: Console) -> None:
    one, two = await _key("crm"), await _key("other-crm")
    async with limited.client() as client:
        seen = [await _check(limited, client, {"Authorization": f"Bearer {one}"}) for _ in range(4)]
        assert [s for s, _b, _r in seen] == [200, 200, 200, 429]
        status, body, retry_after = seen[-1]
        assert body["error"]["code"] == "rate_limited" and 1 <= int(retry_after) <= 61
        # The first answers were real checks.
        assert "guaranteed_return" in {v["category"] for v in seen[0][1]["violations"]}
        # Another key is not slowed by the first.
        status, _b, _r = await _check(limited, client, {"Authorization": f"Bearer {two}"})
        assert status == 200


async def test_each_advisor_has_their_own_minute(limited: Console) -> None:
    await make_operator("advisor", name="adv-a")
    await make_operator("advisor", name="adv-b")
    a, token_a = await signed_in_client(limited, "adv-a")
    b, token_b = await signed_in_client(limited, "adv-b")
    async with a, b:
        statuses = [(await _check(limited, a, {"X-CSRF-Token": token_a}))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await _check(limited, b, {"X-CSRF-Token": token_b}))[0] == 200


async def test_bad_input_does_not_count(limited: Console) -> None:
    key = await _key("crm")
    async with limited.client() as client:
        for _ in range(5):
            async with client.post(
                limited.url("/api/v1/compliance/check"),
                json={"role": "advisor"},
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                assert resp.status == 400
        assert (await _check(limited, client, {"Authorization": f"Bearer {key}"}))[0] == 200


async def test_a_check_never_waits_on_intake(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> None:
    """Intake's analyzer is stuck on a batch; the check answers from its own capacity."""
    intake = Blocked()
    console, runner = await _start(console_settings, analyzer=intake, check_analyzer=analyzer)
    try:
        key = await _key("crm")
        # Intake busy (a batch the pipeline handed its analyzer, never finishing).
        stuck = asyncio.ensure_future(console.app[ANALYZER].analyze_many([("x", "advisor")]))
        await asyncio.sleep(0)
        async with console.client() as client:
            status, body, _r = await asyncio.wait_for(
                _check(console, client, {"Authorization": f"Bearer {key}"}), timeout=60
            )
        assert status == 200 and body["violations"]
        assert TEXT not in intake.texts  # the check never went to intake's analyzer
    finally:
        intake.release.set()
        with pytest.raises(RuntimeError):
            await stuck
        await runner.cleanup()


async def test_checks_past_the_queue_are_told_to_come_back(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> None:
    console_settings.check.max_waiting = 1
    slow = Blocked()
    console, runner = await _start(console_settings, analyzer=analyzer, check_analyzer=slow)
    try:
        key = await _key("crm")
        headers = {"Authorization": f"Bearer {key}"}
        async with console.client() as client:
            running = asyncio.ensure_future(_check(console, client, headers))
            queued = asyncio.ensure_future(_check(console, client, headers))
            await asyncio.wait_for(slow.entered.wait(), timeout=30)
            gate = console.app[CHECK_GATE]
            for _ in range(3000):  # the second request is admitted to the queue
                if gate.waiting == 1:
                    break
                await asyncio.sleep(0.01)
            assert gate.waiting == 1
            status, body, retry_after = await _check(console, client, headers)
            assert (status, body["error"]["code"], retry_after) == (503, "busy", "1")
            slow.release.set()
            # The two admitted checks end (here in the analyzer's error), none was dropped
            # silently: each got an answer.
            answers = await asyncio.gather(running, queued, return_exceptions=True)
            assert all(not isinstance(a, BaseException) for a in answers)
    finally:
        await runner.cleanup()


class Pool:
    """A stand-in pool with an overlay, as compliance_nlp.pool.AnalyzerPool has."""

    def __init__(self) -> None:
        self.overlay: object = None
        self.seen: list[object] = []

    def set_overlay(self, overlay: object) -> None:
        self.overlay = overlay

    async def analyze_many(self, items: Any, contexts: Any = None) -> list[Any]:
        self.seen.append(self.overlay)
        return ["ok"]


async def test_a_separate_check_pool_follows_intakes_overlay() -> None:
    intake, own = Pool(), Pool()
    gate = CheckGate(own, slots=1, max_waiting=0, follow=intake)
    await gate.analyze("x", "advisor", None)
    intake.set_overlay("published-v2")
    await gate.analyze("x", "advisor", None)
    assert own.seen == [None, "published-v2"]


async def test_the_gate_refuses_when_full() -> None:
    slow = Blocked()
    gate = CheckGate(slow, slots=1, max_waiting=0)
    first = asyncio.ensure_future(gate.analyze("x", "advisor", None))
    await asyncio.sleep(0)
    with pytest.raises(CheckBusy):
        await gate.analyze("y", "advisor", None)
    slow.release.set()
    with pytest.raises(RuntimeError):
        await first
