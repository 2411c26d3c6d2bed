"""Stream consumer: read, run the pipeline, acknowledge after the commit.

Entries may be processed more than once (a worker can die between the DB
commit and XACK); every stage is idempotent, so that is harmless.  Entries of
a dead worker are taken over with XAUTOCLAIM once idle for
``claim_idle_ms``; an entry delivered ``max_deliveries`` times goes to the
dead-letter table with its sealed payload, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import redis.asyncio as aioredis

from bot import service as bot_service
from bot.pipeline import Pipeline
from bot.schemas import QueuedItem, StoreResult
from bot.stream import InboundStream
from core.metrics import Metrics
from core.settings import PipelineSettings

log = logging.getLogger(__name__)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        *,
        stream: InboundStream,
        pipeline: Pipeline,
        settings: PipelineSettings,
        metrics: Metrics,
        consumer: str | None = None,
    ) -> None:
        self.stream = stream
        self.redis = stream.redis
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = metrics
        self.consumer = consumer or consumer_name()
        # Entries this worker failed, retried soon by itself with backoff rather
        # than after claim_idle_ms (which exists for *dead* workers).
        self._retry_at: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        # Nothing may end this loop but ``stop``: the task would die unobserved
        # while the process still answers /healthz, and intake would silently
        # stop.  A failed round leaves its entries pending; they are reclaimed
        # (XAUTOCLAIM) and retried, and dead-lettered after ``max_deliveries``.
        log.info("worker started", extra={"consumer": self.consumer})
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
                    extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
                )
                await asyncio.sleep(1.0)
                continue
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restart without AOF)
                    group_ready = False
                    continue
                log.error(
                    "redis refused a command; worker waiting", extra={"error": str(exc)[:200]}
                )
                await asyncio.sleep(1.0)
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. the database is down
                log.error(
                    "worker round failed; retrying",
                    extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
                )
                await asyncio.sleep(1.0)
                continue
            if not did:
                await asyncio.sleep(0)

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

    async def run_once(self, *, block_ms: int | None = None) -> int:
        """Reclaim stale entries, then read new ones; return how many were handled."""
        handled = 0
        loop_time = asyncio.get_running_loop().time()
        due = [sid for sid, at in self._retry_at.items() if at <= loop_time]
        if due:
            for sid in due:
                del self._retry_at[sid]
            # XCLAIM to ourselves counts a delivery, so max_deliveries still holds.
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
        entries = [(sid, fields) for sid, fields in claimed[1] if fields]
        if entries:
            handled += await self._handle(entries, reclaimed=True)
        resp = await self.redis.xreadgroup(
            self.stream.group,
            self.consumer,
            {self.stream.stream: ">"},
            count=self.settings.batch_size,
            block=block_ms,
        )
        for _stream, batch in resp or []:
            if batch:
                handled += await self._handle(batch, reclaimed=False)
        return handled

    async def _deliveries(self, stream_id: str) -> int:
        rows = await self.redis.xpending_range(
            self.stream.stream, self.stream.group, min=stream_id, max=stream_id, count=1
        )
        return int(rows[0]["times_delivered"]) if rows else 1

    async def _handle(
        self, entries: list[tuple[Any, dict[bytes, bytes]]], *, reclaimed: bool
    ) -> int:
        items: list[QueuedItem] = []
        raw: dict[str, dict[bytes, bytes]] = {}
        for sid, fields in entries:
            sid_s = sid.decode() if isinstance(sid, bytes) else str(sid)
            raw[sid_s] = fields
            deliveries = await self._deliveries(sid_s) if reclaimed else 1
            try:
                items.append(self.stream.decode(sid_s, fields, deliveries))
            except Exception as exc:  # noqa: BLE001 - cannot ever succeed: dead-letter now
                await self._dead_letter(sid_s, fields, f"undecodable entry: {exc!r}", deliveries)
        if not items:
            return len(entries)
        results = await self.pipeline.process_batch(items)
        done: list[str] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, StoreResult):
                done.append(item.stream_id)
                continue
            log.warning(
                "pipeline failed",
                extra={
                    "stream_id": item.stream_id,
                    "key": item.dedup_key,
                    "deliveries": item.deliveries,
                    "error": f"{type(result).__name__}: {str(result)[:200]}",
                },
            )
            self.metrics.processed.labels("failed").inc()
            if item.deliveries >= self.settings.max_deliveries:
                await self._dead_letter(
                    item.stream_id, raw[item.stream_id], repr(result), item.deliveries
                )
            else:
                backoff = min(0.25 * 2 ** (item.deliveries - 1), 10.0)
                now = asyncio.get_running_loop().time()
                self._retry_at[item.stream_id] = now + backoff
        if done:
            await self._ack(done)
        return len(entries)

    async def _ack(self, ids: list[str]) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.xack(self.stream.stream, self.stream.group, *ids)
            p.xdel(self.stream.stream, *ids)
            await p.execute()

    async def _dead_letter(
        self, stream_id: str, fields: dict[bytes, bytes], error: str, deliveries: int
    ) -> None:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        # Written to the DB before the ack: if this write fails the entry stays
        # pending and is tried again, so nothing is lost.
        await bot_service.add_dead_letter(
            stream_id=stream_id,
            source=f.get("src", "?"),
            dedup_key=f.get("key", "?"),
            payload_sealed=f.get("p", ""),
            error=error,
            deliveries=deliveries,
        )
        await self._ack([stream_id])
        self.metrics.processed.labels("dead_letter").inc()
        log.error("dead-lettered", extra={"stream_id": stream_id, "key": f.get("key")})


async def requeue_dead_letter(stream: InboundStream, dead_letter_id: int) -> str:
    """Put a dead letter back on the stream (after the cause is fixed)."""
    dl = await bot_service.get_dead_letter(dead_letter_id=dead_letter_id)
    new_id = await stream.redis.xadd(
        stream.stream,
        {
            "src": dl.source,
            "key": dl.dedup_key,
            "p": dl.payload_sealed,
            "t": str(int(dl.created_at.timestamp() * 1000)),
        },
    )
    await bot_service.mark_dead_letter(dead_letter=dl, status="requeued")
    return new_id.decode() if isinstance(new_id, bytes) else str(new_id)
