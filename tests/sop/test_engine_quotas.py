"""Quotas shared through Redis: member app-message caps, mass-send allowance, API pacing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from core.redis import Keyspace
from sop.engine.quotas import ApiPacer, MassSendAllowance, MemberAppQuota

T0 = datetime(2026, 9, 15, 2, 0, tzinfo=UTC).timestamp()  # 10:00 Beijing


async def test_member_cap_per_minute_and_hour(redis_client: aioredis.Redis) -> None:
    q = MemberAppQuota(redis_client, keys=Keyspace("t"), minute_cap=3, hour_cap=5)
    got = [await q.take("zhangwei", ref=f"m{i}", now=T0 + i) for i in range(4)]
    assert [s.ok for s in got] == [True, True, True, False]
    # The 4th fits once the first leaves the minute: 60 s after T0, 57 s after T0+3.
    assert got[3].wait_s == pytest.approx(57, abs=0.01)
    assert await q.free("zhangwei", now=T0 + 3) == 0
    assert (await q.take("zhangwei", ref="m3", now=T0 + 60.5)).ok
    assert (await q.take("zhangwei", ref="m4", now=T0 + 61)).ok
    # Five in the hour: the sixth waits for the first to leave the hour.
    sixth = await q.take("zhangwei", ref="m5", now=T0 + 200)
    assert not sixth.ok and sixth.wait_s == pytest.approx(3600 - 200, abs=0.01)
    # Other members have their own caps.
    assert (await q.take("lina", ref="x", now=T0 + 200)).ok


async def test_member_take_is_idempotent_by_ref(redis_client: aioredis.Redis) -> None:
    q = MemberAppQuota(redis_client, keys=Keyspace("t"), minute_cap=2, hour_cap=100)
    assert (await q.take("u", ref="row1", now=T0)).ok
    # A re-check of the same row re-times it instead of counting it twice.
    assert (await q.take("u", ref="row1", now=T0 + 1)).ok
    assert await q.free("u", now=T0 + 1) == 1
    assert (await q.take("u", ref="row2", now=T0 + 2)).ok
    assert not (await q.take("u", ref="row3", now=T0 + 3)).ok
    await q.release("u", ref="row2")
    assert (await q.take("u", ref="row3", now=T0 + 3)).ok


async def test_member_caps_never_above_wecoms(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="minute_cap"):
        MemberAppQuota(redis_client, keys=Keyspace("t"), minute_cap=31, hour_cap=10)
    with pytest.raises(ValueError, match="hour_cap"):
        MemberAppQuota(redis_client, keys=Keyspace("t"), minute_cap=30, hour_cap=1001)


async def test_concurrent_takers_never_exceed_the_cap(redis_client: aioredis.Redis) -> None:
    q = MemberAppQuota(redis_client, keys=Keyspace("t"), minute_cap=30, hour_cap=1000)
    # Several processes' worth of clients racing for one member in the same second.
    clients = [aioredis.Redis(connection_pool=redis_client.connection_pool) for _ in range(4)]
    quotas = [MemberAppQuota(c, keys=Keyspace("t"), minute_cap=30, hour_cap=1000) for c in clients]
    results = await asyncio.gather(
        *(quotas[i % 4].take("u", ref=f"r{i}", now=T0 + i / 1000) for i in range(100))
    )
    assert sum(s.ok for s in results) == 30
    assert await q.free("u", now=T0 + 1) == 0


async def test_mass_send_allowance_one_a_beijing_day(redis_client: aioredis.Redis) -> None:
    a = MassSendAllowance(redis_client, keys=Keyspace("t"), per_day=1)
    assert await a.reserve("wmCust1", ref="touch:1", now=T0)
    assert await a.reserve("wmCust1", ref="touch:1", now=T0 + 5)  # the same touch again
    assert not await a.reserve("wmCust1", ref="touch:2", now=T0 + 10)
    assert await a.reserve("wmCust2", ref="touch:3", now=T0 + 10)
    # 23:59 Beijing is still the same day; 00:00 the next is a new one.
    late = datetime(2026, 9, 15, 15, 59, tzinfo=UTC).timestamp()
    assert not await a.reserve("wmCust1", ref="touch:2", now=late)
    assert await a.reserve("wmCust1", ref="touch:2", now=late + 60)
    # A cancelled touch gives its allowance back.
    await a.release("wmCust2", ref="touch:3", now=T0)
    assert await a.reserve("wmCust2", ref="touch:4", now=T0 + 20)


async def test_api_pacer_fills_minutes_in_order(redis_client: aioredis.Redis) -> None:
    p = ApiPacer(redis_client, keys=Keyspace("t"), per_minute={"message/send": 100}, default=50)
    now = T0 + 30  # half way through a minute
    first = await p.plan("message/send", 150, now=now)
    assert len(first) == 150
    assert first[:100] == [datetime.fromtimestamp(now, UTC)] * 100
    assert first[100:] == [datetime.fromtimestamp(T0 + 60, UTC)] * 50
    # Another process planning now gets what is left, never more than the limit a minute.
    second = await p.plan("message/send", 100, now=now + 1)
    per_minute: dict[datetime, int] = {}
    for at in first + second:
        key = datetime.fromtimestamp(at.timestamp() // 60 * 60, UTC)
        per_minute[key] = per_minute.get(key, 0) + 1
    assert max(per_minute.values()) == 100
    assert sum(per_minute.values()) == 250
    assert p.limit("externalcontact/add_msg_template") == 50
