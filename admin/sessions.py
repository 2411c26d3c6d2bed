"""Console sessions and sign-in throttling, both in Redis.

Sessions live in Redis so every admin process shares them and signing out ends a
session everywhere at once.  The cookie holds a random id; Redis holds only its
sha256, so a copy of Redis (or its AOF) hands out no live session.

Time comes from an injected clock, compared against timestamps stored in the values,
rather than from Redis TTLs alone: the idle timeout, the absolute lifetime and the
lockout window are then decided by the application's clock (frozen in tests), and the
TTLs only collect garbage.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import redis.asyncio as aioredis

from core.redis import Keyspace
from core.settings import AdminSettings

Clock = Callable[[], float]

# What still stands between a password check and the console, in this order.
Stage = Literal["totp", "password", "enrol", "full"]

# Writing "last seen" on every request would make each page view a Redis write;
# once a half-minute keeps the idle timeout exact to within that.
_TOUCH_EVERY_S = 30.0


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_sid(operator_id: int) -> str:
    # The operator's id, then 32 random bytes: the id lets the guard read the operator
    # while Redis finds the session (operator_hint), and decides nothing — the whole
    # value is the session's key, so another id in front finds no session.
    return f"{operator_id}.{secrets.token_urlsafe(32)}"


def operator_hint(sid: str) -> int | None:
    """The operator id a session cookie names in front, None when it names none (a
    value from before, or not one of ours).  Only a hint: the session it opens says
    whose it is, and the guard checks the two agree."""
    head, dot, _rest = sid.partition(".")
    if not dot or not head.isdigit() or len(head) > 18:
        return None
    return int(head)


@dataclass(frozen=True)
class Session:
    operator_id: int
    # The operator's session_epoch when this session began: a password reset,
    # disable or role change bumps it and so ends this session.
    epoch: int
    stage: Stage
    csrf: str
    created: float
    seen: float
    # During TOTP enrolment: the new secret, sealed with the field key, until confirmed.
    pending_totp: str | None = None
    # Set by the guard on load; never stored.
    sid_hash: str = field(default="", compare=False)


class SessionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        settings: AdminSettings,
        keyspace: Keyspace | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keyspace or Keyspace()
        self.clock = clock

    def _key(self, sid_hash: str) -> str:
        return self.keys.key("session", sid_hash)

    async def _save(self, sid_hash: str, session: Session) -> None:
        body = {k: v for k, v in asdict(session).items() if k != "sid_hash"}
        remaining = self.settings.session_max_s - (self.clock() - session.created)
        ttl = int(max(1, min(remaining, self.settings.session_idle_s + _TOUCH_EVERY_S)))
        await self.redis.set(self._key(sid_hash), json.dumps(body), ex=ttl)

    async def create(self, *, operator_id: int, epoch: int, stage: Stage) -> tuple[str, Session]:
        """A new session (new id, new CSRF token); returns the cookie value and it."""
        sid = _new_sid(operator_id)
        now = self.clock()
        session = Session(
            operator_id=operator_id,
            epoch=epoch,
            stage=stage,
            csrf=secrets.token_urlsafe(24),
            created=now,
            seen=now,
            sid_hash=_digest(sid),
        )
        await self._save(session.sid_hash, session)
        return sid, session

    async def load(self, sid: str) -> Session | None:
        """The live session for a cookie value, or None (unknown, idle too long, too old)."""
        if not sid or len(sid) > 128:
            return None
        sid_hash = _digest(sid)
        raw = await self.redis.get(self._key(sid_hash))
        if raw is None:
            return None
        try:
            session = Session(**json.loads(raw), sid_hash=sid_hash)
        except (TypeError, ValueError):
            await self.redis.delete(self._key(sid_hash))
            return None
        now = self.clock()
        if (
            now - session.seen > self.settings.session_idle_s
            or now - session.created > self.settings.session_max_s
        ):
            await self.redis.delete(self._key(sid_hash))
            return None
        if now - session.seen >= _TOUCH_EVERY_S:
            session = replace(session, seen=now)
            await self._save(sid_hash, session)
        return session

    async def advance(self, session: Session, *, stage: Stage) -> tuple[str, Session]:
        """Move to the next stage under a *new* id (no fixation across privilege steps)."""
        await self.destroy(session)
        sid = _new_sid(session.operator_id)
        moved = replace(
            session,
            stage=stage,
            csrf=secrets.token_urlsafe(24),
            seen=self.clock(),
            pending_totp=None,
            sid_hash=_digest(sid),
        )
        await self._save(moved.sid_hash, moved)
        return sid, moved

    async def update(self, session: Session, **changes: object) -> Session:
        changed = replace(session, **changes)  # type: ignore[arg-type]
        await self._save(session.sid_hash, changed)
        return changed

    async def destroy(self, session: Session) -> None:
        await self.redis.delete(self._key(session.sid_hash))


class LoginThrottle:
    """Failed sign-ins counted per account and per source address.

    Per account: ``login_max_failures`` within ``login_window_s`` locks the account
    for ``lockout_s`` — whether or not the name exists, so the lock says nothing about
    which names are real.  Per address: a higher bar, since one office's NAT is many
    people; it stops one machine from trying many names.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        settings: AdminSettings,
        keyspace: Keyspace | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keyspace or Keyspace()
        self.clock = clock

    def _ids(self, *, account: str, address: str) -> list[tuple[str, str, int]]:
        out = [("acct", _digest(account.strip().lower()), self.settings.login_max_failures)]
        if address:
            out.append(("addr", _digest(address), self.settings.address_max_failures))
        return out

    async def locked_for(self, *, account: str, address: str) -> float:
        """Seconds until sign-in is allowed again for this account or address (0: now)."""
        now = self.clock()
        wait = 0.0
        for kind, ident, _limit in self._ids(account=account, address=address):
            until = await self.redis.get(self.keys.key("login", "lock", kind, ident))
            if until is not None:
                wait = max(wait, float(until) - now)
        return max(0.0, wait)

    async def failed(self, *, account: str, address: str) -> bool:
        """Count a failure; True when this failure locked the account or address."""
        now = self.clock()
        window = self.settings.login_window_s
        locked = False
        for kind, ident, limit in self._ids(account=account, address=address):
            fails = self.keys.key("login", "fail", kind, ident)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(fails, "-inf", now - window)
                pipe.zadd(fails, {f"{now}:{secrets.token_hex(4)}": now})
                pipe.zcard(fails)
                pipe.expire(fails, window + 60)
                _, _, count, _ = await pipe.execute()
            if int(count) >= limit:
                await self.redis.set(
                    self.keys.key("login", "lock", kind, ident),
                    str(now + self.settings.lockout_s),
                    ex=self.settings.lockout_s + 60,
                )
                await self.redis.delete(fails)
                locked = True
        return locked

    async def succeeded(self, *, account: str) -> None:
        """A full sign-in clears the account's failures (not the address's)."""
        ident = _digest(account.strip().lower())
        await self.redis.delete(self.keys.key("login", "fail", "acct", ident))

    async def unlock(self, *, account: str) -> None:
        ident = _digest(account.strip().lower())
        await self.redis.delete(
            self.keys.key("login", "fail", "acct", ident),
            self.keys.key("login", "lock", "acct", ident),
        )


_ACCEPT_STEP_LUA = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', 300)
return 1
"""


class TotpReplay:
    """The last TOTP step accepted per operator: a code is good once.

    One script, so two requests racing with the same code cannot both pass.
    """

    def __init__(self, redis: aioredis.Redis, *, keyspace: Keyspace | None = None) -> None:
        self.keys = keyspace or Keyspace()
        self._accept = redis.register_script(_ACCEPT_STEP_LUA)

    async def accept(self, *, operator_id: int, step: int) -> bool:
        key = self.keys.key("totp", "step", str(operator_id))
        return bool(await self._accept(keys=[key], args=[str(step)]))
