"""会话存档 puller: WeCom's finance SDK behind a small interface.

WeCom keeps archive records only a few days, so the puller must never fall
behind and never skip: the seq cursor advances only after the whole batch is
durably queued (stream) or dead-lettered (DB).  The finance SDK is a native
library the institution obtains from WeCom; it is bound with ctypes here and
configured with its path and the RSA private key of each ``publickey_ver``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot import service as bot_service
from bot.archive import ingest_records
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


@dataclass
class PullReport:
    batches: int = 0
    records: int = 0
    accepted: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    cursor: int = 0
    errors: list[str] = field(default_factory=list)


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
    ) -> None:
        self.sdk = sdk
        self.private_keys = private_keys
        self.stream = stream
        self.redis: aioredis.Redis = stream.redis
        self.metrics = metrics
        self.batch_size = min(batch_size, 1000)  # WeCom's maximum per GetChatData
        self.cursor_name = cursor_name
        self.poll_interval_s = poll_interval_s

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

    def _decrypt(self, item: dict[str, Any]) -> dict[str, Any]:
        ver = str(item.get("publickey_ver"))
        key = self.private_keys.get(ver)
        if key is None:
            raise ValueError(f"no private key for publickey_ver {ver}")
        random_key = key.decrypt(
            base64.b64decode(item["encrypt_random_key"]), padding.PKCS1v15()
        ).decode()
        record = json.loads(self.sdk.decrypt_data(random_key, item["encrypt_chat_msg"]))
        if not isinstance(record, dict):
            raise ValueError("decrypted record is not a JSON object")
        return record

    async def pull_once(self) -> PullReport:
        """Pull batches until caught up.  One puller at a time across processes."""
        report = PullReport()
        lock = self.redis.lock(self.stream.keys.key("archive", "lock"), timeout=300, blocking=False)
        if not await lock.acquire():
            return report
        try:
            seq = await bot_service.archive_cursor(name=self.cursor_name)
            while True:
                items = await asyncio.to_thread(self.sdk.get_chat_data, seq, self.batch_size, 10)
                if not items:
                    break
                report.batches += 1
                records: list[Any] = []
                for item in items:
                    try:
                        records.append(await asyncio.to_thread(self._decrypt, item))
                    except Exception as exc:  # noqa: BLE001 - kept for an operator
                        await bot_service.add_dead_letter(
                            # Still under WeCom's encryption: not requeueable as is.
                            stream_id=f"archive-seq-{item.get('seq')}",
                            source="archive_raw",
                            dedup_key=f"arc:{item.get('msgid')}",
                            payload_sealed=json.dumps(item),
                            error=f"decrypt: {exc}",
                            deliveries=1,
                        )
                        report.dead_lettered += 1
                ingest = await ingest_records(self.stream, records)
                for err in ingest.rejected:
                    key = f"arc:{err.get('msgid')}"
                    sealed = self.stream.keyring.seal_text(
                        json.dumps({"record": records[err["index"]]}, ensure_ascii=False),
                        aad=payload_aad(key),
                    )
                    await bot_service.add_dead_letter(
                        stream_id=f"archive-msg-{err.get('msgid')}-{seq}",
                        source="archive",
                        dedup_key=key,
                        payload_sealed=sealed,
                        error=f"invalid record: {err['error']}",
                        deliveries=1,
                    )
                    report.dead_lettered += 1
                report.records += len(items)
                report.accepted += ingest.accepted
                report.duplicate += ingest.duplicate
                self.metrics.archive_records.labels("accepted").inc(ingest.accepted)
                self.metrics.archive_records.labels("duplicate").inc(ingest.duplicate)
                # Everything of this batch is in the stream or the DB: advance.
                seq = max(int(i["seq"]) for i in items)
                await bot_service.advance_archive_cursor(name=self.cursor_name, seq=seq)
                if len(items) < self.batch_size:
                    break
            report.cursor = seq
            return report
        finally:
            with contextlib.suppress(Exception):  # lock expired meanwhile: harmless
                await lock.release()
