"""The inbound stream under concurrency: coalesced enqueues keep per-callback answers."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import pytest
import redis.asyncio as aioredis

from bot.schemas import Source
from bot.stream import InboundStream
from core import redis as core_redis
from core.crypto import Keyring


def _stream(client: aioredis.Redis) -> InboundStream:
    keyring = Keyring(keys={"k1": secrets.token_bytes(32)}, active_key_id="k1")
    return InboundStream(client, keyring, stream="siyu:test:stream")


async def test_concurrent_callbacks_each_get_their_own_outcome(
    redis_client: aioredis.Redis,
) -> None:
    stream = _stream(redis_client)
    # 300 callbacks at once, each MsgId delivered twice (WeCom's retry), and two
    # that reuse a nonce with another signature (a replay) — in the same batch.
    calls = [
        stream.enqueue(
            source=Source.CALLBACK,
            dedup_key=f"msg:{i % 150}",
            payload={"xml": f"<xml>{i}</xml>"},
            nonce=(f"n{i}", "sig", 600),
        )
        for i in range(300)
    ]
    calls += [
        stream.enqueue(
            source=Source.CALLBACK,
            dedup_key=f"msg:new{i}",
            payload={},
            nonce=(f"n{i}", "forged", 600),
        )
        for i in range(2)
    ]
    results = await asyncio.gather(*calls)

    assert Counter(r.outcome for r in results[:300]) == {"queued": 150, "duplicate": 150}
    assert [r.outcome for r in results[300:]] == ["replay", "replay"]
    assert await redis_client.xlen("siyu:test:stream") == 150
    queued_ids = {r.stream_id for r in results if r.outcome == "queued"}
    assert len(queued_ids) == 150 and None not in queued_ids


async def test_enqueue_survives_a_redis_that_lost_its_scripts(redis_client: aioredis.Redis) -> None:
    stream = _stream(redis_client)
    await stream.enqueue(source=Source.CALLBACK, dedup_key="msg:1", payload={})
    await redis_client.script_flush()  # what a restarted Redis looks like

    results = await asyncio.gather(
        *(
            stream.enqueue(source=Source.CALLBACK, dedup_key=f"msg:{i}", payload={})
            for i in range(1, 6)
        )
    )

    assert [r.outcome for r in results] == ["duplicate", "queued", "queued", "queued", "queued"]
    assert await redis_client.xlen("siyu:test:stream") == 5


async def test_every_waiting_callback_sees_redis_down() -> None:
    client = core_redis.client_for(f"unix:///nonexistent/{secrets.token_hex(4)}.sock")
    stream = _stream(client)
    try:
        results = await asyncio.gather(
            *(
                stream.enqueue(source=Source.CALLBACK, dedup_key=f"msg:{i}", payload={})
                for i in range(3)
            ),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    # The receiver answers 503 on these, so WeCom retries.
    assert all(isinstance(r, aioredis.RedisError | OSError) for r in results)


@pytest.mark.parametrize("n", [1, 2])
async def test_small_batches_are_not_held_back(redis_client: aioredis.Redis, n: int) -> None:
    stream = _stream(redis_client)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                stream.enqueue(source=Source.ARCHIVE, dedup_key=f"arc:{i}", payload={"i": i})
                for i in range(n)
            )
        ),
        timeout=5,
    )
    assert [r.outcome for r in results] == ["queued"] * n
