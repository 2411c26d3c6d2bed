"""The one async client for WeCom's server API (``https://qyapi.weixin.qq.com/cgi-bin/...``).

Every domain (outbox dispatcher, tag sync, SOP, the receiver's contact lookups) calls
WeCom through :class:`WeComClient`, so the rules WeCom imposes live in one place:

* **Access token** (``gettoken``): valid 7,200 s, and WeCom asks callers to cache it —
  fetching it too often is itself rate limited.  The token is cached in Redis so every
  siyu process shares it, with a TTL a margin below ``expires_in``.  A refresh is
  *single-flight*: one coroutine in one process holds a short Redis lock and calls
  ``gettoken``; everyone else polls the cache until the new token appears.
* **Token errors** 40014 (invalid), 42001 (expired), 42009 (expired, suite/3rd-party
  flavour): drop the cached token — only if it is still the token that failed, so a
  slow caller cannot throw away a token another process just fetched — refresh once
  and retry once.
* **-1 system busy**: WeCom's docs say retry, at most 3 times; we back off exponentially.
* **45009 / 45033** (frequency / concurrency limit): never hammer.  We raise
  :class:`WeComRateLimited` with ``retry_after_s >= 60``; the outbox dispatcher
  reschedules the row.
* **Everything else** (60020 caller IP not trusted, 40001 bad secret, 40003/40058/84061
  bad parameters, ...) raises :class:`WeComError` at once: retrying cannot help.
* **HTTP failures and timeouts** raise :class:`WeComTransportError`, which is retryable.
* **WeCom unreachable**: without back-off every outbox row and every lookup would ask
  for a token and fail, hundreds of ``gettoken`` calls and log lines a second.  So a
  failed ``gettoken`` is remembered (shared in Redis, by every process) and repeated to
  callers without calling WeCom for a delay that doubles per consecutive failure; and
  each API has a circuit breaker (in this process) that opens after a few consecutive
  transport failures, refuses calls at once while open, and lets one probe through
  after a delay (doubling while probes fail).  Both refusals raise
  :class:`WeComUnavailable` — the call was never sent, retry after ``retry_after_s`` —
  and only the state changes are logged (breaker opened / closed, gettoken failing /
  recovered), never each refused call.
* **Rate limits**: WeCom allows about 10,000 calls a minute per API per corp.  A token
  bucket per API lives in Redis (one Lua script, atomic, shared by all processes);
  waiting for a token is an ``asyncio.sleep``, never a blocking call.

Which secret an API is called with
----------------------------------
``secrets`` maps a *kind* to a secret: ``"app"`` is the self-built app's secret and is
required; ``"contact"`` is the legacy 客户联系 secret and is optional.  Corps created
since 2023-12-01 call the 客户联系 APIs (``externalcontact/*``) with the secret of a
self-built app added under 客户联系 → 可调用接口的应用, and have no 客户联系 secret.  So:
``externalcontact/*`` uses ``"contact"`` when it is configured and ``"app"`` otherwise;
every other API uses ``"app"``.  A caller may force a kind with ``secret=``.

Secrets and tokens never appear in logs or exception messages: URLs carrying them are
never formatted into either, and aiohttp exceptions (whose text can include the request
URL with ``access_token=``) are replaced, not chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import secrets as pysecrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import redis.asyncio as aioredis

from core.crypto import DecryptionError, Keyring
from core.redis import Keyspace

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "ERRCODE_TRANSPORT",
    "RATE_LIMIT_RETRY_AFTER_S",
    "WeComClient",
    "WeComError",
    "WeComRateLimited",
    "WeComTransportError",
    "WeComUnavailable",
    "is_retryable",
]

#: Not a WeCom code: the request failed below WeCom (connection, timeout, HTTP status,
#: a body that is not JSON).  Retryable.
ERRCODE_TRANSPORT: Final = -100

ERRCODE_BUSY: Final = -1
#: 40014 invalid access_token, 42001 expired, 42009 expired (WeCom's 全局错误码).
TOKEN_ERRCODES: Final = frozenset({40014, 42001, 42009})
#: 45009 api freq out of limit, 45033 api concurrent out of limit.
RATE_LIMIT_ERRCODES: Final = frozenset({45009, 45033})
#: 41096: another app is sending the welcome message right now; WeCom says retry.
_OTHER_RETRYABLE: Final = frozenset({41096})

#: WeCom asks callers hitting 45009/45033 to slow down; a minute clears its windows.
RATE_LIMIT_RETRY_AFTER_S: Final = 60.0

#: ~10,000 calls a minute per API per corp (WeCom's 频率限制 page): capacity, refill/s.
DEFAULT_RATE_LIMIT: Final[tuple[int, float]] = (10_000, 10_000 / 60)

_CONTACT_API_PREFIX: Final = "externalcontact/"

# Token bucket, atomic in Redis so every process draws from the same bucket.
# Returns the seconds to wait (as a string: Lua numbers become Redis integers) — "0"
# when a token was taken.  The caller's clock is used (not Redis TIME) so tests can
# drive it; siyu hosts are NTP-synced and a backwards step only delays refill.
_BUCKET_LUA: Final = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 60000)
return string.format('%.17g', wait)
"""

