"""WeComClient against the real fake WeCom server on loopback and a real Redis.

Time is a controlled clock shared by the sandbox and the client's token bucket; the
client's sleeps are recorded (and advance that clock) instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.sandbox import SandboxState, start_fake_wecom
from bot.wecom.client import (
    ERRCODE_TRANSPORT,
    WeComClient,
    WeComError,
    WeComRateLimited,
    WeComTransportError,
    is_retryable,
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """Stands in for asyncio.sleep: records the delay and moves the clock on."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


class Env:
    def __init__(
        self,
        state: SandboxState,
        base_url: str,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis,
        clock: FakeClock,
    ) -> None:
        self.state = state
        self.base_url = base_url
        self.session = session
        self.redis = redis
        self.clock = clock
        self.sleeps = Sleeps(clock)

    def client(self, **overrides: object) -> WeComClient:
        kwargs: dict[str, object] = {
            "session": self.session,
            "redis": self.redis,
            "corp_id": self.state.corp_id,
            "base_url": self.base_url,
            "secrets": self.state.secrets,
            "agent_id": self.state.agent_id,
            "clock": self.clock,
            "sleep": self.sleeps,
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
    async with aiohttp.ClientSession() as session:
        yield Env(state, base_url, session, redis_client, clock)
    await runner.cleanup()


# ------------------------------------------------------------------- tokens


async def test_token_cached_in_redis_and_shared_by_two_clients(env: Env) -> None:
    first, second = env.client(), env.client()

    assert (await first.get_user("zhangwei"))["name"] == "张伟"
    assert (await second.get_user("wangfang"))["name"] == "王芳"

    assert env.state.calls["gettoken"] == 1
    key = f"siyu:wecom:{env.state.corp_id}:token:app"
    ttl = await env.redis.ttl(key)
    assert 0 < ttl <= 7200 - 300  # expires before WeCom's 7,200 s, with a margin


async def test_concurrent_first_calls_fetch_one_token(env: Env) -> None:
    clients = [env.client(), env.client(), env.client()]
    calls = [c.get_user("zhangwei") for c in clients for _ in range(8)]

    results = await asyncio.gather(*calls)

    assert all(r["userid"] == "zhangwei" for r in results)
    assert env.state.calls["gettoken"] == 1


async def test_externalcontact_apis_use_the_contact_secret_when_configured(env: Env) -> None:
    with_contact = env.client()
    assert with_contact.secret_kind_for("externalcontact/get") == "contact"
    assert with_contact.secret_kind_for("message/send") == "app"
    await with_contact.list_external_contacts("zhangwei")
    assert await env.redis.exists(f"siyu:wecom:{env.state.corp_id}:token:contact")

    app_only = env.client(secrets={"app": env.state.secrets["app"]}, namespace="other")
    assert app_only.secret_kind_for("externalcontact/get") == "app"
    assert app_only.secret_kind_for("externalcontact/get", "contact") == "app"
    with pytest.raises(ValueError):
        app_only.secret_kind_for("user/get", "finance")
    assert (await app_only.list_external_contacts("zhangwei"))["external_userid"]


async def test_expired_token_is_refreshed_and_the_call_retried_once(env: Env) -> None:
    client = env.client()
    await client.get_user("zhangwei")

    env.clock.advance(7200)  # WeCom now answers 42001 while Redis still holds the token
    assert (await client.get_user("zhangwei"))["userid"] == "zhangwei"

    assert env.state.calls["gettoken"] == 2
    assert env.state.calls["user/get"] == 3  # ok, 42001, retried ok


async def test_invalidated_token_40014_is_refreshed(env: Env) -> None:
    client = env.client()
    await client.get_user("zhangwei")
    env.state.invalidate_tokens()

    await client.get_user("zhangwei")

    assert env.state.calls["gettoken"] == 2


async def test_a_second_token_error_is_raised_not_looped(env: Env) -> None:
    client = env.client()
    env.state.inject("user/get", 40014, times=2)

    with pytest.raises(WeComError) as info:
        await client.get_user("zhangwei")

    assert info.value.errcode == 40014
    assert env.state.calls["user/get"] == 2


async def test_invalidation_keeps_a_newer_token(env: Env) -> None:
    client = env.client()
    key = f"siyu:wecom:{env.state.corp_id}:token:app"
    await env.redis.set(key, "token-another-process-just-fetched")

    # A slow caller reports the token it used, which is no longer the cached one.
    await client._invalidate_token("app", "older-token-that-failed")

    assert await env.redis.get(key) == b"token-another-process-just-fetched"


async def test_bad_secret_raises_40001_without_retry(env: Env) -> None:
    client = env.client(secrets={"app": "wrong-secret"})

    with pytest.raises(WeComError) as info:
        await client.get_user("zhangwei")

    assert info.value.errcode == 40001
    assert not info.value.retryable
    assert env.state.calls["user/get"] == 0


# ------------------------------------------------------------- error codes


async def test_busy_is_retried_with_backoff_then_succeeds(env: Env) -> None:
    client = env.client()
    env.state.inject("user/get", -1, times=2)

    assert (await client.get_user("zhangwei"))["userid"] == "zhangwei"

    assert env.state.calls["user/get"] == 3
    assert env.sleeps.delays == [0.5, 1.0]


async def test_persistent_busy_gives_up_after_three_retries(env: Env) -> None:
    client = env.client()
    env.state.inject("user/get", -1, times=10)

    with pytest.raises(WeComError) as info:
        await client.get_user("zhangwei")

    assert info.value.errcode == -1
    assert info.value.retryable
    assert env.state.calls["user/get"] == 4  # the call and 3 retries
    assert env.sleeps.delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("errcode", [45009, 45033])
async def test_wecom_rate_limit_raises_with_retry_after(env: Env, errcode: int) -> None:
    client = env.client()
    env.state.inject("message/send", errcode)

    with pytest.raises(WeComRateLimited) as info:
        await client.send_app_message(touser="zhangwei", content="提醒")

    assert info.value.errcode == errcode
    assert info.value.retry_after_s >= 60
    assert info.value.retryable
    assert env.state.calls["message/send"] == 1  # backing off is the outbox's job


async def test_sandbox_frequency_limit_surfaces_as_rate_limited(env: Env) -> None:
    client = env.client()
    env.state.rate_limits["user/get"] = (2, 60.0)
    await client.get_user("zhangwei")
    await client.get_user("zhangwei")

    with pytest.raises(WeComRateLimited):
        await client.get_user("zhangwei")


async def test_untrusted_ip_60020_raises_at_once(env: Env) -> None:
    client = env.client()
    env.state.inject("user/get", 60020)

    with pytest.raises(WeComError) as info:
        await client.get_user("zhangwei")

    assert info.value.errcode == 60020
    assert not info.value.retryable
    assert not isinstance(info.value, WeComRateLimited)
    assert env.state.calls["user/get"] == 1
    assert env.sleeps.delays == []


async def test_parameter_errors_are_not_retryable(env: Env) -> None:
    client = env.client()
    with pytest.raises(WeComError) as info:
        await client.get_user("nobody")
    assert info.value.errcode == 60111
    assert "userid not found" in info.value.errmsg
    assert not is_retryable(info.value.errcode)


async def test_http_error_is_a_retryable_transport_error(env: Env) -> None:
    client = env.client()
    with pytest.raises(WeComTransportError) as info:
        await client.call("no/such/api")
    assert info.value.errcode == ERRCODE_TRANSPORT
    assert info.value.retryable
    assert "404" in info.value.errmsg


async def test_unreachable_server_is_a_retryable_transport_error(env: Env) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = env.client(base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(WeComTransportError) as info:
        await client.get_user("zhangwei")

    assert info.value.retryable


# ------------------------------------------------------------ rate limiting


async def test_token_bucket_makes_the_call_past_capacity_wait(env: Env) -> None:
    # Capacity 2, one token every 2 s; two clients (two processes) share the bucket.
    limits = {"user/get": (2, 0.5)}
    first, second = env.client(rate_limits=limits), env.client(rate_limits=limits)

    await first.get_user("zhangwei")
    await second.get_user("zhangwei")
    assert env.sleeps.delays == []

    await second.get_user("zhangwei")

    assert len(env.sleeps.delays) == 1
    assert env.sleeps.delays[0] == pytest.approx(2.0)
    assert env.state.calls["user/get"] == 3


async def test_token_bucket_is_per_api(env: Env) -> None:
    client = env.client(rate_limits={"user/get": (1, 0.5)})
    await client.get_user("zhangwei")
    await client.list_users(2)
    await client.list_users(2)
    assert env.sleeps.delays == []


async def test_token_bucket_refuses_when_the_wait_is_too_long(env: Env) -> None:
    client = env.client(rate_limits={"user/get": (1, 0.01)}, max_rate_wait_s=5.0)
    await client.get_user("zhangwei")

    with pytest.raises(WeComRateLimited) as info:
        await client.get_user("zhangwei")

    assert info.value.retry_after_s == pytest.approx(100.0)
    assert env.state.calls["user/get"] == 1  # the refused call never reached WeCom
    assert env.sleeps.delays == []


async def test_bucket_refills_with_time(env: Env) -> None:
    client = env.client(rate_limits={"user/get": (1, 1.0)})
    await client.get_user("zhangwei")
    env.clock.advance(1.0)
    await client.get_user("zhangwei")
    assert env.sleeps.delays == []


# --------------------------------------------------------------- helpers


async def test_typed_helpers_speak_wecom_shapes(env: Env) -> None:
    client = env.client()
    state = env.state
    ext = next(iter(state.follows["zhangwei"]))

    sent = await client.send_app_message(touser=["zhangwei", "ghost"], content="您有一条待办")
    assert sent["invaliduser"] == "ghost"
    assert [m.touser for m in state.delivered_app_messages()] == ["zhangwei"]

    contact = await client.get_external_contact(ext)
    assert contact["external_contact"]["external_userid"] == ext
    assert any(f["userid"] == "zhangwei" for f in contact["follow_user"])

    batch = await client.batch_get_by_user(["zhangwei"])
    assert {
        row["external_contact"]["external_userid"] for row in batch["external_contact_list"]
    } == set(state.follows["zhangwei"])

    group = await client.add_corp_tag(group_name="活动参与", tags=[{"name": "理财沙龙"}])
    tag_id = group["tag_group"]["tag"][0]["id"]
    await client.edit_corp_tag(id=tag_id, name="理财沙龙2025")
    await client.mark_tag(userid="zhangwei", external_userid=ext, add_tag=[tag_id])
    tags = (await client.get_corp_tag_list(tag_id=[tag_id]))["tag_group"][0]["tag"]
    assert tags[0]["name"] == "理财沙龙2025"
    await client.del_corp_tag(group_id=[group["tag_group"]["group_id"]])
    assert not (await client.get_corp_tag_list(tag_id=[tag_id]))["tag_group"]

    task = await client.add_msg_template(
        sender="zhangwei", external_userid=[ext], text="本周市场观点"
    )
    result = await client.get_groupmsg_send_result(msgid=task["msgid"], userid="zhangwei")
    assert result["send_list"][0]["status"] == 1

    code = state.issue_welcome_code(userid="zhangwei", external_userid=ext)
    assert await client.send_welcome_msg(welcome_code=code, text="您好") == {
        "errcode": 0,
        "errmsg": "ok",
    }

    chats = await client.list_group_chats(owner_userids=["zhangwei"])
    chat_id = chats["group_chat_list"][0]["chat_id"]
    chat = await client.get_group_chat(chat_id, need_name=True)
    assert chat["group_chat"]["owner"] == "zhangwei"

    users = await client.list_users(2)
    assert "liuyang" in {u["userid"] for u in users["userlist"]}


# ----------------------------------------------------------------- secrets


async def test_secrets_and_tokens_never_reach_logs_or_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = env.client()
    errors: list[BaseException] = []

    await client.get_user("zhangwei")
    env.state.expire_tokens()
    await client.get_user("zhangwei")
    env.state.inject("user/get", -1, times=1)
    await client.get_user("zhangwei")
    for errcode in (60020, 45009, 40014, 40014):
        env.state.inject("user/get", errcode)
    for _ in range(3):
        try:
            await client.get_user("zhangwei")
        except WeComError as exc:
            errors.append(exc)
    try:
        await env.client(
            secrets={"app": "wrong-" + env.state.secrets["app"]}, namespace="x"
        ).get_user("zhangwei")
    except WeComError as exc:
        errors.append(exc)
    try:
        await client.call("no/such/api")
    except WeComError as exc:
        errors.append(exc)
    assert len(errors) == 5

    sensitive = [*env.state.secrets.values(), *env.state.tokens]
    assert len(env.state.tokens) >= 2
    rendered = (
        caplog.text + "".join(f"{e}{e!r}{e.__dict__}{e.__cause__!r}" for e in errors) + repr(client)
    )
    for record in caplog.records:
        rendered += repr(record.__dict__)
    for value in sensitive:
        assert value not in rendered


async def test_access_token_is_sealed_in_redis_and_still_shared(env: Env) -> None:
    """PIPL/ops: a copy of Redis (or its AOF) must not hand out API access."""
    import secrets as pysecrets

    from core.crypto import Keyring

    keyring = Keyring(keys={"t1": pysecrets.token_bytes(32)}, active_key_id="t1")
    first, second = env.client(keyring=keyring), env.client(keyring=keyring)
    await first.get_user("zhangwei")
    await second.get_user("wangfang")
    assert env.state.calls["gettoken"] == 1  # still one token for every process

    key = f"siyu:wecom:{env.state.corp_id}:token:app"
    stored = (await env.redis.get(key)).decode()
    issued = set(env.state.tokens)
    assert issued and not any(t in stored for t in issued)

    # 40014 invalidates the sealed entry it read, then fetches a new one.
    env.state.invalidate_tokens()
    await first.get_user("zhangwei")
    assert env.state.calls["gettoken"] == 2
    assert (await env.redis.get(key)).decode() != stored
