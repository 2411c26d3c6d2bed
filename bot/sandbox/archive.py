"""The sandbox's 会话存档: records encrypted as WeCom's archive delivers them.

Each record's random key is RSA-encrypted (PKCS#1 v1.5) with the public key of
a ``publickey_ver``, as WeCom does; the chat message is encrypted with that
random key.  ``SandboxFinanceSdk`` is the stand-in for WeCom's native finance
SDK, implementing the same :class:`bot.archive_puller.FinanceSdk` interface, so
the puller's RSA step, cursor and batching run for real in the demo and tests.

WeCom's seq never goes back, and siyu's cursor (in the database) remembers how far
it pulled: with ``seq_path`` the sandbox keeps its last seq in a file beside that
database, so a restarted demo continues after it instead of starting again at 1
below a cursor that would hide every new record until the old count is reached.
``rotate_key`` is the console's "update the public key": records after it carry
the next ``publickey_ver``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# GetChatData's errcode for a limit over 1000 (WeCom: 10001 invalid parameter).
MAX_LIMIT = 1000


def _chat_key(random_key: str) -> bytes:
    return hashlib.sha256(random_key.encode()).digest()


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SandboxArchive:
    publickey_ver: int = 1
    # Where the last seq is kept across restarts (None: in memory, from 1).
    seq_path: Path | None = None
    _key: rsa.RSAPrivateKey = field(default_factory=_new_key)
    _old_keys: dict[int, rsa.RSAPrivateKey] = field(default_factory=dict)
    _records: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_seq: int = 0

    def __post_init__(self) -> None:
        if self.seq_path is not None and self.seq_path.exists():
            self._last_seq = int(self.seq_path.read_text().strip() or 0)

    def private_key(self, publickey_ver: int | None = None) -> rsa.RSAPrivateKey:
        if publickey_ver is None or publickey_ver == self.publickey_ver:
            return self._key
        return self._old_keys[publickey_ver]

    def write_private_key(self, path: Path, *, publickey_ver: int | None = None) -> Path:
        """Hand the private key to siyu's settings, as an institution would."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.private_key(publickey_ver).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return path

    def rotate_key(self) -> int:
        """A new key pair under the next ``publickey_ver``; returns that version."""
        with self._lock:
            self._old_keys[self.publickey_ver] = self._key
            self._key = _new_key()
            self.publickey_ver += 1
            return self.publickey_ver

    def append(self, record: dict[str, Any]) -> int:
        """Archive one chat record (WeCom's decrypted JSON shape); return its seq."""
        random_key = secrets.token_hex(16)
        nonce = os.urandom(12)
        body = AESGCM(_chat_key(random_key)).encrypt(nonce, json.dumps(record).encode(), None)
        with self._lock:
            enc_key = self._key.public_key().encrypt(random_key.encode(), padding.PKCS1v15())
            self._last_seq += 1
            seq = self._last_seq
            self._records.append(
                {
                    "seq": seq,
                    "msgid": record["msgid"],
                    "publickey_ver": self.publickey_ver,
                    "encrypt_random_key": base64.b64encode(enc_key).decode(),
                    "encrypt_chat_msg": base64.b64encode(nonce + body).decode(),
                }
            )
            self._save_seq(seq)
        return seq

    def _save_seq(self, seq: int) -> None:
        if self.seq_path is None:
            return
        # Whole or not at all: a torn file would restart the sequence below the cursor.
        self.seq_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.seq_path.with_name(self.seq_path.name + ".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.seq_path)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def chat_data(self, seq: int, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._records if r["seq"] > seq][:limit]

    def __len__(self) -> int:
        return len(self._records)


ARCHIVE_KEY = web.AppKey("sandbox_archive", SandboxArchive)


async def _get_chat_data(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE_KEY]
    try:
        seq = int(request.query.get("seq", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return web.json_response({"errcode": 10001, "errmsg": "invalid seq or limit"})
    if limit <= 0 or limit > MAX_LIMIT:
        return web.json_response({"errcode": 10001, "errmsg": "limit must be 1..1000"})
    return web.json_response(
        {"errcode": 0, "errmsg": "ok", "chatdata": archive.chat_data(seq, limit)}
    )


def add_archive_routes(app: web.Application, archive: SandboxArchive) -> None:
    app[ARCHIVE_KEY] = archive
    app.router.add_get("/sandbox/finance/chatdata", _get_chat_data)


class SandboxFinanceSdk:
    """Blocking, like the native SDK: the puller runs it in a thread."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def get_chat_data(self, seq: int, limit: int, timeout_s: int) -> list[dict[str, Any]]:
        from bot.archive_puller import FinanceSdkError

        query = urllib.parse.urlencode({"seq": seq, "limit": limit})
        url = f"{self.base_url}/sandbox/finance/chatdata?{query}"
        if not url.startswith(("http://", "https://")):
            raise ValueError("sandbox base URL must be http(s)")
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - checked
            data = json.loads(resp.read())
        if data.get("errcode", 0) != 0:
            raise FinanceSdkError("GetChatData", int(data["errcode"]))
        return list(data["chatdata"])

    def decrypt_data(self, random_key: str, encrypt_chat_msg: str) -> str:
        raw = base64.b64decode(encrypt_chat_msg)
        return AESGCM(_chat_key(random_key)).decrypt(raw[:12], raw[12:], None).decode()

    def close(self) -> None:
        return None