# Delete KEYS[1] only if it still holds ARGV[1]: releases our refresh lock and no one
# else's, and drops a failed token without dropping a newer one.
_COMPARE_AND_DELETE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def is_retryable(errcode: int) -> bool:
    """Whether a call that failed with ``errcode`` may succeed if simply tried again later.

    -1 (busy), token errors, 45009/45033 (after backing off), 41096 (welcome message
    being distributed by another app) and transport failures are; 41051 (welcome code
    used or expired), 60020 (IP not trusted), 40001 (bad secret) and parameter errors
    are not.
    """
    return (
        errcode in (ERRCODE_BUSY, ERRCODE_TRANSPORT)
        or errcode in TOKEN_ERRCODES
        or errcode in RATE_LIMIT_ERRCODES
        or errcode in _OTHER_RETRYABLE
    )


class WeComError(Exception):
    """WeCom answered with a non-zero ``errcode`` (or, for subclasses, did not answer).

    The message carries the API name, errcode and WeCom's errmsg — never a secret,
    token or URL.
    """

    errcode: int
    errmsg: str
    api: str

    def __init__(self, *, api: str, errcode: int, errmsg: str) -> None:
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"WeCom {api}: errcode {errcode}: {errmsg}")

    @property
    def retryable(self) -> bool:
        return is_retryable(self.errcode)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[WeComError], state: dict[str, Any]) -> WeComError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, f"WeCom {err.api}: errcode {err.errcode}: {err.errmsg}")
    return err


class WeComRateLimited(WeComError):
    """45009/45033, or our own bucket could not grant a call soon enough.

    ``retry_after_s`` is when the outbox should try again: at least 60 s for WeCom's own
    limits, the bucket's refill time for the local one.
    """

    retry_after_s: float

    def __init__(self, *, api: str, errcode: int, errmsg: str, retry_after_s: float) -> None:
        super().__init__(api=api, errcode=errcode, errmsg=errmsg)
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return True


class WeComTransportError(WeComError):
    """No usable answer: connection error, timeout, HTTP error status, non-JSON body.

    ``request_sent`` is False only when no connection was made (the request never
    left); otherwise WeCom may have acted on it, and a write that must not happen
    twice is not simply sent again (``bot.outbox.resend_is_safe``).
    """

    def __init__(self, *, api: str, errmsg: str, request_sent: bool = True) -> None:
        super().__init__(api=api, errcode=ERRCODE_TRANSPORT, errmsg=errmsg)
        self.request_sent = request_sent

    @property
    def retryable(self) -> bool:
        return True


class WeComUnavailable(WeComRateLimited):
    """Refused here, never sent: WeCom was just found unreachable (breaker open) or
    ``gettoken`` failed moments ago.

    A rate-limit refusal in kind — the call did not leave this process, so a
    non-idempotent write is safe to send later, and the outbox reschedules it after
    ``retry_after_s`` without counting an attempt.
    """

    def __init__(self, *, api: str, errmsg: str, retry_after_s: float) -> None:
        super().__init__(
            api=api, errcode=ERRCODE_TRANSPORT, errmsg=errmsg, retry_after_s=retry_after_s
        )


@dataclass
class _Breaker:
    """One API's circuit: closed (``open_until == 0``), open, or half-open (probing)."""

    failures: int = 0  # consecutive transport failures while closed
    open_until: float = 0.0  # clock time the next probe may go; 0 = closed
    openings: int = 0  # consecutive openings: the delay doubles with each
    opened_at: float = 0.0
    probing: bool = False


@dataclass(frozen=True)
class MediaFile:
    """A file for ``media/upload`` (multipart field ``media``)."""

    filename: str
    content: bytes
    content_type: str

    def form(self) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field(
            "media", self.content, filename=self.filename, content_type=self.content_type
        )
        return data


