"""An ingest call queues its records a batch at a time, not one Redis call per record.

Each record was queued with its own script call; under ``appendfsync always`` (the
embedded Redis) each waited for its own AOF fsync, and 1,000 archive records took 4 s
to queue, slower than the workers store them (issue 8, item 11).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis.exceptions

from bot.archive import ingest_records
from bot.keys import STREAM
from bot.stream import MAX_ENQUEUE_BATCH
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


def _count_scripts(stream: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each enqueue script call the stream makes from now on."""
    sizes: list[int] = []
    real = stream._execute

    async def counting(batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return list(await real(batch))

    monkeypatch.setattr(stream, "_execute", counting)
    return sizes


async def test_an_ingest_call_queues_its_records_a_batch_at_a_time(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    userid, ext = a_relation(edge)
    stream = edge.app[STREAM]
    records: list[Any] = [record(f"c{i:03d}", ext, userid, f"第{i}条") for i in range(300)]
    records.insert(100, {"msgid": "broken"})  # rejected with its index, the rest queued
    records.append(dict(records[0]))  # the same record twice in one call: queued once
    sizes = _count_scripts(stream, monkeypatch)
    report = await ingest_records(stream, records)
    assert (report.accepted, report.duplicate) == (300, 1)
    assert [e["index"] for e in report.rejected] == [100]
    assert sum(sizes) == 301
    assert len(sizes) <= math.ceil(301 / MAX_ENQUEUE_BATCH)
    # Queued in the order given: a question before the answer that follows it.
    entries = await stream.redis.xrange(stream.stream)
    keys = [fields[b"key"].decode() for _sid, fields in entries]
    assert keys == [f"arc:c{i:03d}" for i in range(300)]


async def test_redis_failing_during_an_ingest_call_fails_the_call(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller answers 503 (API) or exits non-zero (CLI) and the sender retries;
    what was queued before the failure is a duplicate then, never lost."""
    userid, ext = a_relation(edge)
    stream = edge.app[STREAM]
    records = [record(f"f{i:03d}", ext, userid, "你好") for i in range(MAX_ENQUEUE_BATCH + 5)]
    real = stream._execute
    calls = 0

    async def second_call_fails(batch: list[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis.exceptions.ConnectionError("Redis went away")
        return list(await real(batch))

    monkeypatch.setattr(stream, "_execute", second_call_fails)
    with pytest.raises(redis.exceptions.ConnectionError):
        await ingest_records(stream, records)
    monkeypatch.setattr(stream, "_execute", real)
    report = await ingest_records(stream, records)
    assert report.accepted + report.duplicate == len(records)
    assert report.accepted == 5 and report.duplicate == MAX_ENQUEUE_BATCH
