"""会话存档 puller: WeCom's finance SDK behind a small interface.

WeCom keeps archive records only a few days, so the puller must never fall
behind and never skip: the seq cursor advances only after the whole batch is
durably queued (stream) or dead-lettered (DB).  The finance SDK is a native
library the institution obtains from WeCom; it is bound with ctypes here and
configured with its path and the RSA private key of each ``publickey_ver``.

What it does with a record it cannot decrypt:

* no private key configured for its ``publickey_ver`` (WeCom's console had a new
  public key set, siyu was not given the private one): stop *before* it — the
  cursor does not pass it — and alert (one log line when this starts and one when
  it ends, the ``siyu_archive_blocked`` gauge meanwhile).  Once the key is
  configured the next pull carries on from there; nothing was skipped.
* the RSA step or ``DecryptData`` fails: tried again a few times (a native SDK
  hiccup passes); still failing, the record is dead-lettered still under WeCom's
  encryption, sealed with the field key, and ``siyu archive redecrypt`` asks the
  puller to try it again once the cause (a wrong key file) is fixed.  Several in a
  row look like a wrong key or a broken SDK rather than bad records: the pull
  stops there and alerts as above, so a wrong key costs a couple of dead letters
  per pull, not the whole backlog.

One puller pulls at a time: a Redis lock, renewed while a pull runs, and — since a
lock can still expire (a stalled process) — a fencing token on the cursor row, so a
puller that lost its lock cannot move the cursor after another one took over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from redis.exceptions import LockError

from bot import service as bot_service
from bot.archive import archive_dedup_key, ingest_records
from bot.stream import InboundStream, payload_aad
from core.metrics import Metrics

log = logging.getLogger(__name__)


class FinanceSdkError(RuntimeError):
    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"finance SDK {call} returned {code}")
        self.code = code


class FinanceSdk(Protocol):
    """Blocking calls, as the native SDK's are; the puller runs them in a thread."""

    def get_chat_data(self, seq: int, limit: int, timeout_s: int) -> list[dict[str, Any]]: ...
    def decrypt_data(self, random_key: str, encrypt_chat_msg: str) -> str: ...
    def close(self) -> None: ...


class NativeFinanceSdk:
    """ctypes binding of WeCom's C finance SDK (libWeWorkFinanceSdk_C.so)."""

    def __init__(self, lib_path: str, corp_id: str, secret: str) -> None:
        lib = ctypes.CDLL(lib_path)
        lib.NewSdk.restype = ctypes.c_void_p
        lib.Init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.NewSlice.restype = ctypes.c_void_p
        lib.FreeSlice.argtypes = [ctypes.c_void_p]
        lib.GetContentFromSlice.argtypes = [ctypes.c_void_p]
        lib.GetContentFromSlice.restype = ctypes.c_void_p
        lib.GetSliceLen.argtypes = [ctypes.c_void_p]
        lib.GetSliceLen.restype = ctypes.c_int
        lib.GetChatData.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulonglong,
            ctypes.c_uint,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        lib.DecryptData.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        lib.DestroySdk.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._sdk = lib.NewSdk()
        ret = lib.Init(self._sdk, corp_id.encode(), secret.encode())
        if ret != 0:
            lib.DestroySdk(self._sdk)
            raise FinanceSdkError("Init", ret)

    def _slice_text(self, call: str, fn: Any, *args: Any) -> str:
        sl = self._lib.NewSlice()
        try:
            ret = fn(*args, sl)
            if ret != 0:
                raise FinanceSdkError(call, ret)
            ptr = self._lib.GetContentFromSlice(sl)
            size = self._lib.GetSliceLen(sl)
            return ctypes.string_at(ptr, size).decode("utf-8")
        finally:
            self._lib.FreeSlice(sl)

    def get_chat_data(self, seq: int, limit: int, timeout_s: int) -> list[dict[str, Any]]:
        text = self._slice_text(
            "GetChatData", self._lib.GetChatData, self._sdk, seq, limit, None, None, timeout_s
        )
        data = json.loads(text)
        if data.get("errcode", 0) != 0:
            raise FinanceSdkError("GetChatData", int(data["errcode"]))
        return list(data.get("chatdata", []))

    def decrypt_data(self, random_key: str, encrypt_chat_msg: str) -> str:
        return self._slice_text(
            "DecryptData", self._lib.DecryptData, random_key.encode(), encrypt_chat_msg.encode()
        )

    def close(self) -> None:
        self._lib.DestroySdk(self._sdk)


