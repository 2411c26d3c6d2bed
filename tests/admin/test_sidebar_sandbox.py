"""The sandbox's WeCom identity for H5 pages, and the edge's calls to it.

OAuth (the authorize redirect, ``auth/getuserinfo`` with single-use 5-minute codes), the
app's jsapi_ticket (7,200 s, 100 fetches an hour per app → 45009) and the ticket cache
that keeps siyu inside that limit — driven by a controlled clock, never by sleeping.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.sandbox import SandboxState, start_fake_wecom
from bot.wecom.client import WeComClient, WeComError, WeComRateLimited
from bot.wecom.oauth import (
    AgentTicketCache,
    agent_config_signature,
    authorize_url,
    oauth_identity,
)
from core.crypto import Keyring


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _no_sleep(_: float) -> None:
    return None


@dataclass
class Sandbox:
    state: SandboxState
    base_url: str
    session: aiohttp.ClientSession
    clock: FakeClock
    client: WeComClient
    redis: aioredis.Redis

    async def authorize(self, redirect_uri: str, *, state: str = "s1", **extra: str) -> str:
        """The page WeCom would send the member to next (its Location), unfollowed."""
        url = authorize_url(
            base_url=self.base_url,
            corp_id=self.state.corp_id,
            agent_id=self.state.agent_id,
            redirect_uri=redirect_uri,
            state=state,
        )
        if extra:
            url = url.replace(
                "#wechat_redirect", "&" + "&".join(f"{k}={v}" for k, v in extra.items())
            )
        async with self.session.get(url, allow_redirects=False) as resp:
            if resp.status != 302:
                return "page:" + await resp.text()
            return resp.headers["Location"]

    async def raw(self, api: str, **params: str) -> dict[str, Any]:
        token = await self.client._access_token("app")
        async with self.session.get(
            f"{self.base_url}/cgi-bin/{api}", params={"access_token": token, **params}
        ) as resp:
            body: dict[str, Any] = await resp.json()
            return body


@pytest.fixture
async def sandbox(redis_client: aioredis.Redis) -> AsyncIterator[Sandbox]:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    state.seed_demo(random.Random(7))
    runner, base_url = await start_fake_wecom(state)
    async with aiohttp.ClientSession() as session:
        client = WeComClient(
            session=session,
            redis=redis_client,
            corp_id=state.corp_id,
            base_url=base_url,
            secrets=state.secrets,
            agent_id=state.agent_id,
            clock=clock,
            sleep=_no_sleep,
        )
        yield Sandbox(state, base_url, session, clock, client, redis_client)
    await runner.cleanup()


def _code_of(location: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(location).query)
    return query["code"][0], query["state"][0]


# ------------------------------------------------------------------ OAuth


async def test_authorize_sends_the_signed_in_member_back_with_a_code(sandbox: Sandbox) -> None:
    sandbox.state.oauth_member = "zhangwei"
    location = await sandbox.authorize("http://127.0.0.1:9/sidebar/oauth?next=%2Fsidebar%2F")
    assert location.startswith("http://127.0.0.1:9/sidebar/oauth?")
    code, state = _code_of(location)
    assert state == "s1"
    # The redirect keeps the page's own query.
    assert parse_qs(urlsplit(location).query)["next"] == ["/sidebar/"]
    identity = await oauth_identity(sandbox.client, code)
    assert identity.userid == "zhangwei"


async def test_a_code_is_good_once(sandbox: Sandbox) -> None:
    sandbox.state.oauth_member = "wangfang"
    code, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    assert (await oauth_identity(sandbox.client, code)).userid == "wangfang"
    with pytest.raises(WeComError) as info:
        await oauth_identity(sandbox.client, code)
    assert info.value.errcode == 40029


async def test_a_code_expires_after_five_minutes(sandbox: Sandbox) -> None:
    sandbox.state.oauth_member = "wangfang"
    early, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    late, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    sandbox.clock.advance(299)
    assert (await oauth_identity(sandbox.client, early)).userid == "wangfang"
    sandbox.clock.advance(2)
    with pytest.raises(WeComError) as info:
        await oauth_identity(sandbox.client, late)
    assert info.value.errcode == 40029


async def test_getuserinfo_refuses_unknown_and_missing_codes(sandbox: Sandbox) -> None:
    assert (await sandbox.raw("auth/getuserinfo", code="nope"))["errcode"] == 40029
    assert (await sandbox.raw("auth/getuserinfo"))["errcode"] == 41008


async def test_old_casing_and_non_members_are_understood(sandbox: Sandbox) -> None:
    sandbox.state.oauth_member = "lina"
    sandbox.state.oauth_legacy_casing = True
    code, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    raw_code, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    assert "UserId" in await sandbox.raw("auth/getuserinfo", code=raw_code)
    assert (await oauth_identity(sandbox.client, code)).userid == "lina"

    sandbox.state.oauth_legacy_casing = False
    sandbox.state.oauth_member = ""  # someone outside the corp
    code, _ = _code_of(await sandbox.authorize("http://127.0.0.1:9/cb"))
    outsider = await oauth_identity(sandbox.client, code)
    assert outsider.userid is None and outsider.openid


async def test_authorize_refuses_an_untrusted_redirect_host(sandbox: Sandbox) -> None:
    sandbox.state.oauth_member = "zhangwei"
    sandbox.state.oauth_trusted_hosts = ["siyu.bank.example"]
    answer = await sandbox.authorize("https://evil.example/cb")
    assert answer.startswith("page:") and "50001" in answer
    assert not sandbox.state.oauth_codes


async def test_authorize_asks_who_when_no_member_is_signed_in(sandbox: Sandbox) -> None:
    answer = await sandbox.authorize("http://127.0.0.1:9/cb")
    assert answer.startswith("page:") and "张伟" in answer and "as_member=zhangwei" in answer
    location = await sandbox.authorize("http://127.0.0.1:9/cb", as_member="zhangwei")
    code, _ = _code_of(location)
    assert (await oauth_identity(sandbox.client, code)).userid == "zhangwei"


# ------------------------------------------------------------------ jsapi_ticket


async def test_ticket_get_allows_one_hundred_fetches_an_hour_per_app(sandbox: Sandbox) -> None:
    first = await sandbox.raw("ticket/get", type="agent_config")
    assert first["errcode"] == 0 and first["expires_in"] == 7200 and first["ticket"]
    for _ in range(99):
        assert (await sandbox.raw("ticket/get", type="agent_config"))["errcode"] == 0
    assert (await sandbox.raw("ticket/get", type="agent_config"))["errcode"] == 45009
    sandbox.clock.advance(3600)
    assert (await sandbox.raw("ticket/get", type="agent_config"))["errcode"] == 0
    assert (await sandbox.raw("ticket/get", type="jsapi"))["errcode"] == 40058


async def test_tickets_expire_after_their_7200_seconds(sandbox: Sandbox) -> None:
    ticket = (await sandbox.raw("ticket/get", type="agent_config"))["ticket"]
    assert [t.ticket for t in sandbox.state.valid_jsapi_tickets()] == [ticket]
    sandbox.clock.advance(7200)
    assert sandbox.state.valid_jsapi_tickets() == []


async def test_the_ticket_cache_fetches_once_per_lifetime(sandbox: Sandbox) -> None:
    keyring = Keyring(keys={"t": os.urandom(32)}, active_key_id="t")
    cache = AgentTicketCache(
        redis=sandbox.redis, client=sandbox.client, keyring=keyring, clock=sandbox.clock
    )
    one = await cache.ticket()
    assert await cache.ticket() == one
    # Another process (another cache object) reads the same ticket from Redis.
    other = AgentTicketCache(
        redis=sandbox.redis, client=sandbox.client, keyring=keyring, clock=sandbox.clock
    )
    assert await other.ticket() == one
    assert sandbox.state.calls["ticket/get"] == 1
    # Sealed at rest: a copy of Redis does not hand out the ticket.
    key = f"siyu:wecom:{sandbox.state.corp_id}:agent-ticket:{sandbox.state.agent_id}"
    assert one.encode() not in (await sandbox.redis.get(key) or b"")
    # Renewed a margin before WeCom's 7,200 s run out.
    sandbox.clock.advance(7200 - 300)
    two = await cache.ticket()
    assert two != one and sandbox.state.calls["ticket/get"] == 2


async def test_the_ticket_cache_never_spends_more_than_the_hours_budget(sandbox: Sandbox) -> None:
    cache = AgentTicketCache(
        redis=sandbox.redis,
        client=sandbox.client,
        keyring=None,
        clock=sandbox.clock,
        fetches_per_hour=2,
    )
    key = f"siyu:wecom:{sandbox.state.corp_id}:agent-ticket:{sandbox.state.agent_id}"
    for _ in range(2):
        await cache.ticket()
        await sandbox.redis.delete(key)  # lost (a flushed Redis): fetch again
    with pytest.raises(WeComRateLimited):
        await cache.ticket()
    assert sandbox.state.calls["ticket/get"] == 2


def test_the_signature_is_wecoms_sha1_over_the_page_url_without_its_fragment() -> None:
    # The worked example of WeCom's JS-SDK 签名算法 page.
    ticket = (
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    )
    url = "http://mp.weixin.qq.com?params=value"
    expected = "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    kw = {"ticket": ticket, "nonce": "Wm3WZYTPz0wzccnW", "timestamp": 1414587457}
    assert agent_config_signature(url=url, **kw) == expected
    assert agent_config_signature(url=url + "#section", **kw) == expected
