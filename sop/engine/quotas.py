"""WeCom's limits, planned centrally in Redis so every siyu process shares one plan.

Three limits shape what the engine may hand to the outbox, and WeCom enforces each
differently — two of them silently, so they must be planned, not discovered:

- **App messages to a member**: at most 30 a minute and 1,000 an hour; WeCom answers
  errcode 0 and drops the excess.  A sliding log per member (a sorted set of send
  times) decides the earliest moment the next reminder may go; SOP plans with a share
  of the cap (``member_minute_cap``/``member_hour_cap``) and leaves the rest to the
  edge's compliance alerts, which must never be crowded out.
- **Mass sends a customer receives**: one a day (WeCom; a corp may set fewer).  A
  reservation per customer and Beijing day, held by the touch that will use it, so a
  re-check of the same touch is not counted twice and a cancelled touch gives it back.
- **Calls per API**: about 10,000 a minute per corp.  The client's token bucket keeps
  calls below it (``bot.wecom.client``); the engine additionally spreads what it
  enqueues over minute slots so one campaign cannot fill the outbox with more than
  WeCom will take in the coming minutes — a welcome message (20 s) is never queued
  behind an hour of mass sends.

Every change is one Lua script: atomic across processes without locks.  Times are
the caller's clock (seconds since the epoch), so tests can drive them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, cast

import redis.asyncio as aioredis

from core.redis import Keyspace
from sop.engine.timing import SHANGHAI

__all__ = ["ApiPacer", "MassSendAllowance", "MemberAppQuota", "Quotas", "Slot"]

#: WeCom's per-member app-message caps (message/send): (count, window seconds).
WECOM_MEMBER_LIMITS: Final = ((30, 60), (1000, 3600))

# KEYS[1] the member's log (zset ref -> send time).  ARGV: now, ref, then pairs of
# (cap, window).  A ref already logged is re-timed to now (a re-check of the same
# message), never counted twice.  Returns {ok, wait_s}: ok=1 logged; ok=0 and the
# seconds until a slot frees.
_MEMBER_TAKE: Final = """
local now = tonumber(ARGV[1])
local ref = ARGV[2]
local longest = 0
for i = 3, #ARGV, 2 do
  local w = tonumber(ARGV[i + 1])
  if w > longest then longest = w end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local mine = redis.call('ZSCORE', KEYS[1], ref)
if mine then redis.call('ZREM', KEYS[1], ref) end
local wait = 0
for i = 3, #ARGV, 2 do
  local cap = tonumber(ARGV[i])
  local w = tonumber(ARGV[i + 1])
  local inside = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - w), '+inf', 'WITHSCORES')
  local n = #inside / 2
  if n >= cap then
    -- the oldest send that must leave the window before one more fits
    local oldest = tonumber(inside[(n - cap) * 2 + 2])
    local free_at = oldest + w - now
    if free_at > wait then wait = free_at end
  end
end
if wait > 0 then
  if mine then redis.call('ZADD', KEYS[1], mine, ref) end
  return {0, string.format('%.3f', wait)}
end
redis.call('ZADD', KEYS[1], now, ref)
redis.call('EXPIRE', KEYS[1], longest + 60)
return {1, '0'}
"""

# KEYS[1] the member's log.  ARGV: now, then (cap, window) pairs.  How many messages
# may go now without taking any: min over windows of cap - sent inside.
_MEMBER_FREE: Final = """
local now = tonumber(ARGV[1])
local free = -1
for i = 2, #ARGV, 2 do
  local cap = tonumber(ARGV[i])
  local w = tonumber(ARGV[i + 1])
  local n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - w), '+inf')
  local left = cap - n
  if free < 0 or left < free then free = left end
end
if free < 0 then free = 0 end
return free
"""

# KEYS[1] the customer's reservations for one day (set of touch refs).  ARGV: cap,
# ref, ttl.  1 when ``ref`` holds (or now takes) one of the day's ``cap`` mass sends.
_MASS_RESERVE: Final = """
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1] the API's minute slots (hash minute -> calls planned).  ARGV: first minute,
# cap per minute, calls wanted, ttl.  Fills minutes from the first one on; returns a
# flat list of (minute, calls) granted, in order.
_PACE: Final = """
local minute = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local out = {}
local guard = 0
while want > 0 and guard < 10080 do
  local used = tonumber(redis.call('HGET', KEYS[1], tostring(minute)) or '0')
  local take = math.min(cap - used, want)
  if take > 0 then
    redis.call('HINCRBY', KEYS[1], tostring(minute), take)
    table.insert(out, minute)
    table.insert(out, take)
    want = want - take
  end
  minute = minute + 1
  guard = guard + 1
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return out
"""


@dataclass(frozen=True)
class Slot:
    """A decision: ``ok`` now, or wait ``wait_s`` seconds for the next free slot."""

    ok: bool
    wait_s: float = 0.0


def _num(raw: Any) -> float:
    return float(raw.decode() if isinstance(raw, bytes) else raw)


