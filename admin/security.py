"""Credentials: passwords (argon2id), API keys, TOTP, and where a request came from.

Pure functions and small typed adapters over argon2-cffi, pyotp and segno; no
database, no Redis.  The flows (``admin.flows``) decide what to do with the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# ------------------------------------------------------------------ passwords

# argon2id with argon2-cffi's defaults (RFC 9106's second recommended option:
# t=3, m=64 MiB, p=4).  Stored hashes carry their parameters, so raising them later
# only means rehashing at the next successful sign-in (``needs_rehash``).
_HASHER = PasswordHasher()
# Verified when the name is unknown, so "no such operator" costs as long as "wrong
# password" and the answer time does not tell which names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-cost check; an unknown operator (``None``) verifies a dummy hash."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)


def password_problem(password: str, *, name: str) -> str | None:
    """Why a new password is refused (zh-CN, shown beside the field), or None.

    Length over composition rules (NIST SP 800-63B §5.1.1): at least 12 characters,
    not the sign-in name, not one character repeated.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"密码至少 {MIN_PASSWORD_LENGTH} 个字符"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"密码最多 {MAX_PASSWORD_LENGTH} 个字符"
    if name and name.lower() in password.lower():
        return "密码不能包含登录名"
    if len(set(password)) < 4:
        return "密码过于简单"
    return None


def generated_password() -> str:
    """A one-time password an administrator hands over (changed at first sign-in)."""
    return secrets.token_urlsafe(12)


# ------------------------------------------------------------------ API keys

API_KEY_PREFIX = "siyu_"


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    secret_hash: str
    # The whole key, shown to its creator once and never stored.
    plaintext: str


def new_api_key() -> NewApiKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(
        key_id=key_id,
        secret_hash=hash_api_secret(secret),
        plaintext=f"{API_KEY_PREFIX}{key_id}_{secret}",
    )


def hash_api_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(presented: str) -> tuple[str, str] | None:
    """``siyu_<key id>_<secret>`` → (key id, secret); anything else → None."""
    if not presented.startswith(API_KEY_PREFIX):
        return None
    parts = presented[len(API_KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12 or not parts[1]:
        return None
    key_id, secret = parts
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


def api_secret_matches(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_api_secret(secret))


def parse_networks(values: Sequence[str]) -> list[str]:
    """Normalised CIDRs; raises ValueError naming the first value that is not one."""
    out = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"不是有效的 IP 地址或网段：{text}") from None
    return out


def address_allowed(address: str, networks: Sequence[str]) -> bool:
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def client_address(remote: str | None, forwarded_for: str, trusted_proxies: Sequence[str]) -> str:
    """The caller's address: the peer, or — behind trusted proxies — the nearest
    address in X-Forwarded-For that is not itself a trusted proxy.

    Only trusted hops are believed: a client can write anything into the header, so
    reading its leftmost value would let anyone pick the address that lockouts,
    allow-lists and the audit log see.
    """
    peer = remote or ""
    if not trusted_proxies or not address_allowed(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not address_allowed(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


# ------------------------------------------------------------------ TOTP

TOTP_ISSUER = "siyu 私域"


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, *, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=TOTP_ISSUER)


def totp_qr_svg(uri: str) -> str:
    """The enrolment QR code as inline SVG (no image request, nothing from outside)."""
    buf = io.BytesIO()
    segno.make(uri, error="m").save(
        buf,
        kind="svg",
        scale=5,
        border=2,
        xmldecl=False,
        svgns=True,
        nl=False,
        title="两步验证二维码",
    )
    return buf.getvalue().decode()


def totp_step(secret: str, code: str, *, at: datetime | None = None) -> int | None:
    """The time step a code belongs to (±1 step of clock drift), or None.

    The caller refuses a step it has already accepted for this operator, so a code
    seen over a shoulder cannot be used a second time within its 30 s.
    """
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = at or datetime.now(UTC)
    current = totp.timecode(now)
    for offset in (0, -1, 1):
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            return current + offset
    return None
