"""``create_app(settings, roles)``: the one place an application is wired.

Core's resources first (Redis and the keyring, then the database when a role
needs it), then each domain's contexts for the roles in the root's order, then
the periodic jobs, then the tasks context — last in, so at shutdown it stops
every loop before any resource those loops use is closed.  Routes follow the
same order.  ``serve``, the demo, the test harness and the benchmarks all call
this; none wires an app of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiohttp import web

from bot import keys as bot_keys
from bot.archive_puller import FinanceSdk
from bot.hooks import Hooks
from bot.outbox import OutboxPolicies
from core import appkit
from core.db import Schema
from core.domain import CleanupContext, Domain
from core.metrics import Metrics
from core.settings import ALL_ROLES, Role, Settings
from siyu.domains import DOMAINS


def schema_of(domains: Sequence[Domain]) -> Schema:
    return Schema(
        model_modules=tuple(m for d in domains for m in d.model_modules),
        migrations=tuple((d.name, d.migrations) for d in domains if d.migrations),
    )


def finance_sdk_for(settings: Settings) -> Callable[[], FinanceSdk] | None:
    """How the archive puller opens 会话存档: WeCom's native SDK, the sandbox, or not at all.

    Chosen here, at the root, so that product code never imports the sandbox.
    """
    if settings.archive.sdk == "none":
        return None
    if settings.archive.sdk == "native":
        from bot.archive_puller import NativeFinanceSdk

        def open_native() -> NativeFinanceSdk:
            return NativeFinanceSdk(
                settings.archive.sdk_lib_path,
                settings.wecom.corp_id,
                settings.archive.secret.get_secret_value(),
            )

        return open_native
    from bot.sandbox.archive import SandboxFinanceSdk

    def open_sandbox() -> SandboxFinanceSdk:
        return SandboxFinanceSdk(settings.wecom.api_base_url)

    return open_sandbox


def create_app(
    settings: Settings,
    roles: Iterable[Role] = ALL_ROLES,
    *,
    domains: Sequence[Domain] = DOMAINS,
    auto_migrate: bool = False,
    analyzer: Any = None,
) -> web.Application:
    roles = frozenset(roles)
    for d in domains:
        if d.check_settings is not None:
            d.check_settings(settings, roles)
    schema = schema_of(domains)
    app = web.Application(
        client_max_size=settings.http.max_body_bytes, middlewares=[appkit.api_auth]
    )
    app[appkit.SETTINGS] = settings
    app[appkit.ROLES] = roles
    app[appkit.METRICS] = Metrics()
    app[appkit.STOP] = asyncio.Event()
    app[appkit.TASKS] = []
    app[appkit.SCHEMA] = schema
    app[appkit.HAS_DB] = bool(roles & appkit.DB_ROLES)
    app[appkit.GAUGES] = [d.gauges for d in domains if d.gauges is not None]
    app[appkit.HEALTH] = [d.health for d in domains if d.health is not None]
    app[appkit.DOMAINS] = tuple(domains)
    app[appkit.REFUSALS] = appkit.refusal_log()
    app[bot_keys.HOOKS] = Hooks.from_domains(domains)
    app[bot_keys.OUTBOX_POLICIES] = OutboxPolicies.from_domains(domains)
    app[bot_keys.FINANCE_SDK] = finance_sdk_for(settings)
    if analyzer is not None:
        app[bot_keys.ANALYZER] = analyzer

    contexts: list[CleanupContext] = [appkit.redis_context(settings)]
    if app[appkit.HAS_DB]:
        contexts.append(appkit.db_context(settings, schema, auto_migrate=auto_migrate))
    for d in domains:
        for role in ALL_ROLES:  # a stable order, whatever order the roles came in
            if role in roles:
                contexts += [c for c in d.contexts.get(role, ()) if c not in contexts]
    # After every resource /readyz and /metrics read; closed before they are.
    contexts.append(appkit.ops_listener_context(settings))
    contexts.append(appkit.jobs_context([j for d in domains for j in d.jobs], roles))
    contexts.append(appkit.tasks_context)
    app.cleanup_ctx.extend(contexts)

    for d in domains:
        added = []
        for role in ALL_ROLES:
            if role in roles:
                for setup in d.routes.get(role, ()):
                    if setup not in added:
                        setup(app)
                        added.append(setup)
    appkit.add_health_routes(app)
    return app