def load_private_keys(paths: dict[str, str]) -> dict[str, rsa.RSAPrivateKey]:
    keys: dict[str, rsa.RSAPrivateKey] = {}
    for ver, path in paths.items():
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"SIYU_ARCHIVE__PRIVATE_KEYS[{ver}] is not an RSA private key")
        keys[str(ver)] = key
    return keys


async def wake_archive_puller(stream: InboundStream) -> None:
    """Called after a ``msgaudit_notify`` event is stored: pull now.

    A one-element list: many notifications before the puller looks are one pull.
    """
    key = stream.keys.key("archive", "wake")
    await stream.redis.lpush(key, "1")  # type: ignore[misc]
    await stream.redis.ltrim(key, 0, 0)  # type: ignore[misc]


# dead-letter ids: ``bot_dead_letter.stream_id`` is VARCHAR(64) and unique.
_STREAM_ID_MAX = 64
# The dedup key is kept whole where the column allows; a key past this is hashed.
_DEDUP_KEY_MAX = 160


def _bounded(text: str, limit: int, prefix: str) -> str:
    """``text`` if it fits, else ``prefix`` + a digest of it (stable, collision-free)."""
    if len(text) <= limit:
        return text
    return f"{prefix}h{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def raw_dead_letter_ids(item: dict[str, Any]) -> tuple[str, str]:
    """(stream_id, dedup_key) of an undecryptable record's dead letter."""
    seq = str(item.get("seq"))
    stream_id = _bounded(f"archive-seq-{seq}", _STREAM_ID_MAX, f"archive-seq-{seq[:12]}-")
    key = _bounded(archive_dedup_key(str(item.get("msgid"))), _DEDUP_KEY_MAX, "arc:")
    return stream_id, key


def invalid_dead_letter_ids(msgid: Any, seq: int) -> tuple[str, str]:
    """(stream_id, dedup_key) of a decrypted record that failed validation.

    WeCom's ``…_external`` msgids plus the seq overflow the column: an id that does not
    fit is hashed, so writing the dead letter never raises out of the pull (which would
    fail the same batch again on every pull until WeCom purges it).
    """
    stream_id = _bounded(f"archive-msg-{msgid}-{seq}", _STREAM_ID_MAX, f"archive-msg-{seq}-")
    key = _bounded(archive_dedup_key(str(msgid)), _DEDUP_KEY_MAX, "arc:")
    return stream_id, key


class MissingPrivateKey(LookupError):
    def __init__(self, publickey_ver: str) -> None:
        super().__init__(f"no private key for publickey_ver {publickey_ver}")
        self.publickey_ver = publickey_ver


class DecryptFailed(Exception):
    def __init__(self, publickey_ver: str, error: str, attempts: int) -> None:
        super().__init__(f"decrypt (publickey_ver {publickey_ver}, {attempts} attempts): {error}")
        self.publickey_ver = publickey_ver
        self.error = error
        self.attempts = attempts


@dataclass(frozen=True)
class Blocked:
    """Why the puller stands before a record: ``missing_key`` or ``decrypt_failing``."""

    reason: str
    publickey_ver: str
    seq: int


@dataclass
class PullReport:
    batches: int = 0
    records: int = 0
    accepted: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    cursor: int = 0
    errors: list[str] = field(default_factory=list)
    # Set when the pull stopped before a record it cannot decrypt.
    blocked: Blocked | None = None
    # The pull stopped because another puller claimed the cursor (lock lost).
    fenced: bool = False
    redecrypted: int = 0


