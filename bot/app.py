"""The app factory: the only wiring code.

``build_app(settings, roles)`` returns an aiohttp application whose
``cleanup_ctx`` entries own one resource each, in dependency order; the roles
decide which routes and background loops it carries:

- receiver:  ``/wecom/callback`` (needs Redis only — never the DB or the model)
- worker:    stream consumers running the pipeline (DB, Redis, model)
- scheduler: outbox dispatcher, archive puller, contact reconciler
- admin:     ``/api/v1`` (archive ingest, compliance check)

Every role serves ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web
from tortoise import Tortoise

from bot import receiver, views
from bot import service as bot_service
from bot.flows import StoreDeps
from bot.hooks import HookRegistry
from bot.keys import ANALYZER, KEYRING, METRICS, REDIS, SETTINGS, STREAM
from bot.pipeline import Pipeline
from bot.receiver import RECEIVER, ReceiverDeps
from bot.stream import InboundStream
from bot.wecom.client import WeComClient
from bot.wecom.crypto import CallbackCrypto
from bot.worker import Worker, consumer_name
from core import db as core_db
from core import redis as core_redis
from core.crypto import load_keyring
from core.metrics import Metrics
from core.settings import ALL_ROLES, Role, Settings

log = logging.getLogger(__name__)

WECOM_CLIENT: web.AppKey[WeComClient | None] = web.AppKey("wecom_client")
HOOKS = web.AppKey("hooks", HookRegistry)
TASKS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("tasks")
STOP = web.AppKey("stop", asyncio.Event)
READY_DB = web.AppKey("ready_db", bool)


def _analyzer_config(settings: Settings) -> Any:
    from compliance_nlp import AnalyzerConfig

    return AnalyzerConfig(
        intent_model_dir=settings.nlp.intent_model_dir,
        violation_model_dir=settings.nlp.violation_model_dir,
        use_model=settings.nlp.use_model,
        mask_style=settings.nlp.mask_style,
    )


def build_app(
    settings: Settings,
    roles: Iterable[Role] = ALL_ROLES,
    *,
    auto_migrate: bool = False,
    hooks: HookRegistry | None = None,
    analyzer: Any = None,
    configure: Callable[[web.Application], None] | None = None,
) -> web.Application:
    roles = frozenset(roles)
    if "receiver" in roles:
        settings.require_wecom_callback()
    if "scheduler" in roles:
        settings.require_wecom_api()
    app = web.Application(
        client_max_size=settings.http.max_body_bytes, middlewares=[views.api_auth]
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[HOOKS] = hooks or HookRegistry()
    app[TASKS] = []
    app[STOP] = asyncio.Event()
    app[READY_DB] = bool(roles & {"worker", "scheduler", "admin"})

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[KEYRING] = load_keyring(settings)
        async with core_redis.redis_lifespan(settings) as client:
            app[REDIS] = client
            app[STREAM] = InboundStream(
                client, app[KEYRING], stream=settings.pipeline.stream,
                group=settings.pipeline.group, dedup_ttl_s=settings.wecom.dedup_ttl_s,
            )  # fmt: skip
            yield

    async def db_ctx(app: web.Application) -> AsyncIterator[None]:
        async with core_db.db_lifespan(settings, auto_migrate=auto_migrate):
            yield

    async def analyzer_ctx(app: web.Application) -> AsyncIterator[None]:
        if analyzer is not None:
            app[ANALYZER] = analyzer
            yield
            return
        from compliance_nlp.pool import AnalyzerPool

        pool = AnalyzerPool(_analyzer_config(settings), processes=settings.nlp.pool_size)
        await pool.start()
        app[ANALYZER] = pool
        try:
            yield
        finally:
            await pool.close()

    async def wecom_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.wecom.app_secret.get_secret_value():
            app[WECOM_CLIENT] = None
            yield
            return
        async with aiohttp.ClientSession() as session:
            app[WECOM_CLIENT] = WeComClient(
                session=session, redis=app[REDIS], corp_id=settings.wecom.corp_id,
                base_url=settings.wecom.api_base_url,
                secrets={"app": settings.wecom.app_secret.get_secret_value(),
                         "contact": settings.wecom.contact_secret.get_secret_value()},
                agent_id=settings.wecom.agent_id, timeout_s=settings.wecom.http_timeout_s,
            )  # fmt: skip
            yield

    async def background_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = app[STOP]
        tasks = app[TASKS]
        client = app[WECOM_CLIENT]
        puller = _archive_puller(app) if "scheduler" in roles else None
        if "worker" in roles:
            pipeline = Pipeline(
                analyzer=app[ANALYZER],
                deps=StoreDeps(keyring=app[KEYRING], hooks=app[HOOKS],
                               agent_id=settings.wecom.agent_id),
                metrics=app[METRICS], fetcher=client,
                on_archive_notify=_archive_waker(app),
            )  # fmt: skip
            for i in range(max(1, settings.pipeline.concurrency)):
                worker = Worker(
                    stream=app[STREAM], pipeline=pipeline, settings=settings.pipeline,
                    metrics=app[METRICS], consumer=f"{consumer_name()}-{i}",
                )  # fmt: skip
                tasks.append(asyncio.create_task(worker.run(stop), name=f"worker-{i}"))
        if "scheduler" in roles and client is not None:
            from bot.jobs import OutboxDispatcher

            dispatcher = OutboxDispatcher(client=client, settings=settings.outbox,
                                          metrics=app[METRICS])
            tasks.append(asyncio.create_task(dispatcher.run(stop), name="outbox"))
            tasks.append(asyncio.create_task(_reconcile_loop(client, stop), name="reconcile"))
        if puller is not None:
            tasks.append(asyncio.create_task(puller.run(stop), name="archive-puller"))
        yield
        stop.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if puller is not None:
            with contextlib.suppress(Exception):
                puller.sdk.close()

    app.cleanup_ctx.append(redis_ctx)
    needs_db = bool(roles & {"worker", "scheduler", "admin"})
    if needs_db:
        app.cleanup_ctx.append(db_ctx)
    if roles & {"worker", "admin"}:
        app.cleanup_ctx.append(analyzer_ctx)
    app.cleanup_ctx.append(wecom_ctx)
    app.cleanup_ctx.append(background_ctx)

    if "receiver" in roles:
        app.cleanup_ctx.insert(1, _receiver_ctx)
        receiver.add_routes(app)
    if "admin" in roles:
        views.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", _readyz_for(needs_db))
    app.router.add_get("/metrics", metrics_view)
    if configure is not None:
        configure(app)
    return app


async def _receiver_ctx(app: web.Application) -> AsyncIterator[None]:
    # Right after the Redis context: the receiver needs the stream, nothing else.
    settings = app[SETTINGS]
    app[RECEIVER] = ReceiverDeps(
        crypto=CallbackCrypto(
            token=settings.wecom.token.get_secret_value(),
            encoding_aes_key=settings.wecom.encoding_aes_key.get_secret_value(),
            receive_id=settings.wecom.corp_id,
        ),
        stream=app[STREAM],
        metrics=app[METRICS],
        max_skew_s=settings.wecom.callback_max_skew_s,
    )
    yield


def _archive_puller(app: web.Application) -> Any:
    settings = app[SETTINGS]
    if settings.archive.sdk == "none":
        return None
    from bot.archive_puller import ArchivePuller, NativeFinanceSdk, load_private_keys

    sdk: Any
    if settings.archive.sdk == "native":
        sdk = NativeFinanceSdk(settings.archive.sdk_lib_path, settings.wecom.corp_id,
                               settings.archive.secret.get_secret_value())
    else:
        from bot.sandbox.archive import SandboxFinanceSdk

        sdk = SandboxFinanceSdk(settings.wecom.api_base_url)
    return ArchivePuller(
        sdk=sdk, private_keys=load_private_keys(settings.archive.private_keys),
        stream=app[STREAM], metrics=app[METRICS], batch_size=settings.archive.batch_size,
        poll_interval_s=settings.archive.poll_interval_s,
    )  # fmt: skip


def _archive_waker(app: web.Application) -> Callable[[], Any]:
    from bot.archive_puller import wake_archive_puller

    async def wake() -> None:
        await wake_archive_puller(app[STREAM])

    return wake


async def _reconcile_loop(client: WeComClient, stop: asyncio.Event) -> None:
    from bot.jobs import reconcile_contacts

    while not stop.is_set():
        try:
            await reconcile_contacts(client)
        except Exception:  # noqa: BLE001
            log.exception("contact reconcile failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=60)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _readyz_for(needs_db: bool) -> Callable[[web.Request], Any]:
    async def readyz(request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await request.app[REDIS].ping()  # type: ignore[misc]
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
        if needs_db:
            try:
                await Tortoise.get_connection("default").execute_query("SELECT 1")
                checks["database"] = "ok"
            except Exception as exc:  # noqa: BLE001
                checks["database"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    return readyz


async def metrics_view(request: web.Request) -> web.Response:
    from prometheus_client import generate_latest

    metrics = request.app[METRICS]
    with contextlib.suppress(Exception):
        length, pending = await request.app[STREAM].depth()
        metrics.queue_length.set(length)
        metrics.queue_pending.set(pending)
    if request.app[READY_DB]:
        with contextlib.suppress(Exception):
            for state, n in (await bot_service.outbox_counts()).items():
                metrics.outbox.labels(state).set(n)
            metrics.dead_letters.set(await bot_service.open_dead_letters())
    return web.Response(body=generate_latest(metrics.registry),
                        content_type="text/plain", charset="utf-8")
