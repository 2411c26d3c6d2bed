"""``/wecom/callback``: verify, decrypt, parse, dedup, queue, answer.

The answer waits on Redis only — never on the database or NLP — because
WeCom disconnects after 5 s and retries three more times.  "success" means
the item is durably in the stream; anything less answers 503 so WeCom retries.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from bot.schemas import CALLBACK_FIELDS, Source
from bot.stream import InboundStream
from bot.wecom.crypto import CallbackCrypto, CallbackError
from bot.wecom.parse import parse_inbound
from core.logs import RateLimitedLog
from core.metrics import Metrics

log = logging.getLogger(__name__)


def _refusal_log() -> RateLimitedLog:
    return RateLimitedLog(log, "callback refused")


@dataclass(frozen=True)
class ReceiverDeps:
    crypto: CallbackCrypto
    stream: InboundStream
    metrics: Metrics
    max_skew_s: int
    # The callback URL faces the internet: refusals are logged by reason, at most one
    # line per reason per 10 s (a scan must not flood the logs), never with a body.
    refusals: RateLimitedLog = field(default_factory=_refusal_log)


RECEIVER = web.AppKey("receiver", ReceiverDeps)


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _signed_params(request: web.Request) -> tuple[str, str, str]:
    q = request.query
    missing = [k for k in ("msg_signature", "timestamp", "nonce") if not q.get(k)]
    if missing:
        names = ", ".join(missing)
        raise CallbackError(400, "missing_params", f"missing query parameter(s): {names}")
    return q["msg_signature"], q["timestamp"], q["nonce"]


def _check_fresh(timestamp: str, max_skew_s: int) -> None:
    try:
        ts = int(timestamp)
    except ValueError:
        raise CallbackError(400, "bad_timestamp", "timestamp is not an integer") from None
    if max_skew_s and abs(time.time() - ts) > max_skew_s:
        raise CallbackError(403, "stale_timestamp", "timestamp outside the accepted window")


def _refused(request: web.Request, deps: ReceiverDeps, reason: str, status: int) -> web.Response:
    deps.metrics.callbacks.labels(f"rejected_{reason}").inc()
    deps.refusals.note(
        reason, status=status, method=request.method, remote=request.remote or "", path=request.path
    )
    return _plain(status, reason)


async def verify_url(request: web.Request) -> web.Response:
    """WeCom's URL check when the callback is configured: must answer within 1 s.

    Same freshness window as a POST: a captured verification URL replayed later
    would otherwise keep proving the token to whoever holds it.
    """
    deps = request.app[RECEIVER]
    try:
        sig, ts, nonce = _signed_params(request)
        _check_fresh(ts, deps.max_skew_s)
        echostr = request.query.get("echostr", "")
        if not echostr:
            raise CallbackError(400, "missing_params", "missing query parameter: echostr")
        plain = deps.crypto.verify_url(
            msg_signature=sig, timestamp=ts, nonce=nonce, echostr=echostr
        )
    except CallbackError as exc:
        return _refused(request, deps, exc.reason, exc.status)
    deps.metrics.callbacks.labels("url_verified").inc()
    return _plain(200, plain)


async def receive_callback(request: web.Request) -> web.Response:
    deps = request.app[RECEIVER]
    t0 = time.perf_counter()
    try:
        sig, ts, nonce = _signed_params(request)
        _check_fresh(ts, deps.max_skew_s)
        body = await request.read()
        plaintext = deps.crypto.decrypt_body(
            msg_signature=sig, timestamp=ts, nonce=nonce, body=body
        )
        inbound = parse_inbound(plaintext)
    except web.HTTPRequestEntityTooLarge:
        _refused(request, deps, "too_large", 413)
        return _plain(413, "body too large")
    except CallbackError as exc:
        return _refused(request, deps, exc.reason, exc.status)

    # A nonce seen before with a different signature is a replayed nonce on a
    # forged or altered request; the same signature is WeCom's own retry and
    # is answered like the original (dedup makes it a no-op).
    ttl = max(2 * deps.max_skew_s, 600)
    try:
        result = await deps.stream.enqueue(
            source=Source.CALLBACK,
            dedup_key=inbound.dedup_key,
            payload={"xml": plaintext, CALLBACK_FIELDS: inbound.fields},
            nonce=(nonce, sig, ttl),
        )
    except (aioredis.RedisError, OSError) as exc:
        deps.metrics.callbacks.labels("unavailable").inc()
        log.error("queue unavailable; answering 503", extra={"error": type(exc).__name__})
        return _plain(503, "queue unavailable")
    if result.outcome == "replay":
        _refused(request, deps, "replay", 403)
        return _plain(403, "replayed_nonce")
    deps.metrics.callbacks.labels(result.outcome).inc()
    deps.metrics.callback_seconds.observe(time.perf_counter() - t0)
    return _plain(200, "success")


async def _freeze_start_up(app: web.Application) -> None:
    """What start-up built lives as long as the process: out of the collector's reach,
    a full collection no longer walks it again while callbacks flow."""
    gc.freeze()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wecom/callback", verify_url)
    app.router.add_post("/wecom/callback", receive_callback)
    app.on_startup.append(_freeze_start_up)
