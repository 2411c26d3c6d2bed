"""The edge's part of an application, per role: resources, routes, jobs, gauges.

``siyu.app.create_app`` mounts these through the domain record (``bot.DOMAIN``):

- receiver:  ``/wecom/callback`` (needs Redis only — never the DB or the model)
- worker:    stream consumers running the pipeline (DB, Redis, model)
- scheduler: outbox dispatcher, archive puller, contact reconciler (``core.jobs``)
- admin:     ``/api/v1`` (archive ingest, compliance check)

Each context owns one resource and sets its typed key; the root decides which
analyzer, hooks, outbox policies and finance SDK the app gets (tests and the
demo inject theirs there), so nothing here knows the sandbox or other domains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bot import flows as bot_flows
from bot import receiver, views
from bot import service as bot_service
from bot.archive_puller import ArchivePuller, load_private_keys, wake_archive_puller
from bot.flows import StoreDeps
from bot.keys import (
    ANALYZER,
    FINANCE_SDK,
    HOOKS,
    KEYRING,
    METRICS,
    OUTBOX_POLICIES,
    REDIS,
    SETTINGS,
    STREAM,
    WECOM_CLIENT,
)
from bot.pipeline import Pipeline
from bot.receiver import RECEIVER, ReceiverDeps
from bot.rules_overlay import RULES_OVERLAY, OverlayFollower
from bot.stream import InboundStream
from bot.wecom.client import WeComClient
from bot.wecom.crypto import CallbackCrypto
from bot.worker import Worker, consumer_name
from core.appkit import HAS_DB, ROLES, STOP, TASKS
from core.domain import JobTick
from core.metrics import Metrics
from core.settings import Role, Settings

log = logging.getLogger(__name__)

ARCHIVE_PULLER: web.AppKey[ArchivePuller | None] = web.AppKey("archive_puller")


def check_settings(settings: Settings, roles: frozenset[Role]) -> None:
    if "receiver" in roles:
        settings.require_wecom_callback()
    if "scheduler" in roles:
        settings.require_wecom_api()


async def stream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[STREAM] = InboundStream(
        app[REDIS],
        app[KEYRING],
        stream=settings.pipeline.stream,
        group=settings.pipeline.group,
        dedup_ttl_s=settings.wecom.dedup_ttl_s,
    )
    yield


async def field_keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """Refuse to start with field keys other than those the data was sealed with.

    Roles with a database check against it (and record a new key id); the receiver,
    which has none, checks against the copy the others publish in Redis.
    """
    settings, keyring, stream = app[SETTINGS], app[KEYRING], app[STREAM]
    checks = None
    if app[HAS_DB]:
        checks = await bot_flows.check_field_keys(keyring=keyring, settings=settings)
    try:
        if checks is not None:
            await bot_flows.publish_field_keys(stream=stream, checks=checks)
        else:
            await bot_flows.check_stream_keys(stream=stream, keyring=keyring, settings=settings)
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        # Redis down at start: nothing can be queued either; the receiver answers 503.
        log.warning(
            "redis unreachable at start; field keys not compared with Redis",
            extra={"error": type(exc).__name__},
        )
    yield


async def receiver_ctx(app: web.Application) -> AsyncIterator[None]:
    # The receiver needs the stream, nothing else: no DB, no model.
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


async def analyzer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The warmed process pool of compliance_nlp, unless the root injected one.

    Either way it runs the institution's published rule overlay from the start and
    follows each new one (``bot.rules_overlay``): set before the workers' context, so
    no message is analysed without it.
    """
    follower = OverlayFollower()
    app[RULES_OVERLAY] = follower
    if ANALYZER in app:
        await follower.follow(app[ANALYZER])
        app[TASKS].append(asyncio.create_task(follower.run(app[STOP]), name="rules-overlay"))
        yield
        return
    from compliance_nlp import AnalyzerConfig
    from compliance_nlp.pool import AnalyzerPool

    s = app[SETTINGS].nlp
    config = AnalyzerConfig(
        intent_model_dir=s.intent_model_dir,
        violation_model_dir=s.violation_model_dir,
        use_model=s.use_model,
        mask_style=s.mask_style,
    )
    # A read goes to the analyzer whole: split into the pool's default batches of 64, a
    # read of 128 cost two calls into the process, each with its own pickling and
    # feature set-up (bench/pipeline.py: the analyzer's CPU per message ~17% higher).
    pool = AnalyzerPool(config, processes=s.pool_size, batch_size=app[SETTINGS].pipeline.batch_size)
    await pool.start()
    app[ANALYZER] = pool
    await follower.follow(pool)
    app[TASKS].append(asyncio.create_task(follower.run(app[STOP]), name="rules-overlay"))
    try:
        yield
    finally:
        await pool.close()


async def analyzer_health(app: web.Application) -> dict[str, str]:
    """``/readyz``: not ready while the analyzer pool is broken and not yet rebuilt.

    A worker whose pool lost a process cannot analyse, so it cannot store anything
    (analysis comes before storage); the probe also starts the rebuild.  Analyzers
    without a ``health`` method (injected by tests or the demo) report nothing.
    """
    health = getattr(app.get(ANALYZER), "health", None)
    if health is None:
        return {}
    problem = await health()
    return {"analyzer": "ok" if problem is None else f"error: {problem}"}


