"""The edge's domain record: what ``bot`` hands the composition root."""

from __future__ import annotations

from bot import app as bot_app
from bot import precheck
from bot import service as bot_service
from bot.cli import register as register_cli
from core.domain import Domain, JobSpec
from core.settings import Settings


def _outbox_interval(s: Settings) -> float:
    return s.outbox.poll_interval_s


def _archive_interval(s: Settings) -> float:
    return s.archive.poll_interval_s


def _reconcile_interval(s: Settings) -> float:
    # WeCom does not guarantee callback delivery; a minute bounds how long a
    # customer stays half-known after a failed fetch.
    return 60.0


DOMAIN = Domain(
    name="bot",
    model_modules=("bot.models",),
    migrations="bot.migrations",
    check_settings=bot_app.check_settings,
    contexts={
        # Order matters within a role: the stream before what reads it; the field-key
        # check before anything seals or opens a value.
        "receiver": (bot_app.stream_ctx, bot_app.field_keys_ctx, bot_app.receiver_ctx),
        "worker": (
            bot_app.stream_ctx,
            bot_app.field_keys_ctx,
            bot_app.analyzer_ctx,
            bot_app.wecom_ctx,
            bot_app.table_gauges_ctx,
            bot_app.workers_ctx,
        ),
        "scheduler": (
            bot_app.stream_ctx,
            bot_app.field_keys_ctx,
            bot_app.wecom_ctx,
            bot_app.table_gauges_ctx,
            bot_app.archive_ctx,
        ),
        "admin": (
            bot_app.stream_ctx,
            bot_app.field_keys_ctx,
            bot_app.analyzer_ctx,
            # The pre-send check's own capacity (after the intake analyzer it may share).
            precheck.check_ctx,
            bot_app.wecom_ctx,
            bot_app.table_gauges_ctx,
        ),
    },
    routes={
        "receiver": (bot_app.add_receiver_routes,),
        "admin": (bot_app.add_api_routes,),
    },
    jobs=(
        JobSpec(
            name="outbox",
            roles=frozenset({"scheduler"}),
            interval_s=_outbox_interval,
            build=bot_app.outbox_tick,
        ),
        JobSpec(
            name="archive-puller",
            roles=frozenset({"scheduler"}),
            interval_s=_archive_interval,
            build=bot_app.archive_tick,
            rerun_when_busy=False,
            wake=bot_app.archive_wake,
        ),
        JobSpec(
            name="reconcile-contacts",
            roles=frozenset({"scheduler"}),
            interval_s=_reconcile_interval,
            build=bot_app.reconcile_tick,
            rerun_when_busy=False,
        ),
    ),
    cli=register_cli,
    gauges=bot_app.refresh_gauges,
    health=bot_app.analyzer_health,
    export_customer=bot_service.export_customer,
    # erase_customer: not yet — erasure under a legal hold comes with the console's
    # PIPL workflow (the archive must keep what regulators require).
)
