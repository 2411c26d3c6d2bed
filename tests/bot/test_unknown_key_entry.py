"""A stream entry sealed with a key id a worker lacks waits; it is never dead-lettered.

During a key rotation a receiver may seal with the new key before every worker has it,
and an operator may be restoring a lost key file: the entry can succeed later, so it is
retried (backing off) and stored by the first worker given the key.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from bot import models
from bot.archive import ingest_records
from bot.flows import StoreDeps
from bot.keys import ANALYZER, HOOKS, KEYRING, METRICS, STREAM
from bot.pipeline import Pipeline
from bot.stream import InboundStream
from bot.worker import Worker
from core.crypto import Keyring
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


async def test_entry_sealed_with_an_unknown_key_id_waits_instead_of_dead_lettering(
    edge: Edge,
) -> None:
    userid, ext = a_relation(edge)
    app = edge.app
    redis: aioredis.Redis = app[STREAM].redis
    ours = app[KEYRING]
    # A receiver that already has the rotation's new key seals with it.
    rotated = Keyring(keys={**ours.keys, "kNEW": secrets.token_bytes(32)}, active_key_id="kNEW")
    sp = edge.settings.pipeline
    ahead = InboundStream(redis, rotated, stream=sp.stream, group=sp.group)
    report = await ingest_records(ahead, [record("rot1", ext, userid, "下个月到期的理财怎么续？")])
    assert report.accepted == 1

    now = [1_800_000_000.0]
    old_worker = Worker(
        stream=app[STREAM],
        pipeline=edge.worker.pipeline,
        settings=sp,
        metrics=app[METRICS],
        clock=lambda: now[0],
    )
    for _ in range(sp.max_deliveries + 3):  # far more deliveries than a dead letter takes
        await old_worker.run_once(block_ms=None)
        now[0] += 3600  # past any back-off
    assert await models.DeadLetter.all().count() == 0
    assert (await redis.xpending(sp.stream, sp.group))["pending"] == 1

    # A worker given the new key stores it.
    new_worker = Worker(
        stream=InboundStream(redis, rotated, stream=sp.stream, group=sp.group),
        pipeline=Pipeline(
            analyzer=app[ANALYZER],
            deps=StoreDeps(
                keyring=rotated, hooks=app[HOOKS], agent_id=edge.settings.wecom.agent_id
            ),
            metrics=app[METRICS],
        ),
        settings=sp,
        metrics=app[METRICS],
        clock=lambda: now[0],
    )
    await new_worker.run_once(block_ms=None)
    assert await models.Message.filter(msgid="rot1").count() == 1
    assert (await redis.xpending(sp.stream, sp.group))["pending"] == 0
