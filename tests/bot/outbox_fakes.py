"""A fake WeCom whose answers a test holds, releases or loses, for outbox dispatchers.

Each dispatcher gets a client of its own (as two schedulers would), all calling
one sandbox corp through a gate: the first request carrying a held text waits at
the fake server until the test releases it, so "a slow answer" is a step the test
takes, not a sleep.  A text in ``lose_answer`` is acted on by the fake WeCom and
then the connection is cut before the answer leaves: the request reached WeCom
and the caller cannot know it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bot import service as bot_service
from bot.jobs import OutboxDispatcher
from bot.outbox import NO_POLICIES, OutboxPolicies, Write
from bot.sandbox.fake_api import SandboxState, build_fake_wecom_app
from bot.wecom.client import WeComClient
from core.metrics import Metrics
from core.server import start_site
from core.settings import OutboxSettings


def text_of(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("content"), str):
        return str(text["content"])
    return None


@dataclass
class Gate:
    """A proxy in front of the fake WeCom that holds, counts and loses answers."""

    upstream: str = ""
    session: aiohttp.ClientSession | None = None
    held: set[str] = field(default_factory=set)
    lose_answer: set[str] = field(default_factory=set)
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    seen: Counter[str] = field(default_factory=Counter)
    _release: dict[str, asyncio.Event] = field(default_factory=dict)

    def release(self, text: str) -> None:
        self._release.setdefault(text, asyncio.Event()).set()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        raw = await request.read()
        text: str | None = None
        if raw:
            try:
                text = text_of(json.loads(raw))
            except ValueError:
                text = None
        if text is not None:
            self.seen[text] += 1
            if text in self.held and self.seen[text] == 1:
                self.arrived.put_nowait(text)
                await self._release.setdefault(text, asyncio.Event()).wait()
        async with self.session.request(
            request.method,
            f"{self.upstream}{request.path}",
            params=request.query,
            data=raw or None,
            headers={"Content-Type": "application/json"} if raw else None,
        ) as resp:
            body = await resp.read()
        if text is not None and text in self.lose_answer and request.transport is not None:
            request.transport.abort()  # WeCom acted; its answer is lost on the way back
        return web.Response(body=body, content_type="application/json")


@dataclass
class FakeCorp:
    state: SandboxState
    gate: Gate
    base_url: str
    session: aiohttp.ClientSession
    redis: aioredis.Redis

    def client(self, *, base_url: str | None = None) -> WeComClient:
        return WeComClient(
            session=self.session,
            redis=self.redis,
            corp_id=self.state.corp_id,
            base_url=base_url or self.base_url,
            secrets={"app": self.state.secrets["app"], "contact": self.state.secrets["contact"]},
            agent_id=self.state.agent_id,
            busy_retries=0,
        )

    def dispatcher(
        self,
        *,
        policies: OutboxPolicies = NO_POLICIES,
        settings: OutboxSettings | None = None,
        base_url: str | None = None,
        **kw: Any,
    ) -> OutboxDispatcher:
        return OutboxDispatcher(
            client=self.client(base_url=base_url),
            settings=settings or OutboxSettings(),
            metrics=Metrics(),
            policies=policies,
            **kw,
        )

    def customer_of(self, userid: str) -> str:
        return next(iter(self.state.follows[userid]))

    def mass_sends_with(self, text: str) -> int:
        return sum(1 for t in self.state.mass_sends.values() if t.text == text)

    def app_messages_with(self, text: str) -> int:
        """Every ``message/send`` WeCom received with this text (delivered or deduplicated)."""
        return sum(1 for m in self.state.app_messages if m.content.get("content") == text)


async def start_fake_corp(redis: aioredis.Redis) -> tuple[FakeCorp, Callable[[], Awaitable[None]]]:
    state = SandboxState(corp_id="wwtestcorp0000001")
    state.seed_demo(random.Random(1))
    runner, port = await start_site(build_fake_wecom_app(state), "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    gate = Gate(upstream=f"http://127.0.0.1:{port}", session=session)
    proxy = web.Application()
    proxy.router.add_route("*", "/{path:.*}", gate.forward)
    proxy_runner, proxy_port = await start_site(proxy, "127.0.0.1", 0)

    async def close() -> None:
        for text in list(gate.held):
            gate.release(text)
        await proxy_runner.cleanup()
        await session.close()
        await runner.cleanup()

    corp = FakeCorp(state, gate, f"http://127.0.0.1:{proxy_port}", session, redis)
    return corp, close


async def enqueue(key: str, write: Write, *, origin: str = "test", not_before: Any = None) -> int:
    from tortoise.transactions import in_transaction

    from bot import outbox

    async with in_transaction() as conn:
        item = await outbox.enqueue(
            conn, idem_key=key, write=write, origin=origin, not_before=not_before
        )
    assert item is not None
    return int(item.id)


def now() -> Any:
    return bot_service.now()
