"""WeCom unreachable: the client backs off instead of storming ``gettoken``.

Seen live: with WeCom unreachable every outbox row and lookup asked for a token, ~91
``gettoken`` requests a second and 45k log lines in 7 minutes.  Here the sandbox is down
(a port nobody listens on) or answers a gateway's 503, time is an injected clock, and
the tests count the requests that left the process and the log lines written.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.sandbox import SandboxState, start_fake_wecom
from bot.wecom.client import (
    WeComClient,
    WeComError,
    WeComRateLimited,
    WeComUnavailable,
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    state: SandboxState
    base_url: str
    session: aiohttp.ClientSession
    redis: aioredis.Redis
    clock: FakeClock
    # Requests that left this process, by API (whether anything answered or not).
    sent: Counter[str] = field(default_factory=Counter)

    def client(self, **overrides: object) -> WeComClient:
        async def no_sleep(seconds: float) -> None:
            self.clock.advance(seconds)

        kwargs: dict[str, object] = {
            "session": self.session,
            "redis": self.redis,
            "corp_id": self.state.corp_id,
            "base_url": self.base_url,
            "secrets": self.state.secrets,
            "agent_id": self.state.agent_id,
            "clock": self.clock,
            "sleep": no_sleep,
            "timeout_s": 5.0,
        }
        kwargs.update(overrides)
        return WeComClient(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def env(redis_client: aioredis.Redis) -> AsyncIterator[Env]:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    state.seed_demo(random.Random(7))
    runner, base_url = await start_fake_wecom(state)
    sent: Counter[str] = Counter()

    async def on_request_start(
        _session: aiohttp.ClientSession,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        sent[params.url.path.removeprefix("/cgi-bin/")] += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield Env(state, base_url, session, redis_client, clock, sent)
    await runner.cleanup()


def closed_port_url() -> str:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def hammer(client: WeComClient, clock: FakeClock, *, seconds: float, per_s: int) -> int:
    """Call as a busy outbox would: ``per_s`` calls every simulated second; count failures."""
    failed = 0
    for _ in range(int(seconds * per_s)):
        try:
            await client.get_user("zhangwei")
        except WeComError as exc:
            assert exc.retryable
            failed += 1
        clock.advance(1 / per_s)
    return failed


def client_log_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.wecom.client"]


# ----------------------------------------------------------------- gettoken


@pytest.mark.parametrize("outage", ["down", "answering 503"])
async def test_wecom_unreachable_for_7_minutes_costs_a_few_gettokens_and_log_lines(
    env: Env, caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if outage == "down":
        client = env.client(base_url=closed_port_url())
    else:
        env.state.start_outage(503)
        client = env.client()
    # Two processes sharing Redis: the second repeats the first one's failure.
    other = env.client(base_url=client._base_url)

    failed = await hammer(client, env.clock, seconds=420, per_s=5)
    with pytest.raises(WeComError):
        await other.get_user("wangfang")

    assert failed == 2100
    # Back-off doubling from 1 s to a minute: ~12 attempts in 7 minutes, not 2,100.
    assert env.sent["gettoken"] <= 15
    assert env.sent["user/get"] == 0
    lines = client_log_lines(caplog)
    assert len(lines) <= 2 * 15 + 2
    assert sum("backing off" in r.getMessage() for r in lines) == 1


async def test_gettoken_back_off_ends_when_wecom_answers_again(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = env.client()
    env.state.start_outage(503)
    await hammer(client, env.clock, seconds=30, per_s=5)
    env.state.end_outage()

    env.clock.advance(61)  # past the longest back-off
    assert (await client.get_user("zhangwei"))["userid"] == "zhangwei"
    assert (await client.get_user("wangfang"))["userid"] == "wangfang"

    assert env.state.calls["user/get"] == 2
    messages = [r.getMessage() for r in client_log_lines(caplog)]
    assert sum("gettoken recovered" in m for m in messages) == 1


async def test_a_wrong_secret_is_not_asked_again_for_every_call(env: Env) -> None:
    client = env.client(secrets={"app": "wrong-secret"})
    errors: list[WeComError] = []
    for _ in range(30):
        try:
            await client.get_user("zhangwei")
        except WeComError as exc:
            errors.append(exc)

    assert [e.errcode for e in errors] == [40001] * 30  # WeCom's answer, repeated as it was
    assert not any(e.retryable for e in errors)
    assert env.state.calls["gettoken"] == 1

    env.clock.advance(1.5)
    with pytest.raises(WeComError):
        await client.get_user("zhangwei")
    assert env.state.calls["gettoken"] == 2


# ------------------------------------------------------------ circuit breaker


async def test_breaker_per_api_opens_once_probes_and_closes(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = env.client(breaker_threshold=5, breaker_open_s=5.0)
    await client.get_user("zhangwei")  # a token is cached: only user/get is at stake
    env.state.start_outage(503)

    refused: list[WeComUnavailable] = []
    for _ in range(50):
        try:
            await client.get_user("zhangwei")
        except WeComUnavailable as exc:
            refused.append(exc)
        except WeComError:
            pass
        env.clock.advance(0.01)

    assert env.state.calls["user/get"] == 1 + 5  # the good call, then 5 failures: open
    assert len(refused) == 45
    # Not sent, so the outbox may resend even non-idempotent writes, after a while.
    assert isinstance(refused[0], WeComRateLimited) and refused[0].retry_after_s > 0
    # Another API keeps its own breaker.
    with pytest.raises(WeComError):
        await client.send_app_message(touser="zhangwei", content="x")
    assert env.state.calls["message/send"] == 1

    # Half-open: one probe, however many callers are waiting; it fails, the wait doubles.
    env.clock.advance(5.0)
    results = await asyncio.gather(
        *(client.get_user("zhangwei") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, WeComError) for r in results)
    assert env.state.calls["user/get"] == 7
    env.clock.advance(5.0)
    with pytest.raises(WeComUnavailable):
        await client.get_user("zhangwei")
    assert env.state.calls["user/get"] == 7

    env.state.end_outage()
    env.clock.advance(5.0)  # 10 s after the failed probe
    assert (await client.get_user("zhangwei"))["userid"] == "zhangwei"
    assert (await client.get_user("zhangwei"))["userid"] == "zhangwei"
    assert env.state.calls["user/get"] == 9

    messages = [r.getMessage() for r in client_log_lines(caplog)]
    assert sum("circuit opened" in m for m in messages) == 1
    assert sum("circuit closed" in m for m in messages) == 1
    # 5 failures before opening, the message/send failure, one failed probe: no line per refusal.
    assert len(messages) <= 12


async def test_a_4xx_answer_is_not_an_outage(env: Env) -> None:
    client = env.client(breaker_threshold=2)
    for _ in range(5):
        with pytest.raises(WeComError) as info:
            await client.call("no/such/api")
        assert not isinstance(info.value, WeComUnavailable)
    assert env.sent["no/such/api"] == 5