class MemberAppQuota:
    """App messages per member within WeCom's caps (a share of them, see module doc)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keyspace,
        minute_cap: int,
        hour_cap: int,
    ) -> None:
        if not 1 <= minute_cap <= WECOM_MEMBER_LIMITS[0][0]:
            raise ValueError(f"minute_cap must be 1..{WECOM_MEMBER_LIMITS[0][0]}")
        if not 1 <= hour_cap <= WECOM_MEMBER_LIMITS[1][0]:
            raise ValueError(f"hour_cap must be 1..{WECOM_MEMBER_LIMITS[1][0]}")
        self._redis = redis
        self._keys = keys
        self.limits = ((minute_cap, 60), (hour_cap, 3600))
        # Also read by the dispatcher for its notes about rows it moved to a later slot.
        self.redis = redis
        self.keys = keys
        self._take = redis.register_script(_MEMBER_TAKE)
        self._free = redis.register_script(_MEMBER_FREE)

    def _key(self, userid: str) -> str:
        return self._keys.key("sop", "quota", "member", userid)

    def _args(self) -> list[str]:
        return [str(v) for pair in self.limits for v in pair]

    async def take(self, userid: str, *, ref: str, now: float) -> Slot:
        """Log one message to ``userid`` sent at ``now``; refused with the wait if full.

        ``ref`` names the message (an outbox row): taking it again re-times it.
        """
        ok, wait = await self._take(keys=[self._key(userid)], args=[repr(now), ref, *self._args()])
        return Slot(bool(int(ok)), _num(wait))

    async def free(self, userid: str, *, now: float) -> int:
        """How many messages may go to ``userid`` right now."""
        return int(await self._free(keys=[self._key(userid)], args=[repr(now), *self._args()]))

    async def release(self, userid: str, *, ref: str) -> None:
        """A logged message that never left (cancelled before the call)."""
        await self._redis.zrem(self._key(userid), ref)


def beijing_day(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).astimezone(SHANGHAI).date()


class MassSendAllowance:
    """Mass sends a customer may receive per Beijing day (WeCom: one; a corp: fewer)."""

    def __init__(self, redis: aioredis.Redis, *, keys: Keyspace, per_day: int) -> None:
        if per_day < 1:
            raise ValueError("per_day must be at least 1")
        self._redis = redis
        self._keys = keys
        self.per_day = per_day
        self._reserve = redis.register_script(_MASS_RESERVE)

    def _key(self, external_userid: str, day: date) -> str:
        return self._keys.key("sop", "quota", "mass", day.isoformat(), external_userid)

    async def reserve(self, external_userid: str, *, ref: str, now: float) -> bool:
        """Hold one of the customer's mass sends of today for ``ref`` (idempotent)."""
        day = beijing_day(now)
        ttl = 2 * 24 * 3600
        got = await self._reserve(
            keys=[self._key(external_userid, day)], args=[self.per_day, ref, ttl]
        )
        return bool(int(got))

    async def release(self, external_userid: str, *, ref: str, now: float) -> None:
        await cast(
            "Awaitable[int]", self._redis.srem(self._key(external_userid, beijing_day(now)), ref)
        )

    async def holders(self, external_userid: str, *, now: float) -> set[str]:
        raw = await cast(
            "Awaitable[set[Any]]",
            self._redis.smembers(self._key(external_userid, beijing_day(now))),
        )
        return {r.decode() if isinstance(r, bytes) else str(r) for r in raw}


class ApiPacer:
    """Minute slots per API: what the engine enqueues never outruns WeCom's limit."""

    def __init__(
        self, redis: aioredis.Redis, *, keys: Keyspace, per_minute: dict[str, int], default: int
    ) -> None:
        if default < 1 or any(v < 1 for v in per_minute.values()):
            raise ValueError("API limits must be at least 1 a minute")
        self._keys = keys
        self._per_minute = dict(per_minute)
        self._default = default
        self._pace = redis.register_script(_PACE)

    def limit(self, api: str) -> int:
        return self._per_minute.get(api, self._default)

    async def plan(self, api: str, calls: int, *, now: float) -> list[datetime]:
        """``calls`` send times, filling this minute's free slots first, then later ones.

        Each time is the start of its minute slot, or ``now`` for the current minute;
        the client's token bucket spreads calls inside a minute.
        """
        if calls <= 0:
            return []
        minute = math.floor(now / 60)
        raw = await self._pace(
            keys=[self._keys.key("sop", "pace", api)],
            args=[minute, self.limit(api), calls, 7 * 24 * 3600],
        )
        out: list[datetime] = []
        flat = [int(_num(v)) for v in raw]
        for m, n in zip(flat[::2], flat[1::2], strict=True):
            at = max(now, m * 60.0)
            out.extend([datetime.fromtimestamp(at, UTC)] * n)
        return out


@dataclass(frozen=True)
class Quotas:
    """The engine's quota planners, built once per process from the settings."""

    member: MemberAppQuota
    mass: MassSendAllowance
    pacer: ApiPacer

    @classmethod
    def build(
        cls,
        redis: aioredis.Redis,
        *,
        namespace: str = "siyu",
        member_minute_cap: int,
        member_hour_cap: int,
        mass_send_per_day: int,
        api_per_minute: dict[str, int],
        api_default_per_minute: int,
    ) -> Quotas:
        keys = Keyspace(namespace)
        return cls(
            member=MemberAppQuota(
                redis, keys=keys, minute_cap=member_minute_cap, hour_cap=member_hour_cap
            ),
            mass=MassSendAllowance(redis, keys=keys, per_day=mass_send_per_day),
            pacer=ApiPacer(
                redis, keys=keys, per_minute=api_per_minute, default=api_default_per_minute
            ),
        )
