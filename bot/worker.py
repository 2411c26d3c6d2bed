"""Stream consumer: read, run the pipeline, acknowledge after the commit.

Entries may be processed more than once (a worker can die between the DB
commit and XACK); every stage is idempotent, so that is harmless.  Entries of
a dead worker are taken over with XAUTOCLAIM once idle for ``claim_idle_ms``.

New entries are read a batch at a time, and a batch is analysed while the one
read before it is stored (``bot.pipeline``): the analyzer's process and this one
work at once.  Batches are still stored and acknowledged one after the other, in
the order read, each only after its own commit.

A failed entry is retried after a back-off, and only a failure that is the
entry's own counts towards the dead-letter table: an infrastructure failure (the
database or Redis unreachable, a lock timeout, the analyzer pool gone and not
restartable) says nothing about the entry, so it is retried for as long as it
takes, backing off up to minutes.  An entry that fails on its own
``max_deliveries`` times goes to the dead-letter table with its sealed payload,
alone: the good entries read with it are stored and acknowledged.  Nothing is
ever silently dropped.

The retry schedule lives in Redis beside the stream, not in one worker's memory:
a sorted set of stream ids by due time, and a hash of failure counts.  So any
worker (or a restarted one) honours a back-off, and the counts survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from tortoise.exceptions import DBConnectionError, DoesNotExist

from bot import models
from bot import service as bot_service
from bot.pipeline import Pipeline, Read
from bot.schemas import QueuedItem, Source, StoreResult
from bot.stream import InboundStream, payload_aad
from compliance_nlp.pool import AnalyzerUnavailable
from core.crypto import DecryptionError, UnknownKeyIdError
from core.metrics import Metrics
from core.settings import PipelineSettings

log = logging.getLogger(__name__)

# Back-off of an entry that failed on its own: short, it is dead-lettered soon anyway.
FAILURE_BACKOFF_S = 0.25
FAILURE_BACKOFF_MAX_S = 10.0
# Back-off of an entry that failed for an infrastructure reason: a database failover
# or a pool that cannot start may take minutes, and hammering it helps no one.
TRANSIENT_BACKOFF_S = 1.0
TRANSIENT_BACKOFF_MAX_S = 300.0
# The whole loop pauses too while nothing but infrastructure failures come back.
ROUND_BACKOFF_MAX_S = 60.0

# Pop the due part of the retry schedule atomically: each due entry goes to one worker.
_POP_DUE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""


# New batches read in one round at most, so retries that fall due and entries of dead
# workers are looked at between them even while the stream never runs dry.
READS_PER_ROUND = 16


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# PostgreSQL SQLSTATE classes that describe the server or the connection, never the
# row: 08 connection exception, 40 transaction rollback (serialization failure,
# deadlock), 53 insufficient resources, 55 object not in prerequisite state (lock
# not available, database not accepting connections), 57 operator intervention
# (admin shutdown, query cancelled by a statement timeout), 58 system error (I/O).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# SQLite's own words for the same (sqlite3 gives no error codes through aiosqlite).
_TRANSIENT_SQLITE = ("locked", "busy", "disk i/o", "unable to open", "disk is full")


def _transient_one(exc: BaseException) -> bool:
    if isinstance(
        exc,
        AnalyzerUnavailable
        | OSError  # ConnectionRefusedError, TimeoutError, a reset socket
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | DBConnectionError,
    ):
        return True
    if type(exc).__name__ == "ConnectionDoesNotExistError":  # asyncpg: the socket went away
        return True
    if isinstance(exc, UnknownKeyIdError):
        # Sealed under a key this process does not have yet (being rolled out): the
        # entry is not damaged, retry.  Any other decryption failure is the entry's own.
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in str(exc).lower() for s in _TRANSIENT_SQLITE)
    # A PostgreSQL error as asyncpg (or any driver) raises it: its SQLSTATE says whose.
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is an infrastructure failure that says nothing about the entry.

    The ORM wraps driver errors, so the chain of causes is searched as well.  An
    unknown kind of failure counts as the entry's own: dead-lettered after
    ``max_deliveries`` rather than retried forever.
    """
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if _transient_one(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class _Undecodable(Exception):
    """A stream entry whose seal or JSON cannot be read."""

    def __repr__(self) -> str:
        return f"undecodable entry: {self.args[0]}"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@dataclass
class _Batch:
    """Entries read together, on their way from the stream to their acknowledgement."""

    entries: list[tuple[Any, dict[bytes, bytes]]]
    reclaimed: bool
    raw: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    items: list[QueuedItem] = field(default_factory=list)
    # Entries that could not be opened, with why.
    failed: list[tuple[str, BaseException]] = field(default_factory=list)
    read: Read | None = None
    # Set when preparing or storing the read failed as a whole.
    error: BaseException | None = None


class Worker:
    def __init__(
        self,
        *,
        stream: InboundStream,
        pipeline: Pipeline,
        settings: PipelineSettings,
        metrics: Metrics,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stream = stream
        self.redis = stream.redis
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = metrics
        self.consumer = consumer or consumer_name()
        # Wall-clock seconds: due times are shared by every worker through Redis.
        self.clock = clock
        # Stream id → due time (ms): entries backing off after a failure.
        self.retry_key = stream.keys.key("worker-retry", stream.stream)
        # "a:<id>" attempts that failed, "d:<id>" of them the entry's own failures.
        self.failures_key = stream.keys.key("worker-failures", stream.stream)
        # Consecutive rounds in which only infrastructure failures came back; a round
        # that stored something, or had nothing to do, ends the streak.
        self.stalled_rounds = 0
        self._round_progress = self._round_stalled = False
        self._pop_due = self.redis.register_script(_POP_DUE_LUA)
        # Set by ``run``: a round stops reading once asked to stop, so a shutdown waits
        # for the reads in hand, not for a whole round of them.
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        # Nothing may end this loop but ``stop``: the task would die unobserved
        # while the process still answers /healthz, and intake would silently
        # stop.  A failed round leaves its entries pending; they are reclaimed
        # (XAUTOCLAIM) and retried.
        log.info("worker started", extra={"consumer": self.consumer})
        self._stop = stop
        # What start-up built (modules, the ORM's models, the app) lives as long as the
        # process: moved out of the collector's reach, a full collection no longer walks
        # it again and again while messages flow (it was a tenth of storing's CPU).
        gc.freeze()
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    await self.stream.ensure_group()
                    await self.forget_dead_consumers()
                    group_ready = True
                did = await self.run_once(block_ms=1000)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning(
                    "redis or database unreachable; worker waiting",
                    extra={"error": _error_text(exc)},
                )
                self.stalled_rounds += 1
                await self._pause(stop)
                continue
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restart without AOF)
                    group_ready = False
                    continue
                log.error(
                    "redis refused a command; worker waiting", extra={"error": str(exc)[:200]}
                )
                self.stalled_rounds += 1
                await self._pause(stop)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. the database is down
                log.error("worker round failed; retrying", extra={"error": _error_text(exc)})
                self.stalled_rounds += 1
                await self._pause(stop)
                continue
            if self.stalled_rounds:
                await self._pause(stop)
            elif not did:
                await asyncio.sleep(0)

    async def _pause(self, stop: asyncio.Event) -> None:
        """Wait 1, 2, 4 … up to ROUND_BACKOFF_MAX_S seconds, or until asked to stop."""
        delay = min(2.0 ** max(self.stalled_rounds - 1, 0), ROUND_BACKOFF_MAX_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def forget_dead_consumers(self, *, idle_ms: int = 3_600_000) -> int:
        """Drop consumers (dead processes) that hold nothing and were idle an hour.

        Consumer names carry the pid, so every restart adds one; those that
        still hold pending entries stay until XAUTOCLAIM has taken them over.
        """
        removed = 0
        for c in await self.redis.xinfo_consumers(self.stream.stream, self.stream.group):
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            if name != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_ms:
                await self.redis.xgroup_delconsumer(self.stream.stream, self.stream.group, name)
                removed += 1
        return removed

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run_once(self, *, block_ms: int | None = None) -> int:
        """Retry due entries, reclaim stale ones, then read new ones; return how many."""
        handled = 0
        self._round_progress = self._round_stalled = False
        due = await self._pop_due(
            keys=[self.retry_key], args=[self._now_ms(), self.settings.batch_size]
        )
        if due:
            mine = await self.redis.xclaim(
                self.stream.stream,
                self.stream.group,
                self.consumer,
                min_idle_time=0,
                message_ids=list[Any](due),
            )
            entries_due = [(sid, fields) for sid, fields in mine if fields]
            if entries_due:
                handled += await self._handle(entries_due, reclaimed=True)
        claimed = await self.redis.xautoclaim(
            self.stream.stream,
            self.stream.group,
            self.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id="0-0",
            count=self.settings.batch_size,
        )
        entries = await self._not_backing_off([(sid, f) for sid, f in claimed[1] if f])
        if entries:
            handled += await self._handle(entries, reclaimed=True)
        handled += await self._read_new(block_ms)
        stalled = self._round_stalled and not self._round_progress
        self.stalled_rounds = self.stalled_rounds + 1 if stalled else 0
        return handled

    async def _not_backing_off(
        self, entries: list[tuple[Any, dict[bytes, bytes]]]
    ) -> list[tuple[Any, dict[bytes, bytes]]]:
        """Drop reclaimed entries whose back-off has not run out (XAUTOCLAIM knows only idle
        time); whoever pops them from the schedule when due takes them then."""
        if not entries:
            return entries
        scores = await self.redis.zmscore(self.retry_key, [sid for sid, _ in entries])
        now = self._now_ms()
        return [e for e, at in zip(entries, scores, strict=True) if at is None or at <= now]

    async def _read(self, block_ms: int | None) -> list[tuple[Any, dict[bytes, bytes]]]:
        resp = await self.redis.xreadgroup(
            self.stream.group,
            self.consumer,
            {self.stream.stream: ">"},
            count=self.settings.batch_size,
            block=block_ms,
        )
        return [entry for _stream, batch in resp or [] for entry in batch]

    async def _read_new(self, block_ms: int | None) -> int:
        """Read new entries until none are left (or ``READS_PER_ROUND``), overlapping each
        batch's analysis with the storing of the batch before it; return how many.

        Per batch: read it, prepare it (database reads, while the batch before is still
        being analysed), then — once the batch before is analysed — start its analysis
        with the batch before as context, and store and acknowledge the batch before.
        """
        handled = 0
        current: _Batch | None = None
        following: _Batch | None = None
        try:
            for _ in range(READS_PER_ROUND):
                if self._stop is not None and self._stop.is_set():
                    entries = []  # stopping: store what is in hand, read nothing more
                else:
                    # Only the first read waits for entries: with a batch in hand, store it.
                    entries = await self._read(block_ms if current is None else None)
                following = await self._prepare(entries, reclaimed=False) if entries else None
                if current is not None:
                    handled += await self._finish(current, following=following)
                elif following is not None and following.read is not None:
                    await self.pipeline.analyse(following.read)
                current, following = following, None
                if current is None:
                    break
            if current is not None:
                handled += await self._finish(current, following=None)
                current = None
        finally:
            # Stopping, or the round failed half-way (Redis gone at the acknowledgement):
            # the reads in hand that are not stored stay pending and are reclaimed later.
            # Their analyses are called off, so batches still queued for the analyzer do
            # not hold it from the next round's reads.
            for batch in (current, following):
                if batch is not None and batch.read is not None:
                    batch.read.cancel()
        return handled

    async def _handle(
        self, entries: list[tuple[Any, dict[bytes, bytes]]], *, reclaimed: bool
    ) -> int:
        return await self._finish(await self._prepare(entries, reclaimed=reclaimed))

    async def _prepare(
        self, entries: list[tuple[Any, dict[bytes, bytes]]], *, reclaimed: bool
    ) -> _Batch:
        """Open the entries and prepare them; a prepare that fails is kept for ``_finish``."""
        batch = _Batch(entries=entries, reclaimed=reclaimed)
        for sid, fields in entries:
            sid_s = sid.decode() if isinstance(sid, bytes) else str(sid)
            batch.raw[sid_s] = fields
            try:
                batch.items.append(self.stream.decode(sid_s, fields))
            except Exception as exc:  # noqa: BLE001 - judged below like any failure
                batch.failed.append((sid_s, exc if is_transient(exc) else _Undecodable(repr(exc))))
        if batch.items:
            try:
                batch.read = await self.pipeline.prepare(batch.items)
            except Exception as exc:  # noqa: BLE001 - judged and reported per item in _finish
                batch.error = exc
        return batch

    async def _finish(self, batch: _Batch, *, following: _Batch | None = None) -> int:
        """Store ``batch`` (after starting the analysis of ``following``), then acknowledge
        what was stored and schedule or dead-letter what failed."""
        if following is not None and following.read is not None:
            await self.pipeline.analyse(following.read, after=batch.read)
        results = await self._results(batch)
        done: list[str] = []
        failed = list(batch.failed)
        for item, result in zip(batch.items, results, strict=True):
            if isinstance(result, StoreResult):
                done.append(item.stream_id)
            else:
                failed.append((item.stream_id, result))
        # The good entries first: a failure below (dead-letter write) must not hold them.
        if done:
            await self._ack(done, reclaimed=batch.reclaimed)
        transient = 0
        for sid, error in failed:
            transient += await self._failed(sid, batch.raw[sid], error)
        if done or len(failed) > transient:
            self._round_progress = True
        elif failed:
            self._round_stalled = True
        return len(batch.entries)

    async def _results(self, batch: _Batch) -> list[StoreResult | BaseException]:
        """The pipeline's result per item; a batch that fails as a whole is tried item by item.

        ``store`` reports per item, but a failure between the stages (the duplicate
        pre-check, the conversation read) fails the read.  Unless the database is simply
        away, each item then runs alone, so one poisonous entry cannot hold its batch.
        """
        if not batch.items:
            return []
        if batch.read is not None:
            try:
                return await self.pipeline.store(batch.read)
            except Exception as exc:  # noqa: BLE001 - judged and reported per item below
                batch.error = exc
        error = batch.error
        assert error is not None
        if is_transient(error) or len(batch.items) == 1:
            return [error] * len(batch.items)
        log.warning(
            "batch failed; running its items one by one",
            extra={"items": len(batch.items), "error": _error_text(error)},
        )
        out: list[StoreResult | BaseException] = []
        for item in batch.items:
            try:
                out += await self.pipeline.process_batch([item])
            except Exception as item_exc:  # noqa: BLE001 - this item's own failure
                out.append(item_exc)
        return out

    async def _failed(self, stream_id: str, fields: dict[bytes, bytes], exc: BaseException) -> int:
        """Count a failure, then schedule a retry or dead-letter; 1 if it was transient."""
        transient = is_transient(exc)
        async with self.redis.pipeline(transaction=True) as p:
            p.hincrby(self.failures_key, f"a:{stream_id}", 1)
            p.hincrby(self.failures_key, f"d:{stream_id}", 0 if transient else 1)
            attempts, own = (int(n) for n in await p.execute())
        log.warning(
            "pipeline failed",
            extra={
                "stream_id": stream_id,
                "key": fields.get(b"key", b"?").decode(errors="replace"),
                "deliveries": attempts,
                "transient": transient,
                "error": _error_text(exc),
            },
        )
        self.metrics.processed.labels("failed").inc()
        # A damaged entry (bad seal, bad JSON) cannot ever succeed: no retries.
        if not transient and (own >= self.settings.max_deliveries or isinstance(exc, _Undecodable)):
            try:
                await self._dead_letter(stream_id, fields, repr(exc), attempts)
                return 0
            except Exception as dl_exc:  # noqa: BLE001 - kept pending, retried below
                log.error(
                    "dead-letter write failed; entry kept for retry",
                    extra={"stream_id": stream_id, "error": _error_text(dl_exc)},
                )
        if transient:
            backoff = min(TRANSIENT_BACKOFF_S * 2 ** (attempts - 1), TRANSIENT_BACKOFF_MAX_S)
        else:
            backoff = min(FAILURE_BACKOFF_S * 2 ** (own - 1), FAILURE_BACKOFF_MAX_S)
        await self.redis.zadd(self.retry_key, {stream_id: self._now_ms() + int(backoff * 1000)})
        return 1 if transient else 0

    async def _ack(self, ids: list[str], *, reclaimed: bool) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.xack(self.stream.stream, self.stream.group, *ids)
            p.xdel(self.stream.stream, *ids)
            if reclaimed:  # only a retried entry can have a schedule and counts to forget
                p.zrem(self.retry_key, *ids)
                p.hdel(self.failures_key, *(f"{k}:{i}" for i in ids for k in ("a", "d")))
            await p.execute()

    def _storable(self, key: str, sealed: str) -> tuple[str, str]:
        """The key as the database can hold it, with the payload sealed to match.

        PostgreSQL text cannot hold U+0000, and an entry queued with one in its key
        (an archive msgid, before ingest refused them) would otherwise fail its
        dead-letter write forever.  The key is the payload's AAD, so the payload is
        resealed under the stored key: the dead letter stays requeueable.
        """
        if "\x00" not in key:
            return key, sealed
        safe = key.replace("\x00", "\ufffd")
        keyring = self.stream.keyring
        try:
            plain = keyring.open_text(sealed, aad=payload_aad(key))
        except DecryptionError:
            return safe, sealed  # kept as it came; an operator can still see it
        return safe, keyring.seal_text(plain, aad=payload_aad(safe))

    async def _dead_letter(
        self, stream_id: str, fields: dict[bytes, bytes], error: str, deliveries: int
    ) -> None:
        f = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        key, sealed = self._storable(f.get("key", "?"), f.get("p", ""))
        # Written to the DB before the ack: if this write fails the entry stays
        # pending and is tried again, so nothing is lost.
        await bot_service.add_dead_letter(
            stream_id=stream_id,
            source=f.get("src", "?"),
            dedup_key=key,
            payload_sealed=sealed,
            error=error,
            deliveries=deliveries,
        )
        await self._ack([stream_id], reclaimed=True)
        self.metrics.processed.labels("dead_letter").inc()
        log.error("dead-lettered", extra={"stream_id": stream_id, "key": f.get("key")})


# ------------------------------------------------------------------ requeue

# Queue a dead letter's entry again at most once: the marker and the entry are
# written together, so a requeue that died before marking the row does not queue
# it a second time when the operator runs it again.
_REQUEUE_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return redis.call('XADD', KEYS[1], '*', 'src', ARGV[2], 'key', ARGV[3], 'p', ARGV[4],
                    't', ARGV[5])
end
return false
"""
# Long enough to outlive any operator's retry of a half-finished requeue; the row's
# status is the lasting guard.
REQUEUE_MARKER_TTL_S = 7 * 24 * 3600

REQUEUEABLE_SOURCES = frozenset(s.value for s in Source)


class DeadLetterError(Exception):
    """A dead letter that cannot be requeued; the message says why."""


class DeadLetterNotFound(DeadLetterError, LookupError):
    pass


@dataclass(frozen=True)
class Requeued:
    dead_letter_id: int
    # The new stream entry; None when an earlier requeue already queued it.
    stream_id: str | None


def check_requeueable(dl: models.DeadLetter) -> None:
    """Refuse what the stream cannot take back, before anything is written."""
    if dl.source not in REQUEUEABLE_SOURCES:
        raise DeadLetterError(
            f"dead letter {dl.id} holds a {dl.source!r} record the worker cannot read "
            "(still under WeCom's encryption); it cannot be requeued"
        )


async def requeue_one(stream: InboundStream, dl: models.DeadLetter) -> Requeued:
    """Put one dead letter back on the stream, at most once (after the cause is fixed)."""
    check_requeueable(dl)
    if dl.status == "requeued":
        return Requeued(dl.id, None)
    if dl.status != "open":
        raise DeadLetterError(f"dead letter {dl.id} is {dl.status}; only open ones are requeued")
    marker = stream.keys.key("requeued", stream.stream, str(dl.id))
    new_id = await stream.redis.eval(  # type: ignore[misc]
        _REQUEUE_LUA,
        2,
        stream.stream,
        marker,
        REQUEUE_MARKER_TTL_S,
        dl.source,
        dl.dedup_key,
        dl.payload_sealed,
        str(int(dl.created_at.timestamp() * 1000)),
    )
    await bot_service.mark_dead_letter(dead_letter=dl, status="requeued")
    if new_id is None:
        return Requeued(dl.id, None)
    return Requeued(dl.id, new_id.decode() if isinstance(new_id, bytes) else str(new_id))


async def requeue_dead_letter(stream: InboundStream, dead_letter_id: int) -> str | None:
    """Requeue one dead letter by id; the new stream id, or None if it was requeued before.

    Raises ``DeadLetterNotFound`` for an unknown id, ``DeadLetterError`` for one
    that cannot be requeued.
    """
    try:
        dl = await bot_service.get_dead_letter(dead_letter_id=dead_letter_id)
    except DoesNotExist:
        raise DeadLetterNotFound(f"no dead letter with id {dead_letter_id}") from None
    return (await requeue_one(stream, dl)).stream_id


async def requeue_dead_letters(
    stream: InboundStream, dead_letters: Sequence[models.DeadLetter]
) -> list[Requeued]:
    """Requeue each of ``dead_letters`` (bulk: ``siyu deadletter requeue --all``)."""
    return [await requeue_one(stream, dl) for dl in dead_letters]
