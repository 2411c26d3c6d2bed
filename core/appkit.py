"""What every siyu application has, whatever domains it carries.

Typed application keys for the shared resources (aiohttp ``AppKey``s, never
globals), one cleanup context per resource, the jobs context that runs every
domain's periodic jobs through ``core.jobs``, the bearer-token check of
``/api/`` and the health routes.  ``siyu.app.create_app`` composes these with the
domains' own contexts and routes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from core import db as core_db
from core import redis as core_redis
from core.access import ACCESS_GUARD
from core.crypto import Keyring, load_keyring
from core.domain import CleanupContext, Domain, HealthCheck, JobSpec
from core.jobs import PeriodicJob
from core.logs import RateLimitedLog
from core.metrics import Metrics
from core.settings import Role, Settings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
ROLES: web.AppKey[frozenset[Role]] = web.AppKey("roles")
REDIS = web.AppKey("redis", aioredis.Redis)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
# Set when the app shuts down: every loop and job stops within one wait.
STOP = web.AppKey("stop", asyncio.Event)
# Long-running tasks of the app (stream consumers, jobs), awaited at shutdown.
TASKS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("tasks")
SCHEMA = web.AppKey("schema", core_db.Schema)
HAS_DB = web.AppKey("has_db", bool)
# Refreshers of domains' gauges, run before /metrics renders.
GAUGES: web.AppKey[list[Callable[[web.Application], Awaitable[None]]]] = web.AppKey("gauges")
# Domains' readiness checks (core.domain.Domain.health), merged into /readyz.
HEALTH: web.AppKey[list[HealthCheck]] = web.AppKey("health")
# The domains the app was built from, in the root's order: the console shell mounts
# each one's pages (core.domain.Domain.pages) inside its authenticated layout.
DOMAINS: web.AppKey[tuple[Domain, ...]] = web.AppKey("domains")

# Requests refused by core's own checks (API bearer token, ops token), logged by reason.
REFUSALS = web.AppKey("refusals", RateLimitedLog)
# Where the internal ops listener bound (host, port), when SIYU_HTTP__OPS_PORT is set.
OPS_ADDRESS: web.AppKey[tuple[str, int]] = web.AppKey("ops_address")

# The roles that read or write the database; the receiver needs Redis only.
DB_ROLES: frozenset[Role] = frozenset({"worker", "scheduler", "admin"})


def refusal_log() -> RateLimitedLog:
    return RateLimitedLog(log, "request refused")


def redis_context(settings: Settings) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[KEYRING] = load_keyring(settings)
        async with core_redis.redis_lifespan(settings) as client:
            app[REDIS] = client
            yield

    return ctx


def db_context(settings: Settings, schema: core_db.Schema, *, auto_migrate: bool) -> CleanupContext:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with core_db.db_lifespan(settings, schema, auto_migrate=auto_migrate):
            yield

    return ctx


def jobs_context(specs: Sequence[JobSpec], roles: frozenset[Role]) -> CleanupContext:
    """Start the periodic jobs of ``roles``, after every other resource is up."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        for spec in specs:
            if not spec.roles & roles:
                continue
            tick = spec.build(app)
            if tick is None:
                log.info("job off in this configuration", extra={"job": spec.name})
                continue
            job = PeriodicJob(
                name=spec.name,
                tick=tick,
                interval_s=spec.interval_s(settings),
                metrics=app[METRICS],
                jitter=spec.jitter,
                rerun_when_busy=spec.rerun_when_busy,
                wake=spec.wake(app) if spec.wake else None,
            )
            app[TASKS].append(asyncio.create_task(job.run(app[STOP]), name=f"job:{spec.name}"))
        yield

    return ctx


async def stop_tasks(app: web.Application, *, timeout_s: float = 10.0) -> None:
    """Ask every task to stop, wait for them a while, then cancel the rest."""
    app[STOP].set()
    tasks = app[TASKS]
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def tasks_context(app: web.Application) -> AsyncIterator[None]:
    """Last context: on shutdown, stop tasks before any resource they use closes."""
    yield
    await stop_tasks(app)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _bearer_matches(request: web.Request, expected: str) -> bool:
    """``Authorization: Bearer <expected>``, compared in constant time."""
    got = request.headers.get("Authorization", "")
    try:
        presented = got[7:].encode()
    except UnicodeEncodeError:  # non-UTF-8 header bytes (kept as surrogate escapes)
        presented = b""
    return (
        got.startswith("Bearer ")
        and bool(presented)
        and hmac.compare_digest(presented, expected.encode())
    )