async def wecom_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.wecom.app_secret.get_secret_value():
        app[WECOM_CLIENT] = None
        yield
        return
    async with aiohttp.ClientSession() as session:
        app[WECOM_CLIENT] = WeComClient(
            session=session,
            redis=app[REDIS],
            corp_id=settings.wecom.corp_id,
            base_url=settings.wecom.api_base_url,
            secrets={
                "app": settings.wecom.app_secret.get_secret_value(),
                "contact": settings.wecom.contact_secret.get_secret_value(),
            },
            agent_id=settings.wecom.agent_id,
            timeout_s=settings.wecom.http_timeout_s,
            keyring=app[KEYRING],
        )
        yield


def build_pipeline(app: web.Application) -> Pipeline:
    settings = app[SETTINGS]
    return Pipeline(
        analyzer=app[ANALYZER],
        deps=StoreDeps(keyring=app[KEYRING], hooks=app[HOOKS], agent_id=settings.wecom.agent_id),
        metrics=app[METRICS],
        fetcher=app[WECOM_CLIENT],
        on_archive_notify=_archive_waker(app),
    )


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Stream consumers; stopped by the root's tasks context before resources close."""
    settings = app[SETTINGS]
    pipeline = build_pipeline(app)
    for i in range(max(1, settings.pipeline.concurrency)):
        worker = Worker(
            stream=app[STREAM],
            pipeline=pipeline,
            settings=settings.pipeline,
            metrics=app[METRICS],
            consumer=f"{consumer_name()}-{i}",
        )
        app[TASKS].append(asyncio.create_task(worker.run(app[STOP]), name=f"worker-{i}"))
    yield


async def archive_ctx(app: web.Application) -> AsyncIterator[None]:
    """The 会话存档 puller, when the root gave the app a finance SDK."""
    open_sdk = app.get(FINANCE_SDK)
    if open_sdk is None:
        app[ARCHIVE_PULLER] = None
        yield
        return
    settings = app[SETTINGS]
    puller = ArchivePuller(
        sdk=open_sdk(),
        private_keys=load_private_keys(settings.archive.private_keys),
        stream=app[STREAM],
        metrics=app[METRICS],
        batch_size=settings.archive.batch_size,
    )
    app[ARCHIVE_PULLER] = puller
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            puller.sdk.close()


def _archive_waker(app: web.Application) -> Callable[[], Awaitable[None]]:
    async def wake() -> None:
        await wake_archive_puller(app[STREAM])

    return wake


# ------------------------------------------------------------------ jobs


def outbox_tick(app: web.Application) -> JobTick | None:
    client = app[WECOM_CLIENT]
    if client is None:
        return None
    from bot.jobs import OutboxDispatcher

    dispatcher = OutboxDispatcher(
        client=client,
        settings=app[SETTINGS].outbox,
        metrics=app[METRICS],
        policies=app[OUTBOX_POLICIES],
        keyring=app[KEYRING],
    )
    return dispatcher.tick


def archive_tick(app: web.Application) -> JobTick | None:
    puller = app.get(ARCHIVE_PULLER)
    if puller is None:
        return None

    async def tick() -> int:
        await puller.pull_once()
        return 0  # pull_once drains until caught up; then wait for a wake-up

    return tick


def archive_wake(app: web.Application) -> Callable[[float], Awaitable[bool]]:
    async def wait(timeout_s: float) -> bool:
        puller = app.get(ARCHIVE_PULLER)
        if puller is None:
            await asyncio.sleep(timeout_s)
            return False
        return await puller.wait_for_wake(timeout_s)

    return wait


def reconcile_tick(app: web.Application) -> JobTick | None:
    client = app[WECOM_CLIENT]
    if client is None:
        return None
    from bot.jobs import reconcile_contacts

    async def tick() -> int:
        await reconcile_contacts(client, keyring=app[KEYRING])
        return 0  # a batch per interval: customers that failed keep failing for a while

    return tick


# ------------------------------------------------------------------ routes, gauges


def add_receiver_routes(app: web.Application) -> None:
    receiver.add_routes(app)


def add_api_routes(app: web.Application) -> None:
    views.add_routes(app)


#: /metrics may be scraped every few seconds, by more than one Prometheus; the outbox
#: and dead-letter gauges count table rows (bot_outbox keeps a row per alert, touch
#: and tag write), so they are read at most once per this many seconds per process.
#: Prometheus's own scrape interval is 15 s or more: a value is never staler than that.
TABLE_GAUGES_EVERY_S = 15.0


@dataclass
class TableGauges:
    """The outbox and dead-letter gauges, read from the database at most every ``every_s``."""

    every_s: float = TABLE_GAUGES_EVERY_S
    clock: Callable[[], float] = time.monotonic
    read_at: float | None = None
    # Scrapes arriving together wait for one read instead of each starting one.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, metrics: Metrics) -> bool:
        """Read the tables unless read recently; True when they were read."""
        async with self.lock:
            now = self.clock()
            if self.read_at is not None and now - self.read_at < self.every_s:
                return False
            for state, n in (await bot_service.outbox_counts()).items():
                metrics.outbox.labels(state).set(n)
            metrics.dead_letters.set(await bot_service.open_dead_letters())
            self.read_at = now
            return True


TABLE_GAUGES: web.AppKey[TableGauges] = web.AppKey("bot_table_gauges")


async def table_gauges_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TABLE_GAUGES] = TableGauges()
    yield


async def refresh_gauges(app: web.Application) -> None:
    metrics = app[METRICS]
    with contextlib.suppress(Exception):
        length, pending = await app[STREAM].depth()
        metrics.queue_length.set(length)
        metrics.queue_pending.set(pending)
    if app[ROLES] & {"worker", "scheduler", "admin"}:
        # An app built without the edge's contexts (a test's) reads them every time.
        await app.get(TABLE_GAUGES, TableGauges(every_s=0)).refresh(metrics)
