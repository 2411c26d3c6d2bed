"""Worker failures: one bad entry fails alone; infrastructure failures are never dead-lettered."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import asyncpg
import pytest
import redis.exceptions
from tortoise.exceptions import OperationalError, ValidationError

from bot import models
from bot.archive import archive_dedup_key
from bot.keys import STREAM
from bot.schemas import Source
from bot.worker import Worker, is_transient
from compliance_nlp import InvalidInputError
from compliance_nlp.pool import AnalyzerUnavailable
from core.crypto import DecryptionError, UnknownKeyIdError
from core.settings import Settings
from tests.bot.conftest import InThreadAnalyzer
from tests.bot.harness import Edge, start_edge
from tests.bot.test_archive import a_relation, record


class SteppingClock:
    """Wall clock for the worker's retry schedule that jumps 20 minutes per reading.

    Every back-off (at most 5 minutes) has run out by the next round, so a test
    drives retries round by round instead of sleeping them out.
    """

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        self.now += 1200.0
        return self.now


async def queue_raw(edge: Edge, rec: dict[str, Any]) -> None:
    """Queue a record as ingest did before it checked records (or as a legacy entry)."""
    await edge.app[STREAM].enqueue(
        source=Source.ARCHIVE, dedup_key=archive_dedup_key(rec["msgid"]), payload={"record": rec}
    )


async def dead_letter_keys() -> list[str]:
    return sorted(await models.DeadLetter.all().values_list("dedup_key", flat=True))


async def stored_msgids() -> list[str]:
    return sorted(await models.Message.all().values_list("msgid", flat=True))


@pytest.fixture
def stepping(edge: Edge) -> Edge:
    edge.settings.pipeline.max_deliveries = 3
    edge.worker.clock = SteppingClock()
    return edge


async def test_a_text_the_analyzer_refuses_fails_alone(stepping: Edge) -> None:
    """analyze_many raises for the whole batch when one text is refused (200,001
    characters): only that record is dead-lettered; the others of its read are stored."""
    edge = stepping
    userid, ext = a_relation(edge)
    good = [f"ok{i}" for i in range(5)]
    for i, msgid in enumerate(good[:2]):
        await queue_raw(edge, record(msgid, ext, userid, f"你好，第{i}条"))
    await queue_raw(edge, record("huge", ext, userid, "好" * 200_001))
    for i, msgid in enumerate(good[2:]):
        await queue_raw(edge, record(msgid, ext, userid, f"收益怎么样，第{i}条"))
    await edge.process_all()
    assert await stored_msgids() == sorted(good)
    assert await dead_letter_keys() == ["arc:huge"]
    dl = await models.DeadLetter.get()
    assert "too long" in dl.error and dl.deliveries == 3
    assert await edge.app[STREAM].depth() == (0, 0)


async def test_an_entry_too_long_for_the_columns_is_dead_lettered_alone(stepping: Edge) -> None:
    """A msgid of 300 characters (accepted before ingest checked ids) failed every round,
    forever, holding the good records read with it: now it is dead-lettered, key whole."""
    edge = stepping
    userid, ext = a_relation(edge)
    poison = "x" * 300
    await queue_raw(edge, record("g1", ext, userid, "你好"))
    await queue_raw(edge, record(poison, ext, userid, "你好"))
    await queue_raw(edge, record("g2", ext, userid, "在吗"))
    await edge.process_all()
    assert await stored_msgids() == ["g1", "g2"]
    assert await dead_letter_keys() == [f"arc:{poison}"]
    assert await edge.app[STREAM].depth() == (0, 0)


async def test_a_read_that_fails_as_a_whole_is_split(stepping: Edge) -> None:
    """A msgid holding U+0000 fails the read's duplicate pre-check on PostgreSQL (text
    cannot hold NUL): each entry then runs alone, the others are stored, and the bad
    one is dead-lettered under a key the database can hold, still requeueable."""
    edge = stepping
    userid, ext = a_relation(edge)
    await queue_raw(edge, record("n1", ext, userid, "你好"))
    await queue_raw(edge, record("bad\x00id", ext, userid, "你好"))
    await queue_raw(edge, record("n2", ext, userid, "在吗"))
    await edge.process_all()
    assert {"n1", "n2"} <= set(await stored_msgids())
    assert await edge.app[STREAM].depth() == (0, 0)
    if edge.settings.database_url.startswith("postgres"):
        assert await dead_letter_keys() == ["arc:bad\ufffdid"]
        dl = await models.DeadLetter.get()
        payload = edge.app[STREAM].keyring.open_text(
            dl.payload_sealed, aad=f"stream:{dl.dedup_key}"
        )
        assert '"msgid":"bad\\u0000id"' in payload


# ------------------------------------------------------------------ infrastructure


class DownAnalyzer:
    """The analyzer pool broken and not restartable until ``up`` is set."""

    def __init__(self) -> None:
        self.inner = InThreadAnalyzer()
        self.up = False
        self.calls = 0
        self.batches: list[list[str]] = []

    def calls_with(self, text: str) -> int:
        """Calls that carried ``text``: other users of the analyzer (the reply library's
        start-up probe) are not the entry being retried."""
        return sum(text in batch for batch in self.batches)

    async def analyze_many(
        self, items: Sequence[tuple[str, str]], contexts: Sequence[Any] | None = None
    ) -> list[Any]:
        self.calls += 1
        self.batches.append([text for text, _ in items])
        if not self.up:
            raise AnalyzerUnavailable("pool broken: rebuild failed (BrokenProcessPool)")
        return await self.inner.analyze_many(
            list(items), None if contexts is None else list(contexts)
        )


@pytest.fixture
async def down_edge(
    settings: Settings, redis_client: Any, db: None
) -> AsyncIterator[tuple[Edge, DownAnalyzer]]:
    settings.pipeline.max_deliveries = 3
    analyzer = DownAnalyzer()
    edge, closers = await start_edge(settings, analyzer=analyzer)
    edge.worker.clock = SteppingClock()
    try:
        yield edge, analyzer
    finally:
        for close in closers:
            await close()


async def test_an_unavailable_analyzer_is_waited_out_not_dead_lettered(
    down_edge: tuple[Edge, DownAnalyzer],
) -> None:
    edge, analyzer = down_edge
    userid, ext = a_relation(edge)
    status, out = await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=[record("w1", ext, userid, "你好"), record("w2", userid, ext, "您好")],
    )
    assert status == 200 and out["accepted"] == 2
    await edge.process_all(rounds=12)
    # Tried far more often than max_deliveries, and never counted against the entries.
    assert analyzer.calls > 3 * edge.settings.pipeline.max_deliveries
    assert await models.DeadLetter.all().count() == 0
    assert await edge.app[STREAM].depth() == (2, 2)
    analyzer.up = True
    await edge.process_all()
    assert await stored_msgids() == ["w1", "w2"]
    assert await models.DeadLetter.all().count() == 0
    assert await edge.app[STREAM].depth() == (0, 0)


def _locked() -> OperationalError:
    # What Tortoise raises when SQLite's busy_timeout ran out (the cause kept as context).
    try:
        raise sqlite3.OperationalError("database is locked")
    except sqlite3.OperationalError as exc:
        try:
            raise OperationalError(exc)  # as Tortoise does it: the cause kept as context
        except OperationalError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (AnalyzerUnavailable("pool broken"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (redis.exceptions.ConnectionError("down"), True),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.LockNotAvailableError("lock timeout"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating"), True),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), True),
        (_locked(), True),
        (UnknownKeyIdError("k9"), True),
        # The entry's own failures: counted, dead-lettered after max_deliveries.
        (RuntimeError("hook failed"), False),
        (InvalidInputError("text too long"), False),
        (ValidationError("msgid: Length 300 > 128"), False),
        (asyncpg.exceptions.StringDataRightTruncationError("value too long"), False),
        (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte 0x00"), False),
        (OperationalError(sqlite3.OperationalError("no such column: x")), False),
        (DecryptionError("authentication failed"), False),
        # A worker that died twice on the same texts: those texts may be what kills it.
        (BrokenProcessPool("died"), False),
    ],
)
def test_infrastructure_failures_are_told_from_the_entrys_own(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_back_off_is_shared_by_every_worker_and_grows_to_minutes(
    down_edge: tuple[Edge, DownAnalyzer],
) -> None:
    """The retry schedule lives in Redis: another worker taking over the pending entry
    (XAUTOCLAIM) leaves it alone until it is due; each failure doubles the wait, up to
    five minutes."""
    edge, analyzer = down_edge
    userid, ext = a_relation(edge)
    status, out = await edge.api(
        "POST", "/api/v1/archive/messages", json=[record("b1", ext, userid, "你好")]
    )
    assert status == 200 and out["accepted"] == 1, out
    clock = ManualClock()
    a = edge.worker
    a.clock = clock
    # A second process whose XAUTOCLAIM takes any pending entry at once.
    b = Worker(
        stream=edge.app[STREAM],
        pipeline=a.pipeline,
        settings=edge.settings.pipeline.model_copy(update={"claim_idle_ms": 0}),
        metrics=a.metrics,
        consumer="other-worker",
        clock=clock,
    )
    stream = edge.app[STREAM]
    waits = []
    for attempt in range(1, 12):
        worker = a if attempt % 2 else b
        assert await worker.run_once() == 1
        assert analyzer.calls_with("你好") == attempt
        ((sid, due_ms),) = await stream.redis.zrange(a.retry_key, 0, -1, withscores=True)
        waits.append(int(due_ms) - int(clock.now * 1000))
        # Not due yet: neither worker runs it again, though both can see it pending.
        assert await a.run_once() == 0 and await b.run_once() == 0
        assert analyzer.calls_with("你好") == attempt
        clock.now += waits[-1] / 1000
    assert waits[:5] == [1000, 2000, 4000, 8000, 16000]
    assert waits[-2:] == [300_000, 300_000]
    assert await models.DeadLetter.all().count() == 0
    analyzer.up = True
    assert await b.run_once() == 1
    assert await stored_msgids() == ["b1"]
    assert await stream.redis.zcard(a.retry_key) == 0
    assert await stream.redis.hlen(a.failures_key) == 0


async def test_the_loop_pauses_only_while_rounds_bring_nothing_but_outages(
    down_edge: tuple[Edge, DownAnalyzer],
) -> None:
    """The run loop waits 1, 2, 4 … s after rounds where only infrastructure failed; a
    round with nothing to do ends that, so new messages after an outage are not held."""
    edge, analyzer = down_edge
    userid, ext = a_relation(edge)
    worker = edge.worker
    clock = ManualClock()
    worker.clock = clock
    for i in range(3):
        await edge.api(
            "POST", "/api/v1/archive/messages", json=[record(f"o{i}", ext, userid, "你好")]
        )
        assert await worker.run_once() == 1
        assert worker.stalled_rounds == i + 1
    assert await worker.run_once() == 0  # nothing due, nothing new
    assert worker.stalled_rounds == 0
    analyzer.up = True
    clock.now += 3600
    await edge.api("POST", "/api/v1/archive/messages", json=[record("o3", ext, userid, "在吗")])
    assert await worker.run_once() == 4
    assert worker.stalled_rounds == 0
    assert await stored_msgids() == ["o0", "o1", "o2", "o3"]