def _refused(request: web.Request, reason: str, status: int) -> None:
    """Log a refusal by reason (rate-limited; ids only, never a header value)."""
    refusals = request.app.get(REFUSALS)
    if refusals is not None:
        refusals.note(
            reason,
            status=status,
            method=request.method,
            remote=request.remote or "",
            path=request.path,
        )


@web.middleware
async def api_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """Machine callers present ``Authorization: Bearer <SIYU_API__TOKEN>``.

    When a guard is installed (the admin domain's, ``core.access``), it decides for
    every request instead: named API keys, console sessions, declared permissions.
    """
    guard = request.app.get(ACCESS_GUARD)
    if guard is not None:
        return await guard(request, handler)
    if not request.path.startswith("/api/"):
        return await handler(request)  # type: ignore[no-any-return]
    expected = request.app[SETTINGS].api.token.get_secret_value()
    if not expected:
        _refused(request, "api_disabled", 503)
        return _error(503, "api_disabled", "the API is disabled: SIYU_API__TOKEN is not set")
    if not _bearer_matches(request, expected):
        _refused(request, "unauthorized", 401)
        return _error(401, "unauthorized", "missing or wrong bearer token")
    return await handler(request)  # type: ignore[no-any-return]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    from tortoise import Tortoise

    checks: dict[str, str] = {}
    try:
        await request.app[REDIS].ping()  # type: ignore[misc]
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the probe
        checks["redis"] = f"error: {type(exc).__name__}"
    if request.app[HAS_DB]:
        try:
            await Tortoise.get_connection("default").execute_query("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the probe
            checks["database"] = f"error: {type(exc).__name__}"
    for domain_checks in request.app.get(HEALTH, ()):
        try:
            checks.update(await domain_checks(request.app))
        except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the probe
            checks["domain"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics_view(request: web.Request) -> web.Response:
    from prometheus_client import generate_latest

    for refresh in request.app[GAUGES]:
        try:
            await refresh(request.app)
        except Exception:
            log.warning("gauge refresh failed", exc_info=True)
    return web.Response(
        body=generate_latest(request.app[METRICS].registry),
        content_type="text/plain",
        charset="utf-8",
    )


# ------------------------------------------------------------------ ops endpoints

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ops_guarded(handler: Handler) -> Handler:
    """``/readyz`` and ``/metrics`` want the ops token when SIYU_HTTP__OPS_TOKEN is set."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        expected = request.app[SETTINGS].http.ops_token.get_secret_value()
        if expected and not _bearer_matches(request, expected):
            _refused(request, "ops_unauthorized", 401)
            return _error(401, "unauthorized", "missing or wrong ops token")
        return await handler(request)

    return guarded


def _add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/readyz", _ops_guarded(readyz))
    app.router.add_get("/metrics", _ops_guarded(metrics_view))


def add_health_routes(app: web.Application) -> None:
    """``/healthz`` always; ``/readyz`` and ``/metrics`` too unless an ops listener serves them."""
    app.router.add_get("/healthz", healthz)
    if app[SETTINGS].http.ops_port is None:
        _add_ops_routes(app)


def ops_listener_context(settings: Settings) -> CleanupContext:
    """The internal listener for ``/readyz`` and ``/metrics`` (SIYU_HTTP__OPS_PORT).

    A second aiohttp application on its own socket, so the public listener (the
    callback URL faces the internet) has no route to them at all, and this one has
    no route to anything else.  It serves the main application's state by reference,
    copied once every resource before it in the context list is up; so it is listed
    after the domains' contexts and stops before they close.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        port = settings.http.ops_port
        if port is None:
            yield
            return
        ops = web.Application()
        for key, value in app.items():
            ops[key] = value
        ops.router.add_get("/healthz", healthz)
        _add_ops_routes(ops)
        runner = web.AppRunner(ops, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.http.ops_host, port)
            await site.start()
            host, bound = runner.addresses[0][:2]
            app[OPS_ADDRESS] = (str(host), int(bound))
            log.info("ops listener serving /readyz and /metrics", extra={"port": int(bound)})
            yield
        finally:
            await runner.cleanup()

    return ctx
