"""The inbound Redis Stream: dedup and append in one atomic step.

The dedup marker and the stream entry are written by one Lua script, so there
is no moment where a key is marked seen but its entry is missing: if Redis
fails mid-way neither exists and WeCom's retry (after our 503) queues it.
Payloads are sealed with the field key: nothing from a chat sits in Redis in
clear before it has been analysed and masked.

Concurrent enqueues share one command: callers that arrive while a batch is
in flight go out together as one EVALSHA that handles every item.  redis-py
spends ~100 µs of CPU per command and a few µs per argument in pure-Python
packing, a third of the receiver's whole cost per callback if sent one by
one (``bench/callback.py``); so the script takes the fewest arguments per item.
At low load a batch is one item and waits only for the next turn of the event
loop.  Each caller still gets its own result, or the batch's Redis error (→ 503).
Items of a batch are independent: each is deduplicated and appended on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from bot.schemas import QueuedItem, Source
from core.crypto import Keyring
from core.redis import Keyspace

# KEYS[1] the stream; per item i (0-based): KEYS[2+2i] its nonce key,
# KEYS[3+2i] its dedup key.  ARGV[1] nonce TTL, ARGV[2] dedup TTL, ARGV[3]
# the receive time (ms); per item ARGV[4+4i..7+4i]: signature ('' = no nonce
# check), source, dedup key, sealed payload.
ENQUEUE_LUA = """
local out = {}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local nonce_key, dedup_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 4 + 4 * i
  local sig, res = ARGV[a], nil
  if sig ~= '' then
    local prev = redis.call('GET', nonce_key)
    if prev and prev ~= sig then res = 'replay' end
    if not prev then redis.call('SET', nonce_key, sig, 'EX', tonumber(ARGV[1])) end
  end
  if not res then
    if not redis.call('SET', dedup_key, '1', 'NX', 'EX', tonumber(ARGV[2])) then
      res = 'duplicate'
    else
      res = redis.call('XADD', KEYS[1], '*', 'src', ARGV[a + 1], 'key', ARGV[a + 2],
                       'p', ARGV[a + 3], 't', ARGV[3])
    end
  end
  out[#out + 1] = res
end
return out
"""

EnqueueOutcome = Literal["queued", "duplicate", "replay"]

#: Most items in one script call; more wait for the next round trip.
MAX_ENQUEUE_BATCH = 128


@dataclass(frozen=True)
class _Item:
    nonce_key: bytes
    dedup_key: bytes
    signature: bytes
    nonce_ttl: int
    source: bytes
    key: bytes
    sealed: bytes


_Pending = tuple[_Item, "asyncio.Future[Any]"]


@dataclass(frozen=True)
class EnqueueResult:
    outcome: EnqueueOutcome
    stream_id: str | None = None


def payload_aad(dedup_key: str) -> str:
    return f"stream:{dedup_key}"


def encode_payload(payload: Mapping[str, Any]) -> str:
    """A queued payload as JSON text: the stream entry's, and the stored original's.

    One encoding for both, so the worker seals the text it opened as the message's
    original (``QueuedItem.payload_json``) and stores exactly what encoding the payload
    again would give.
    """
    try:
        # The same text json.dumps(ensure_ascii=False, separators=(",", ":")) writes, in C.
        return orjson.dumps(payload).decode()
    except TypeError:  # what orjson refuses (an int past 64 bits, a non-str key): json's
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class InboundStream:
    """Namespaced access to the inbound stream (injected client, arq/aiogram style)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keyring: Keyring,
        *,
        stream: str = "siyu:inbound",
        group: str = "siyu-workers",
        namespace: str = "siyu",
        dedup_ttl_s: int = 3 * 24 * 3600,
    ) -> None:
        self.redis = redis
        self.keyring = keyring
        self.stream = stream
        self.group = group
        self.ns = namespace
        self.keys = Keyspace(namespace)
        self.dedup_ttl_s = dedup_ttl_s
        self._script = redis.register_script(ENQUEUE_LUA)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    def dedup_redis_key(self, dedup_key: str) -> str:
        return self.keys.key("dedup", dedup_key)

    async def enqueue(
        self,
        *,
        source: Source,
        dedup_key: str,
        payload: dict[str, Any],
        nonce: tuple[str, str, int] | None = None,
    ) -> EnqueueResult:
        """Queue one item unless already seen.  ``nonce`` = (nonce, signature, ttl).

        Raises ``redis.RedisError`` when Redis is unavailable: the caller answers
        503 so WeCom retries, never "success" for something not queued.
        """
        sealed = self.keyring.seal_text(encode_payload(payload), aad=payload_aad(dedup_key))
        item = _Item(
            nonce_key=self.keys.key("nonce", nonce[0] if nonce else "-").encode(),
            dedup_key=self.dedup_redis_key(dedup_key).encode(),
            signature=(nonce[1] if nonce else "").encode(),
            nonce_ttl=nonce[2] if nonce else 0,
            source=source.value.encode(),
            key=dedup_key.encode(),
            sealed=sealed.encode(),
        )
        res = await self._run_enqueue(item)
        text = res.decode() if isinstance(res, bytes) else str(res)
        if text == "duplicate":
            return EnqueueResult(outcome="duplicate")
        if text == "replay":
            return EnqueueResult(outcome="replay")
        return EnqueueResult(outcome="queued", stream_id=text)

    async def _run_enqueue(self, item: _Item) -> Any:
        """Run the enqueue script for one item, coalesced with concurrent callers."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, fut))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush(), name="inbound-enqueue")
        # A cancelled caller (client gone) only stops waiting: its item is still
        # sent, and WeCom's retry of it is then a duplicate, answered "success".
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_ENQUEUE_BATCH]
            del self._pending[:MAX_ENQUEUE_BATCH]
            try:
                results = await self._execute(batch)
            except asyncio.CancelledError:
                for _item, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: every caller answers 503
                for _item, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_item, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def _execute(self, batch: list[_Pending]) -> list[Any]:
        keys: list[bytes] = [self.stream.encode()]
        args: list[Any] = [
            max(max(item.nonce_ttl for item, _ in batch), 1),
            self.dedup_ttl_s,
            str(int(time.time() * 1000)).encode(),
        ]
        for item, _fut in batch:
            keys += (item.nonce_key, item.dedup_key)
            args += (item.signature, item.source, item.key, item.sealed)
        try:
            out = await self.redis.evalsha(self._script.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:  # Redis restarted or SCRIPT FLUSH: load it, run again
            await self.redis.script_load(ENQUEUE_LUA)
            out = await self.redis.evalsha(self._script.sha, len(keys), *keys, *args)  # type: ignore[misc]
        return list(out)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def decode(
        self, stream_id: bytes | str, fields: dict[bytes, bytes], deliveries: int = 1
    ) -> QueuedItem:
        sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        f = {k.decode(): v.decode() for k, v in fields.items()}
        key = f["key"]
        text = self.keyring.open_text(f["p"], aad=payload_aad(key))
        return QueuedItem(
            stream_id=sid,
            source=Source(f["src"]),
            dedup_key=key,
            payload=orjson.loads(text),
            received_at=datetime.fromtimestamp(int(f["t"]) / 1000, tz=UTC),
            deliveries=deliveries,
            payload_json=text,
        )

    async def depth(self) -> tuple[int, int]:
        """(entries in the stream, entries delivered but not yet acknowledged)."""
        length = await self.redis.xlen(self.stream)
        try:
            pending = await self.redis.xpending(self.stream, self.group)
            n_pending = int(pending["pending"])
        except aioredis.ResponseError:
            n_pending = 0
        return int(length), n_pending