@dataclass
class _Batch:
    """How far a batch got: the last seq handled, and whether to stop there."""

    last_seq: int | None = None
    stop: bool = False


class ArchivePuller:
    """Pulls 会话存档 batches after the stored cursor (run by ``core.jobs`` as a job)."""

    def __init__(
        self,
        *,
        sdk: FinanceSdk,
        private_keys: dict[str, rsa.RSAPrivateKey],
        stream: InboundStream,
        metrics: Metrics,
        batch_size: int = 1000,
        cursor_name: str = "default",
        poll_interval_s: float = 60.0,
        lock_timeout_s: float = 60.0,
        decrypt_attempts: int = 3,
        decrypt_retry_s: float = 0.25,
        max_failures_in_a_row: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sdk = sdk
        self.private_keys = private_keys
        self.stream = stream
        self.redis: aioredis.Redis = stream.redis
        self.metrics = metrics
        self.batch_size = min(batch_size, 1000)  # WeCom's maximum per GetChatData
        self.cursor_name = cursor_name
        self.poll_interval_s = poll_interval_s
        self.lock_timeout_s = lock_timeout_s
        self.decrypt_attempts = max(1, decrypt_attempts)
        self.decrypt_retry_s = decrypt_retry_s
        self.max_failures_in_a_row = max(1, max_failures_in_a_row)
        self._sleep = sleep
        self._blocked: Blocked | None = None
        self._failures_in_a_row = 0

    async def wait_for_wake(self, timeout_s: float) -> bool:
        """True when woken by msgaudit_notify within ``timeout_s``, else False.

        Short BLPOPs: each stays under the client's socket timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        key = self.stream.keys.key("archive", "wake")
        while loop.time() < deadline:
            try:
                woke = await self.redis.blpop([key], timeout=1)  # type: ignore[misc]
            except (aioredis.RedisError, OSError):
                await asyncio.sleep(1.0)
                continue
            if woke:
                return True
        return False

    # ------------------------------------------------------------ decryption

    def _decrypt_with(self, key: rsa.RSAPrivateKey, item: dict[str, Any]) -> dict[str, Any]:
        random_key = key.decrypt(
            base64.b64decode(item["encrypt_random_key"]), padding.PKCS1v15()
        ).decode()
        record = json.loads(self.sdk.decrypt_data(random_key, item["encrypt_chat_msg"]))
        if not isinstance(record, dict):
            raise ValueError("decrypted record is not a JSON object")
        return record

    def _decrypt(self, item: dict[str, Any]) -> dict[str, Any]:
        ver = str(item.get("publickey_ver"))
        key = self.private_keys.get(ver)
        if key is None:
            raise MissingPrivateKey(ver)
        return self._decrypt_with(key, item)

    async def _decrypt_retrying(self, item: dict[str, Any]) -> dict[str, Any]:
        """Decrypt, trying again with back-off; MissingPrivateKey is not retried."""
        ver = str(item.get("publickey_ver"))
        key = self.private_keys.get(ver)
        if key is None:
            raise MissingPrivateKey(ver)
        error = ""
        for attempt in range(1, self.decrypt_attempts + 1):
            try:
                return await asyncio.to_thread(self._decrypt_with, key, item)
            except Exception as exc:  # noqa: BLE001 - RSA, DecryptData, JSON: all worth a retry
                # The exception text never holds record content: names and codes only.
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
                self.metrics.archive_records.labels("decrypt_retry").inc()
            if attempt < self.decrypt_attempts:
                await self._sleep(self.decrypt_retry_s * 2 ** (attempt - 1))
        raise DecryptFailed(ver, error, self.decrypt_attempts)

    # ------------------------------------------------------------------ pull

    async def pull_once(self) -> PullReport:
        """Pull batches until caught up.  One puller at a time across processes."""
        report = PullReport()
        lock = self.redis.lock(
            self.stream.keys.key("archive", "lock"), timeout=self.lock_timeout_s, blocking=False
        )
        if not await lock.acquire():
            return report
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lock(lock, lost), name="archive-lock")
        try:
            lease = await bot_service.claim_archive_cursor(name=self.cursor_name)
            seq, fence = lease.seq, lease.fence
            report.cursor = seq
            self._failures_in_a_row = 0
            await self._redecrypt_requested(report)
            while not lost.is_set():
                items = await asyncio.to_thread(self.sdk.get_chat_data, seq, self.batch_size, 10)
                if not items:
                    break
                items.sort(key=lambda i: int(i["seq"]))
                report.batches += 1
                batch = await self._pull_batch(items, seq, report)
                if batch.last_seq is not None and batch.last_seq > seq:
                    # Everything of the batch up to last_seq is in the stream or the DB.
                    if not await bot_service.advance_archive_cursor(
                        name=self.cursor_name, seq=batch.last_seq, fence=fence
                    ):
                        report.fenced = True
                        log.warning(
                            "archive puller lost the cursor to another puller; stopping",
                            extra={"seq": seq},
                        )
                        break
                    seq = batch.last_seq
                if batch.stop or len(items) < self.batch_size:
                    break
            if lost.is_set() and not report.fenced:
                report.fenced = True
                log.warning("archive puller lost its lock; stopping", extra={"seq": seq})
            report.cursor = seq
            self._note_blocked(report.blocked)
            return report
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):  # lock expired meanwhile: harmless
                await lock.release()

    async def _keep_lock(self, lock: Any, lost: asyncio.Event) -> None:
        """Renew the lock while the pull runs; flag the pull when it was lost."""
        while True:
            await asyncio.sleep(self.lock_timeout_s / 3)
            try:
                await lock.reacquire()
            except LockError:
                lost.set()
                return
            except (aioredis.RedisError, OSError):
                continue  # Redis blip: the fence on the cursor still guards the write

    async def _pull_batch(
        self, items: list[dict[str, Any]], seq: int, report: PullReport
    ) -> _Batch:
        out = _Batch()
        records: list[tuple[int, dict[str, Any]]] = []
        for item in items:
            item_seq = int(item["seq"])
            try:
                records.append((item_seq, await self._decrypt_retrying(item)))
                self._failures_in_a_row = 0
            except MissingPrivateKey as exc:
                report.blocked = Blocked("missing_key", exc.publickey_ver, item_seq)
                out.stop = True
                break
            except DecryptFailed as exc:
                self._failures_in_a_row += 1
                if self._failures_in_a_row >= self.max_failures_in_a_row:
                    # Not a bad record but a wrong key or a broken SDK: wait before it.
                    report.blocked = Blocked("decrypt_failing", exc.publickey_ver, item_seq)
                    report.errors.append(str(exc))
                    out.stop = True
                    break
                await self._dead_letter_raw(item, exc)
                report.dead_lettered += 1
            out.last_seq = item_seq
            report.records += 1
        ingest = await ingest_records(self.stream, [r for _, r in records])
        for err in ingest.rejected:
            await self._dead_letter_invalid(records[err["index"]], err)
            report.dead_lettered += 1
        report.accepted += ingest.accepted
        report.duplicate += ingest.duplicate
        self.metrics.archive_records.labels("accepted").inc(ingest.accepted)
        self.metrics.archive_records.labels("duplicate").inc(ingest.duplicate)
        return out

    async def _dead_letter_raw(self, item: dict[str, Any], exc: DecryptFailed) -> None:
        """Keep a record still under WeCom's encryption, sealed, for ``archive redecrypt``."""
        stream_id, key = raw_dead_letter_ids(item)
        sealed = self.stream.keyring.seal_text(json.dumps({"item": item}), aad=payload_aad(key))
        await bot_service.add_dead_letter(
            stream_id=stream_id,
            source=bot_service.ARCHIVE_RAW,
            dedup_key=key,
            payload_sealed=sealed,
            error=str(exc),
            deliveries=exc.attempts,
        )
        self.metrics.archive_records.labels("dead_letter").inc()
        log.error(
            "archive record dead-lettered: cannot decrypt",
            extra={"seq": item.get("seq"), "publickey_ver": exc.publickey_ver},
        )

    async def _dead_letter_invalid(
        self, seq_record: tuple[int, dict[str, Any]], err: dict[str, Any]
    ) -> None:
        seq, record = seq_record
        stream_id, key = invalid_dead_letter_ids(err.get("msgid"), seq)
        # ASCII-escaped JSON: a record refused for a lone surrogate cannot be encoded as
        # UTF-8, and the operator still needs it kept.
        sealed = self.stream.keyring.seal_text(json.dumps({"record": record}), aad=payload_aad(key))
        await bot_service.add_dead_letter(
            stream_id=stream_id,
            source="archive",
            dedup_key=key,
            payload_sealed=sealed,
            error=f"invalid record: {err['error']}",
            deliveries=1,
        )
        self.metrics.archive_records.labels("dead_letter").inc()

    def _note_blocked(self, blocked: Blocked | None) -> None:
        """Alert once per change: a line when the puller stops or resumes, a gauge between."""
        before = self._blocked
        if blocked == before or (
            blocked is not None
            and before is not None
            and (blocked.reason, blocked.publickey_ver) == (before.reason, before.publickey_ver)
        ):
            self._blocked = blocked
            return
        if before is not None:
            self.metrics.archive_blocked.labels(before.reason, before.publickey_ver).set(0)
        self._blocked = blocked
        if blocked is None:
            log.warning("archive puller resumed", extra={"after": before.reason if before else ""})
            return
        self.metrics.archive_blocked.labels(blocked.reason, blocked.publickey_ver).set(1)
        hint = (
            "configure its key in SIYU_ARCHIVE__PRIVATE_KEYS and restart the scheduler"
            if blocked.reason == "missing_key"
            else "check the private key file of this publickey_ver and the finance SDK"
        )
        log.error(
            "archive puller stopped before a record it cannot decrypt",
            extra={
                "reason": blocked.reason,
                "publickey_ver": blocked.publickey_ver,
                "seq": blocked.seq,
                "hint": hint,
            },
        )

    # ----------------------------------------------------------- redecrypt

    async def _redecrypt_requested(self, report: PullReport) -> None:
        """Dead letters an operator asked to decrypt again (``siyu archive redecrypt``)."""
        for dl in await bot_service.archive_redecrypt_requests():
            try:
                item = self._open_raw(dl.payload_sealed, dl.dedup_key)
                record = await self._decrypt_retrying(item)
            except (MissingPrivateKey, DecryptFailed, ValueError) as exc:
                await bot_service.settle_archive_redecrypt(
                    dead_letter_id=dl.id, ok=False, error=f"redecrypt: {exc}"
                )
                report.errors.append(f"dead letter {dl.id}: {exc}")
                continue
            ingest = await ingest_records(self.stream, [record])
            for err in ingest.rejected:
                await self._dead_letter_invalid((int(item.get("seq") or 0), record), err)
            report.accepted += ingest.accepted
            report.duplicate += ingest.duplicate
            report.redecrypted += 1
            self.metrics.archive_records.labels("redecrypted").inc()
            await bot_service.settle_archive_redecrypt(dead_letter_id=dl.id, ok=True)

    def _open_raw(self, payload: str, key: str) -> dict[str, Any]:
        """The WeCom item of a raw dead letter: sealed, or in clear as older versions kept it."""
        text = payload if payload.lstrip().startswith("{") else None
        if text is None:
            text = self.stream.keyring.open_text(payload, aad=payload_aad(key))
        data = json.loads(text)
        item = data.get("item", data) if isinstance(data, dict) else None
        if not isinstance(item, dict):
            raise ValueError("dead letter holds no archive item")
        return item
