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
from core.crypto import Keyring, load_keyring
from core.domain import CleanupContext, JobSpec
from core.jobs import PeriodicJob
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

# The roles that read or write the database; the receiver needs Redis only.
DB_ROLES: frozenset[Role] = frozenset({"worker", "scheduler", "admin"})


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


@web.middleware
async def api_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """Machine callers present ``Authorization: Bearer <SIYU_API__TOKEN>``."""
    if not request.path.startswith("/api/"):
        return await handler(request)  # type: ignore[no-any-return]
    expected = request.app[SETTINGS].api.token.get_secret_value()
    if not expected:
        return _error(503, "api_disabled", "the API is disabled: SIYU_API__TOKEN is not set")
    got = request.headers.get("Authorization", "")
    try:
        presented = got[7:].encode()
    except UnicodeEncodeError:  # non-UTF-8 header bytes (kept as surrogate escapes)
        presented = b""
    if (
        not got.startswith("Bearer ")
        or not presented
        or not hmac.compare_digest(presented, expected.encode())
    ):
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


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