class WeComClient:
    """Async client for WeCom's server API, safe to use from many processes at once.

    One instance per process (it holds no connection of its own: the aiohttp session and
    the Redis client are injected and owned by the app's lifecycle).  Keys in Redis::

        {namespace}:wecom:{corp_id}:token:{kind}        cached access_token
        {namespace}:wecom:{corp_id}:token-lock:{kind}   single-flight refresh lock
        {namespace}:wecom:{corp_id}:bucket:{api}        token bucket per API
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis,
        corp_id: str,
        base_url: str,
        secrets: Mapping[str, str],
        agent_id: int,
        timeout_s: float = 10.0,
        namespace: str = "siyu",
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        default_rate_limit: tuple[int, float] = DEFAULT_RATE_LIMIT,
        max_rate_wait_s: float | None = None,
        busy_retries: int = 3,
        backoff_base_s: float = 0.5,
        token_margin_s: int = 300,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        keyring: Keyring | None = None,
        breaker_threshold: int = 5,
        breaker_open_s: float = 5.0,
        breaker_max_open_s: float = 60.0,
        token_retry_s: float = 1.0,
        token_max_retry_s: float = 60.0,
    ) -> None:
        if not secrets.get("app"):
            raise ValueError("secrets['app'] (the self-built app's secret) is required")
        for api, (capacity, refill) in {**(rate_limits or {}), "*": default_rate_limit}.items():
            if capacity < 1 or refill <= 0:
                raise ValueError(f"rate limit for {api!r} needs capacity >= 1 and refill > 0")
        self._session = session
        self._redis = redis
        self.corp_id = corp_id
        self._base_url = base_url.rstrip("/")
        self._secrets = {kind: value for kind, value in secrets.items() if value}
        self.agent_id = agent_id
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._prefix = Keyspace(namespace).key("wecom", corp_id)
        self._rate_limits = dict(rate_limits or {})
        self._default_rate_limit = default_rate_limit
        # Waiting longer than a request may take is worse than handing the row back to
        # the outbox, which persists the delay instead of holding a coroutine.
        self._max_rate_wait_s = timeout_s if max_rate_wait_s is None else max_rate_wait_s
        self._busy_retries = busy_retries
        self._backoff_base_s = backoff_base_s
        self._token_margin_s = token_margin_s
        self._clock = clock
        self._sleep = sleep
        # A refresh lock outlives one gettoken round trip, so a crashed holder frees it soon.
        self._lock_ttl_ms = int((timeout_s + 5) * 1000)
        self._local_locks: dict[str, asyncio.Lock] = {}
        # Access tokens are shared through Redis (and its AOF): sealed with the field
        # key there, so a copy of Redis's files does not hand out API access.
        self._keyring = keyring
        self._stored_form: dict[str, tuple[str, str]] = {}  # kind -> (token, as stored)
        self._bucket = redis.register_script(_BUCKET_LUA)
        self._compare_and_delete = redis.register_script(_COMPARE_AND_DELETE_LUA)
        # Back-off while WeCom is unreachable (see the module docstring).
        self._breakers: dict[str, _Breaker] = {}
        self._breaker_threshold = max(1, breaker_threshold)
        self._breaker_open_s = breaker_open_s
        self._breaker_max_open_s = max(breaker_open_s, breaker_max_open_s)
        self._token_retry_s = token_retry_s
        self._token_max_retry_s = max(token_retry_s, token_max_retry_s)

    def __repr__(self) -> str:  # never show secrets
        return f"WeComClient(corp_id={self.corp_id!r}, kinds={sorted(self._secrets)})"

    # ------------------------------------------------------------------ core

    def secret_kind_for(self, api: str, requested: str | None = None) -> str:
        """The secret kind ``api`` is called with (see the module docstring)."""
        if requested is not None:
            if requested in self._secrets:
                return requested
            if requested == "contact":  # optional since 2023-12-01: the app's secret serves
                return "app"
            raise ValueError(f"no secret configured for kind {requested!r}")
        if _normalise_api(api).startswith(_CONTACT_API_PREFIX) and "contact" in self._secrets:
            return "contact"
        return "app"

    async def call(
        self,
        api: str,
        *,
        method: str = "POST",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        secret: str | None = None,
        upload: MediaFile | None = None,
    ) -> dict[str, Any]:
        """Call ``/cgi-bin/{api}`` and return WeCom's JSON answer (``errcode`` 0).

        ``secret`` forces a secret kind; ``None`` picks it per API.  Raises
        :class:`WeComError` (or a subclass) for any non-zero errcode left after the
        retries described in the module docstring.
        """
        api = _normalise_api(api)
        kind = self.secret_kind_for(api, secret)
        busy_attempts = 0
        token_retried = False
        while True:
            try:
                await self._take_rate_token(api)
                token = await self._access_token(kind)
                body = await self._request(api, method, params, json, token, upload)
                errcode = _errcode(body)
                if errcode == 0:
                    return body
                errmsg = str(body.get("errmsg", ""))
                if errcode in TOKEN_ERRCODES and not token_retried:
                    # Refresh once, retry once: a second token error means something
                    # else is wrong (wrong app, revoked secret) and looping would only
                    # burn gettoken's own quota.
                    token_retried = True
                    log.info(
                        "wecom token rejected; refreshing",
                        extra={"api": api, "errcode": errcode, "kind": kind},
                    )
                    await self._invalidate_token(kind, token)
                    continue
                raise self._error_for(api, errcode, errmsg)
            except WeComUnavailable:
                raise  # refused here, never sent: the state change was logged once
            except WeComError as exc:
                if exc.errcode == ERRCODE_BUSY and busy_attempts < self._busy_retries:
                    delay = self._backoff_base_s * (2**busy_attempts)
                    busy_attempts += 1
                    log.warning(
                        "wecom busy (-1); retrying",
                        extra={"api": exc.api, "attempt": busy_attempts, "delay_s": delay},
                    )
                    await self._sleep(delay)
                    continue
                log.warning(
                    "wecom call failed",
                    extra={"api": exc.api, "errcode": exc.errcode, "retryable": exc.retryable},
                )
                raise

    @staticmethod
    def _error_for(api: str, errcode: int, errmsg: str) -> WeComError:
        if errcode in RATE_LIMIT_ERRCODES:
            return WeComRateLimited(
                api=api, errcode=errcode, errmsg=errmsg, retry_after_s=RATE_LIMIT_RETRY_AFTER_S
            )
        return WeComError(api=api, errcode=errcode, errmsg=errmsg)

    async def _request(
        self,
        api: str,
        method: str,
        params: Mapping[str, Any] | None,
        json: Any,
        token: str | None,
        upload: MediaFile | None = None,
    ) -> dict[str, Any]:
        query: dict[str, str] = {
            k: _query_value(v) for k, v in (params or {}).items() if v is not None
        }
        if token is not None:
            query["access_token"] = token
        url = f"{self._base_url}/cgi-bin/{api}"
        breaker = self._admit(api)
        reached = False
        try:
            async with self._session.request(
                method,
                url,
                params=query,
                # A file goes as multipart (media/upload), built anew for each attempt.
                json=json if upload is None else None,
                data=upload.form() if upload is not None else None,
                timeout=self._timeout,
            ) as resp:
                # A 4xx is WeCom (or its gateway) answering: reachable, if unusable.
                reached = resp.status < 500 and resp.status != 429
                if resp.status != 200:
                    raise WeComTransportError(api=api, errmsg=f"HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except WeComTransportError:
            self._settle_breaker(api, breaker, reached=reached)
            raise
        except TimeoutError as exc:
            self._settle_breaker(api, breaker, reached=False)
            raise WeComTransportError(
                api=api,
                errmsg=f"timed out after {self._timeout_s}s",
                request_sent=not isinstance(exc, aiohttp.ConnectionTimeoutError),
            ) from None
        except (aiohttp.ClientError, ValueError) as exc:
            self._settle_breaker(api, breaker, reached=False)
            # Replace, never chain: aiohttp's messages can include the URL and its token.
            raise WeComTransportError(
                api=api,
                errmsg=type(exc).__name__,
                request_sent=not isinstance(exc, aiohttp.ClientConnectorError),
            ) from None
        except BaseException:
            # Cancelled mid-request: no verdict on WeCom, but free the half-open probe.
            if breaker is not None:
                breaker.probing = False
            raise
        if not isinstance(body, dict):
            self._settle_breaker(api, breaker, reached=False)
            raise WeComTransportError(api=api, errmsg="answer is not a JSON object")
        self._settle_breaker(api, breaker, reached=True)
        return body

    # ------------------------------------------------------- circuit breaker

    def _admit(self, api: str) -> _Breaker | None:
        """Let a request to ``api`` go, or raise :class:`WeComUnavailable` (breaker open).

        Returns the breaker when this request is its half-open probe.
        """
        b = self._breakers.get(api)
        if b is None or not b.open_until:
            return None
        now = self._clock()
        if now < b.open_until:
            raise WeComUnavailable(
                api=api,
                errmsg=f"not sent: WeCom unreachable ({b.failures} transport failures in a "
                f"row); next probe in {b.open_until - now:.0f}s",
                retry_after_s=b.open_until - now,
            )
        if b.probing:  # one probe at a time; the others wait for its verdict
            raise WeComUnavailable(
                api=api,
                errmsg="not sent: WeCom unreachable; a probe is in flight",
                retry_after_s=max(1.0, self._breaker_open_s),
            )
        b.probing = True
        return b

    def _settle_breaker(self, api: str, probe: _Breaker | None, *, reached: bool) -> None:
        """Record a request's verdict: WeCom answered (``reached``) or it did not."""
        now = self._clock()
        b = self._breakers.get(api)
        if reached:
            if b is not None:
                del self._breakers[api]
                if b.open_until:
                    log.warning(
                        "wecom circuit closed: WeCom answers again",
                        extra={"api": api, "open_s": round(now - b.opened_at, 1)},
                    )
            return
        if b is None:
            b = self._breakers[api] = _Breaker()
        b.failures += 1
        if probe is not None and probe is b:
            # The half-open probe failed: stay open, wait longer (no new log line).
            b.probing = False
            b.openings += 1
            b.open_until = now + self._open_delay(b.openings)
            return
        if b.open_until:
            return  # sent before the breaker opened; already open
        if b.failures >= self._breaker_threshold:
            b.openings = 1
            b.opened_at = now
            b.open_until = now + self._open_delay(1)
            log.warning(
                "wecom circuit opened: calls refused until a probe succeeds",
                extra={"api": api, "failures": b.failures, "retry_in_s": self._breaker_open_s},
            )

    def _open_delay(self, openings: int) -> float:
        return float(min(self._breaker_open_s * 2 ** (openings - 1), self._breaker_max_open_s))

    # --------------------------------------------------------- access token

    def _token_key(self, kind: str) -> str:
        return f"{self._prefix}:token:{kind}"

    async def _access_token(self, kind: str) -> str:
        """The cached token for ``kind``, fetching it single-flight when missing."""
        cached = await self._cached_token(kind)
        if cached is not None:
            return cached
        await self._raise_recent_token_failure(kind)
        # In-process single flight first, so one process sends one poller to Redis.
        lock = self._local_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            return await self._refresh_token(kind)

    def _token_aad(self, kind: str) -> str:
        return f"wecom-token:{self.corp_id}:{kind}"

    async def _cached_token(self, kind: str) -> str | None:
        raw = await self._redis.get(self._token_key(kind))
        if raw is None:
            return None
        stored = raw.decode() if isinstance(raw, bytes) else str(raw)
        if self._keyring is None:
            return stored
        try:
            token = self._keyring.open_text(stored, aad=self._token_aad(kind))
        except (DecryptionError, ValueError):
            # Stored by a process without the key (or in clear by an older version):
            # treat as missing, so a refresh replaces it with a sealed token.
            return None
        self._stored_form[kind] = (token, stored)
        return token

    async def _refresh_token(self, kind: str) -> str:
        lock_key = f"{self._prefix}:token-lock:{kind}"
        deadline = time.monotonic() + self._lock_ttl_ms / 1000 + self._timeout_s
        poll_s = 0.02
        while True:
            cached = await self._cached_token(kind)
            if cached is not None:
                return cached
            # The holder we waited for (here or in another process) may have failed:
            # repeat its failure instead of asking gettoken again.
            await self._raise_recent_token_failure(kind)
            owner = pysecrets.token_hex(8)
            if await self._redis.set(lock_key, owner, nx=True, px=self._lock_ttl_ms):
                try:
                    # Someone may have stored a token between our read and our lock.
                    cached = await self._cached_token(kind)
                    if cached is not None:
                        return cached
                    await self._raise_recent_token_failure(kind)
                    return await self._fetch_token_remembering_failure(kind)
                finally:
                    await self._compare_and_delete(keys=[lock_key], args=[owner])
            if time.monotonic() > deadline:
                raise WeComTransportError(
                    api="gettoken", errmsg="timed out waiting for another process's refresh"
                )
            # Another process is refreshing: wait for its token instead of stampeding
            # gettoken (which has its own, much lower, limit).
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, 0.2)

    def _token_failure_key(self, kind: str) -> str:
        return f"{self._prefix}:token-fail:{kind}"

    async def _raise_recent_token_failure(self, kind: str) -> None:
        """Raise the last ``gettoken`` failure while its back-off lasts (negative cache).

        Kept in Redis beside the token, so every process backs off together; judged
        by this client's clock, so tests drive it.
        """
        raw = await self._redis.get(self._token_failure_key(kind))
        if raw is None:
            return
        try:
            failure = jsonlib.loads(raw)
            retry_at = float(failure["retry_at"])
            errcode = int(failure["errcode"])
            errmsg = str(failure["errmsg"])
        except (ValueError, KeyError, TypeError):
            return
        wait = retry_at - self._clock()
        if wait <= 0:
            return
        if errcode == ERRCODE_TRANSPORT:
            raise WeComUnavailable(
                api="gettoken",
                errmsg=f"not sent: gettoken failed moments ago ({errmsg}); "
                f"next attempt in {wait:.0f}s",
                retry_after_s=wait,
            )
        # WeCom's own answer (40001 bad secret, -1 busy, ...), repeated as it was.
        raise self._error_for("gettoken", errcode, errmsg)

    async def _fetch_token_remembering_failure(self, kind: str) -> str:
        key = self._token_failure_key(kind)
        try:
            token = await self._fetch_token(kind)
        except WeComError as exc:
            raw = await self._redis.get(key)
            failures = 1
            if raw is not None:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    failures = int(jsonlib.loads(raw).get("failures", 0)) + 1
            delay = min(self._token_retry_s * 2 ** (failures - 1), self._token_max_retry_s)
            record = {
                "retry_at": self._clock() + delay,
                "errcode": exc.errcode,
                "errmsg": exc.errmsg[:200],
                "failures": failures,
            }
            # Outlives the back-off so the count keeps doubling across an outage.
            ttl_s = int(self._token_max_retry_s * 4) + 60
            await self._redis.set(key, jsonlib.dumps(record), ex=ttl_s)
            if failures == 1:
                log.warning(
                    "wecom gettoken failing; backing off",
                    extra={"kind": kind, "errcode": exc.errcode, "retry_in_s": delay},
                )
            raise
        if await self._redis.delete(key):
            log.warning("wecom gettoken recovered", extra={"kind": kind})
        return token

    async def _fetch_token(self, kind: str) -> str:
        body = await self._request(
            "gettoken",
            "GET",
            {"corpid": self.corp_id, "corpsecret": self._secrets[kind]},
            None,
            None,
        )
        errcode = _errcode(body)
        if errcode != 0:
            # 40001 invalid secret / 40013 invalid corpid: a configuration problem.
            raise self._error_for("gettoken", errcode, str(body.get("errmsg", "")))
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeComTransportError(api="gettoken", errmsg="answer has no access_token")
        expires_in = int(body.get("expires_in", 7200))
        ttl = max(1, expires_in - min(self._token_margin_s, expires_in // 2))
        stored = (
            self._keyring.seal_text(token, aad=self._token_aad(kind)) if self._keyring else token
        )
        self._stored_form[kind] = (token, stored)
        await self._redis.set(self._token_key(kind), stored, ex=ttl)
        log.info("wecom access token refreshed", extra={"kind": kind, "ttl_s": ttl})
        return token

    async def _invalidate_token(self, kind: str, failed_token: str) -> None:
        # Compare what Redis holds: the sealed form of the token that failed.
        token, stored = self._stored_form.get(kind, ("", ""))
        value = stored if token == failed_token and stored else failed_token
        await self._compare_and_delete(keys=[self._token_key(kind)], args=[value])

    # ---------------------------------------------------------- rate limits

    def rate_limit_for(self, api: str) -> tuple[int, float]:
        return self._rate_limits.get(_normalise_api(api), self._default_rate_limit)

    async def _take_rate_token(self, api: str) -> None:
        capacity, refill = self.rate_limit_for(api)
        waited = 0.0
        while True:
            raw = await self._bucket(
                keys=[f"{self._prefix}:bucket:{api}"],
                args=[capacity, repr(float(refill)), repr(self._clock())],
            )
            wait = float(raw.decode() if isinstance(raw, bytes) else raw)
            if wait <= 0:
                return
            if waited + wait > self._max_rate_wait_s:
                raise WeComRateLimited(
                    api=api,
                    errcode=45009,
                    errmsg="local rate limit: bucket empty (call not sent)",
                    retry_after_s=max(wait, 1.0),
                )
            await self._sleep(wait)
            waited += wait

    # ------------------------------------------------------ typed endpoints

    async def get_user(self, userid: str) -> dict[str, Any]:
        """``user/get``: a member (name, department, direct_leader, ...)."""
        return await self.call("user/get", method="GET", params={"userid": userid})

    async def list_users(self, department_id: int, *, fetch_child: bool = False) -> dict[str, Any]:
        """``user/list``: members of a department (``userlist``).

        Apps created after 2022-08-15 may be refused this API by WeCom; the directory can
        then only be read member by member through :meth:`get_user`.
        """
        return await self.call(
            "user/list",
            method="GET",
            params={"department_id": department_id, "fetch_child": int(fetch_child)},
        )

    async def send_app_message(
        self,
        *,
        touser: str | Sequence[str],
        content: str | Mapping[str, Any],
        msgtype: str = "text",
        enable_duplicate_check: bool = False,
        duplicate_check_interval: int = 1800,
        safe: int = 0,
    ) -> dict[str, Any]:
        """``message/send``: an app message to members.

        WeCom silently drops messages past 30 a minute / 1,000 an hour per member, and
        reports unknown members in ``invaliduser`` with errcode 0 — callers that care
        read that field.  ``content`` is the text for ``text``/``markdown``, else the
        msgtype's whole payload object.
        """
        payload: Any
        if isinstance(content, str):
            payload = {"content": content}
        else:
            payload = dict(content)
        return await self.call(
            "message/send",
            json={
                "touser": touser if isinstance(touser, str) else "|".join(touser),
                "msgtype": msgtype,
                "agentid": self.agent_id,
                msgtype: payload,
                "safe": safe,
                "enable_duplicate_check": int(enable_duplicate_check),
                "duplicate_check_interval": duplicate_check_interval,
            },
        )

    async def get_external_contact(
        self, external_userid: str, *, cursor: str | None = None
    ) -> dict[str, Any]:
        """``externalcontact/get``: ``external_contact`` plus ``follow_user`` (paged)."""
        return await self.call(
            "externalcontact/get",
            method="GET",
            params={"external_userid": external_userid, "cursor": cursor},
        )

    async def list_external_contacts(self, userid: str) -> dict[str, Any]:
        """``externalcontact/list``: the ``external_userid`` list a member follows."""
        return await self.call("externalcontact/list", method="GET", params={"userid": userid})

    async def batch_get_by_user(
        self, userid_list: Sequence[str], *, cursor: str = "", limit: int = 100
    ) -> dict[str, Any]:
        """``externalcontact/batch/get_by_user``: contacts + follow info for ≤100 members."""
        return await self.call(
            "externalcontact/batch/get_by_user",
            json={
                "userid_list": list(userid_list),
                "cursor": cursor,
                "limit": limit,
            },
        )

    async def get_corp_tag_list(
        self, *, tag_id: Sequence[str] = (), group_id: Sequence[str] = ()
    ) -> dict[str, Any]:
        """``externalcontact/get_corp_tag_list``: ``tag_group`` list (all when no filter)."""
        return await self.call(
            "externalcontact/get_corp_tag_list",
            json={
                "tag_id": list(tag_id),
                "group_id": list(group_id),
            },
        )

    async def add_corp_tag(
        self,
        *,
        tags: Sequence[Mapping[str, Any]],
        group_id: str | None = None,
        group_name: str | None = None,
        order: int | None = None,
    ) -> dict[str, Any]:
        """``externalcontact/add_corp_tag``: tags into an existing group, or a new group.

        ``tags`` items are ``{"name": ..., "order": ...}``.  A name already used in the
        group is refused with 40071.
        """
        body: dict[str, Any] = {"tag": [dict(t) for t in tags]}
        if group_id is not None:
            body["group_id"] = group_id
        if group_name is not None:
            body["group_name"] = group_name
        if order is not None:
            body["order"] = order
        return await self.call("externalcontact/add_corp_tag", json=body)

    async def edit_corp_tag(
        self, *, id: str, name: str | None = None, order: int | None = None
    ) -> dict[str, Any]:
        """``externalcontact/edit_corp_tag``: rename/reorder a tag or group (by id)."""
        body: dict[str, Any] = {"id": id}
        if name is not None:
            body["name"] = name
        if order is not None:
            body["order"] = order
        return await self.call("externalcontact/edit_corp_tag", json=body)

    async def del_corp_tag(
        self, *, tag_id: Sequence[str] = (), group_id: Sequence[str] = ()
    ) -> dict[str, Any]:
        """``externalcontact/del_corp_tag``: deleting a group deletes its tags."""
        return await self.call(
            "externalcontact/del_corp_tag",
            json={
                "tag_id": list(tag_id),
                "group_id": list(group_id),
            },
        )

    async def mark_tag(
        self,
        *,
        userid: str,
        external_userid: str,
        add_tag: Sequence[str] = (),
        remove_tag: Sequence[str] = (),
    ) -> dict[str, Any]:
        """``externalcontact/mark_tag``: tag a customer as seen by one member.

        Changes made through the API produce no ``change_external_tag`` callback.
        """
        return await self.call(
            "externalcontact/mark_tag",
            json={
                "userid": userid,
                "external_userid": external_userid,
                "add_tag": list(add_tag),
                "remove_tag": list(remove_tag),
            },
        )

    async def add_msg_template(
        self,
        *,
        text: str | None = None,
        external_userid: Sequence[str] = (),
        sender: str | None = None,
        chat_type: str = "single",
        chat_id_list: Sequence[str] = (),
        attachments: Sequence[Mapping[str, Any]] = (),
        allow_select: bool = False,
    ) -> dict[str, Any]:
        """``externalcontact/add_msg_template``: create a mass-send *task* (``msgid``).

        Nothing is sent until the member confirms in WeCom; each customer receives at
        most one mass send a day, so results (``get_groupmsg_send_result``) may say
        status 3 (already received another one).
        """
        body: dict[str, Any] = {"chat_type": chat_type, "allow_select": allow_select}
        if external_userid:
            body["external_userid"] = list(external_userid)
        if chat_id_list:
            body["chat_id_list"] = list(chat_id_list)
        if sender is not None:
            body["sender"] = sender
        if text is not None:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = [dict(a) for a in attachments]
        return await self.call("externalcontact/add_msg_template", json=body)

    async def get_groupmsg_send_result(
        self, *, msgid: str, userid: str, limit: int = 1000, cursor: str = ""
    ) -> dict[str, Any]:
        """``externalcontact/get_groupmsg_send_result``: ``send_list`` per customer.

        status 0 not sent yet, 1 sent, 2 not a contact (any more), 3 already received
        another mass send.
        """
        return await self.call(
            "externalcontact/get_groupmsg_send_result",
            json={
                "msgid": msgid,
                "userid": userid,
                "limit": limit,
                "cursor": cursor,
            },
        )

    async def upload_media(
        self, media_type: str, *, filename: str, content: bytes, content_type: str
    ) -> dict[str, Any]:
        """``media/upload``: a temporary media id (``media_id``), valid three days.

        Content sent later is uploaded close to send time (an id expires: 40007).
        """
        return await self.call(
            "media/upload",
            params={"type": media_type},
            upload=MediaFile(filename=filename, content=content, content_type=content_type),
        )

    async def send_welcome_msg(
        self,
        *,
        welcome_code: str,
        text: str | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """``externalcontact/send_welcome_msg``: the WelcomeCode is valid 20 s, once.

        41051 afterwards means the welcome message went out (or the window closed):
        do not retry.  41096 means another app is sending it right now: retryable.
        """
        body: dict[str, Any] = {"welcome_code": welcome_code}
        if text is not None:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = [dict(a) for a in attachments]
        return await self.call("externalcontact/send_welcome_msg", json=body)

    async def list_group_chats(
        self,
        *,
        status_filter: int = 0,
        owner_userids: Sequence[str] = (),
        cursor: str = "",
        limit: int = 100,
    ) -> dict[str, Any]:
        """``externalcontact/groupchat/list``: ``group_chat_list`` of ``{chat_id, status}``."""
        body: dict[str, Any] = {"status_filter": status_filter, "cursor": cursor, "limit": limit}
        if owner_userids:
            body["owner_filter"] = {"userid_list": list(owner_userids)}
        return await self.call("externalcontact/groupchat/list", json=body)

    async def get_group_chat(self, chat_id: str, *, need_name: bool = False) -> dict[str, Any]:
        """``externalcontact/groupchat/get``: ``group_chat`` with members and admins."""
        return await self.call(
            "externalcontact/groupchat/get",
            json={
                "chat_id": chat_id,
                "need_name": int(need_name),
            },
        )


def _normalise_api(api: str) -> str:
    api = api.strip("/")
    return api.removeprefix("cgi-bin/")


def _errcode(body: Mapping[str, Any]) -> int:
    try:
        return int(body.get("errcode", 0))
    except (TypeError, ValueError):
        return ERRCODE_TRANSPORT


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
