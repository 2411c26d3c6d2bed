"""The engine's place in the running application: its resources, jobs and policies.

The outbox calls a before-send check and an on-settled callback with a fixed
signature, and the pipeline calls hooks with the stored record — neither hands over
the application.  The engine's resources (Redis quotas, settings, the content
checker) are therefore built by a cleanup context of the roles that run them and
bound here for the process's lifetime, exactly as long as the application runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from bot.hooks import StoredEvent, StoredMessage
from bot.outbox import PendingWrite, SendAs, Settled
from compliance_nlp import AnalyzerConfig
from core.appkit import REDIS, SETTINGS
from core.domain import HookPoint, JobSpec, JobTick
from core.settings import Settings
from sop.engine import enrol, holidays
from sop.engine.checks import ContentChecker
from sop.engine.dispatch import Engine, EngineConfig
from sop.engine.media import MediaCache, MediaPolicy
from sop.engine.media import configure as media_configure
from sop.engine.quotas import Quotas

log = logging.getLogger(__name__)

__all__ = ["EngineHooks", "bind", "current", "register"]

_bound: list[Engine] = []


def bind(engine: Engine | None) -> None:
    """Make ``engine`` the process's engine (None: unbind)."""
    _bound.clear()
    if engine is not None:
        _bound.append(engine)


def current() -> Engine:
    if not _bound:
        raise RuntimeError("the SOP engine is not running in this process (no scheduler role)")
    return _bound[0]


def build_engine(settings: Settings, redis: Any) -> Engine:
    s = settings.sop
    quotas = Quotas.build(
        redis,
        member_minute_cap=s.member_minute_cap,
        member_hour_cap=s.member_hour_cap,
        mass_send_per_day=s.mass_send_per_day,
        api_per_minute=s.api_per_minute,
        api_default_per_minute=s.api_default_per_minute,
    )
    nlp = settings.nlp
    checker = ContentChecker(
        AnalyzerConfig(
            intent_model_dir=nlp.intent_model_dir,
            violation_model_dir=nlp.violation_model_dir,
            use_model=nlp.use_model,
            mask_style=nlp.mask_style,
        )
    )
    return Engine(
        config=EngineConfig(
            batch_size=s.batch_size,
            late_after=timedelta(seconds=s.late_after_s),
            digest_max_items=s.digest_max_items,
            public_base_url=s.public_base_url,
            agent_id=settings.wecom.agent_id,
        ),
        quotas=quotas,
        checker=checker,
    )


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    from bot.keys import WECOM_CLIENT

    engine = build_engine(app[SETTINGS], app[REDIS])
    # The operator's holiday years, checked whole before anything is planned with them.
    holidays.configure(holidays.load_configured(app[SETTINGS].sop.holiday_file))
    # Read when a send needs media, not now: the client is built by the edge's context.
    s = app[SETTINGS].sop
    rule = MediaPolicy(hosts=tuple(s.media_hosts), timeout_s=s.media_fetch_timeout_s)
    # Saving a campaign checks its media under the same fence (sop.campaigns).
    media_configure(rule)
    engine.media = MediaCache(app[REDIS], client_of=lambda: app.get(WECOM_CLIENT), rule=rule)
    bind(engine)
    try:
        yield
    finally:
        await engine.media.close()
        media_configure(MediaPolicy())
        holidays.configure(None)
        if _bound and _bound[0] is engine:
            bind(None)


# ---------------------------------------------------------------- outbox policies


async def before_send(pending: PendingWrite) -> str | SendAs | None:
    return await current().before_send(pending)


async def on_settled(settled: Settled, conn: BaseDBAsyncClient) -> None:
    await current().on_settled(settled, conn)


# ---------------------------------------------------------------- jobs


def _scheduler_tick(app: web.Application) -> JobTick | None:
    async def tick() -> int:
        return await current().tick()

    return tick


def _triggers_tick(app: web.Application) -> JobTick | None:
    cursor = enrol.TagCursor()
    snapshots: set[int] = set()
    # The daily date triggers run on the first tick of each Beijing day (and after a
    # restart: they are idempotent per day).
    last_day: list[str] = []

    async def tick() -> int:
        from datetime import UTC, datetime

        from sop.engine.timing import SHANGHAI

        did = await enrol.run_tag_triggers(cursor)
        did += await enrol.run_audience_snapshots(snapshots)
        today = datetime.now(UTC).astimezone(SHANGHAI).date().isoformat()
        if last_day != [today]:
            await enrol.run_date_triggers()
            last_day[:] = [today]
        return did

    return tick


def _results_tick(app: web.Application) -> JobTick | None:
    from bot.keys import WECOM_CLIENT
    from sop.engine.results import follow_up_mass_sends

    client = app.get(WECOM_CLIENT)
    if client is None:
        return None
    remind_after = timedelta(seconds=app[SETTINGS].sop.remind_after_s)

    async def tick() -> int:
        await follow_up_mass_sends(client, remind_after=remind_after)
        return 0

    return tick


@dataclass(frozen=True)
class EngineHooks:
    """What ``sop.plugin`` puts in the domain record (``Domain(**register().__dict__)``
    style: each field is the record's field of the same name)."""

    contexts: dict[str, tuple[Callable[[web.Application], AsyncIterator[None]], ...]]
    hooks: dict[HookPoint, Callable[..., Awaitable[None]]]
    jobs: tuple[JobSpec, ...]
    outbox_checks: dict[str, Callable[..., Awaitable[str | SendAs | None]]] = field(
        default_factory=dict
    )
    outbox_settled: dict[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)


async def _on_messages(records: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
    await enrol.on_messages(records, conn)


async def _on_event(record: StoredEvent, conn: BaseDBAsyncClient) -> None:
    await enrol.on_event(record, conn)


def register() -> EngineHooks:
    """The engine's hooks, jobs and outbox policies for the sop domain record."""
    scheduler = frozenset({"scheduler"})
    return EngineHooks(
        contexts={role: (engine_ctx,) for role in ("scheduler", "worker", "admin")},
        hooks={"on_messages": _on_messages, "on_event": _on_event},
        jobs=(
            JobSpec(
                name="sop-scheduler",
                roles=scheduler,  # type: ignore[arg-type]
                interval_s=lambda s: s.sop.scheduler_interval_s,
                build=_scheduler_tick,
            ),
            JobSpec(
                name="sop-triggers",
                roles=scheduler,  # type: ignore[arg-type]
                interval_s=lambda s: 30.0,
                build=_triggers_tick,
                rerun_when_busy=True,
            ),
            JobSpec(
                name="sop-results",
                roles=scheduler,  # type: ignore[arg-type]
                interval_s=lambda s: s.sop.results_interval_s,
                build=_results_tick,
                rerun_when_busy=False,
            ),
        ),
        outbox_checks={"sop": before_send},
        outbox_settled={"sop": on_settled},
    )
