"""Field encryption: AES-256-GCM under a key id, so keys can rotate.

A sealed value reads ``v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``.
The associated data binds a ciphertext to its row (e.g. ``message:<msgid>``),
so an original cannot be copied onto another row and still decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.settings import Settings, SettingsError

KEY_FILE = "field-keys.json"


class DecryptionError(Exception):
    """A sealed value could not be opened (unknown key id, tampering, wrong row)."""


class UnknownKeyIdError(DecryptionError):
    """The value names a key this process was not given.

    Unlike tampering, this is a configuration state that can change: during a key
    rotation a receiver may seal with a new key before every worker has it, and an
    operator who lost a key file can restore it.  Consumers retry, never discard.
    """

    def __init__(self, key_id: str) -> None:
        super().__init__(f"unknown key id {key_id!r}")
        self.key_id = key_id


@dataclass(frozen=True)
class Keyring:
    # Never in a repr: a keyring sits inside dataclasses that end up in logs.
    keys: dict[str, bytes] = field(repr=False)
    active_key_id: str
    # One AESGCM per key, built on first use: building it costs more than sealing a
    # message's few hundred bytes with it (it holds no state between calls).
    _aead: dict[bytes, AESGCM] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __repr__(self) -> str:
        prints = ", ".join(f"{kid}:{key_fingerprint(k)}" for kid, k in sorted(self.keys.items()))
        return f"Keyring(active={self.active_key_id!r}, keys=[{prints}])"

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise SettingsError(
                f"SIYU_CRYPTO__ACTIVE_KEY_ID {self.active_key_id!r} is not among SIYU_CRYPTO__KEYS"
            )
        for kid, key in self.keys.items():
            if len(key) != 32:
                raise SettingsError(f"SIYU_CRYPTO__KEYS[{kid!r}] must be 32 bytes (base64)")
            if "." in kid:
                raise SettingsError(f"SIYU_CRYPTO__KEYS: key id {kid!r} must not contain '.'")

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_aead": {}}  # the ciphers are rebuilt, never copied

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def _cipher(self, key: bytes) -> AESGCM:
        aead = self._aead.get(key)  # by the key's bytes, whatever id names it
        if aead is None:
            aead = self._aead[key] = AESGCM(key)
        return aead

    def seal(self, plaintext: bytes, *, aad: str) -> str:
        nonce = os.urandom(12)
        ct = self._cipher(self.keys[self.active_key_id]).encrypt(nonce, plaintext, aad.encode())
        blob = base64.urlsafe_b64encode(nonce + ct).decode().rstrip("=")
        return f"v1.{self.active_key_id}.{blob}"

    def open(self, sealed: str, *, aad: str) -> bytes:
        try:
            version, kid, blob = sealed.split(".", 2)
        except ValueError as exc:
            raise DecryptionError("not a sealed value") from exc
        if version != "v1":
            raise DecryptionError(f"unknown sealed format {version!r}")
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKeyIdError(kid)
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        try:
            return self._cipher(key).decrypt(raw[:12], raw[12:], aad.encode())
        except InvalidTag as exc:
            raise DecryptionError("authentication failed") from exc

    def seal_text(self, text: str, *, aad: str) -> str:
        return self.seal(text.encode("utf-8"), aad=aad)

    def open_text(self, sealed: str, *, aad: str) -> str:
        return self.open(sealed, aad=aad).decode("utf-8")

    def blind_index(self, value: str, *, purpose: str, key_id: str | None = None) -> str:
        """``<key id>.<hex>``: an equality token for ``value``, under the active key by default.

        Lets a column be searched for an exact value (a phone number) without holding
        it: a keyed MAC, never a plain hash — an eleven-digit mobile number has too few
        possibilities to survive a dictionary of every number.  The MAC key is derived
        from the field key per ``purpose``, so a token means nothing under another
        purpose and the AES key itself is used for AES only.  Search with
        ``blind_indexes``: rows written before a rotation name their key id.
        """
        kid = key_id or self.active_key_id
        sub = hmac.new(self.keys[kid], BLIND_INDEX_LABEL + purpose.encode(), hashlib.sha256)
        mac = hmac.new(sub.digest(), value.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{kid}.{mac[:32]}"

    def blind_indexes(self, value: str, *, purpose: str) -> list[str]:
        """``value``'s token under every key this process holds (what a search matches)."""
        return [self.blind_index(value, purpose=purpose, key_id=kid) for kid in sorted(self.keys)]

    def key_checks(self) -> dict[str, str]:
        """``key id → key_check`` for every key: what a database records it was sealed with."""
        return {kid: key_check(kid, key) for kid, key in self.keys.items()}


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_key_id() -> str:
    """A key id no other key of any deployment shares (a recreated file cannot reuse it)."""
    return "k" + secrets.token_hex(6)


def key_fingerprint(key: bytes) -> str:
    """A short public name for a key: safe to log and to store beside the data."""
    return hashlib.sha256(b"siyu-field-key:" + key).hexdigest()[:16]


KEY_CHECK_LABEL = b"siyu field-key check v1:"
BLIND_INDEX_LABEL = b"siyu blind index v1:"


def key_check(key_id: str, key: bytes) -> str:
    """HMAC of a fixed label and the key id under the key: proves which key, reveals none.

    Stored beside the data so a process started with another key under the same id
    (a recreated key file, a mistyped SIYU_CRYPTO__KEYS) is refused before it writes
    rows that nobody can open.  A keyed MAC of public input tells nothing about a
    random 256-bit key, and naming the key id in it makes a check valid for one id only.
    """
    return hmac.new(key, KEY_CHECK_LABEL + key_id.encode(), hashlib.sha256).hexdigest()


def sealed_key_id(sealed: str) -> str | None:
    """The key id a sealed value names (None when it is not a sealed value)."""
    parts = sealed.split(".", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "v1" else None


def _create_key_file(path: Path) -> None:
    """Write a new key file atomically; the first of several racing processes wins.

    The file is written and fsynced under a temporary name, then hard-linked into place:
    a process that finds ``path`` always finds it whole (reading a half-written file was
    how two roles started together crashed one of them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    kid = new_key_id()
    fd, tmp = tempfile.mkstemp(prefix=".field-keys.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"active": kid, "keys": {kid: new_key()}}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process of this deployment won the race
            pass
    finally:
        os.unlink(tmp)


def load_keyring(settings: Settings, *, create: bool = True) -> Keyring:
    """Keys from settings; in embedded mode, a key file under the data dir.

    The key file is created once (mode 0600) so ``make run`` works on a fresh
    machine; a deployment on PostgreSQL must configure SIYU_CRYPTO__KEYS.
    """
    if settings.crypto.keys:
        keys = {
            kid: base64.b64decode(v.get_secret_value()) for kid, v in settings.crypto.keys.items()
        }
        active = settings.crypto.active_key_id or sorted(keys)[-1]
        return Keyring(keys=keys, active_key_id=active)
    if not settings.database_url.startswith("sqlite"):
        raise SettingsError(
            "missing required setting: SIYU_CRYPTO__KEYS (a JSON object of key id → base64 "
            "32-byte key) and SIYU_CRYPTO__ACTIVE_KEY_ID, needed with a shared database"
        )
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        if not create:
            raise SettingsError(f"no field keys: set SIYU_CRYPTO__KEYS or create {path}")
        _create_key_file(path)
    data = json.loads(path.read_text())
    return Keyring(
        keys={kid: base64.b64decode(v) for kid, v in data["keys"].items()},
        active_key_id=data["active"],
    )
