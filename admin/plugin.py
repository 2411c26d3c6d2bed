"""The admin domain's record: what ``admin`` hands the composition root."""

from __future__ import annotations

import argparse

from admin import app as admin_app
from admin import dashboard, dashboard_cli, review_cli
from admin.cli import register as register_users_cli
from admin.lexicon import pages as lexicon_pages
from admin.lexicon import views as lexicon_views
from admin.sidebar import views as sidebar_views
from admin.snippets import jobs as snippet_jobs
from admin.snippets import pages as snippet_pages
from admin.snippets import views as snippet_views
from core.cli import Subparsers
from core.domain import CliContext, Domain, JobSpec


def register_cli(sub: Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    register_users_cli(sub, ctx)
    review_cli.register(sub, ctx)
    dashboard_cli.register(sub, ctx)


DOMAIN = Domain(
    name="admin",
    model_modules=(
        "admin.models",
        "admin.dashboard_models",
        "admin.lexicon.models",
        "admin.snippets.models",
    ),
    migrations="admin.migrations",
    # The console's state, then the WeCom chat sidebar's (its sessions, the app's ticket).
    contexts={"admin": (admin_app.console_ctx, sidebar_views.sidebar_ctx)},
    # Last in the root's list, so every other domain's routes exist when the guard
    # is installed and the sidebar is read from the router.
    routes={"admin": (admin_app.add_console_routes,)},
    # The lexicon compliance owns and the reply library: pages and their API routes,
    # mounted inside the shell like every domain's pages.
    pages=(
        lexicon_pages.add_pages,
        lexicon_views.add_routes,
        snippet_pages.add_pages,
        snippet_views.add_routes,
    ),
    jobs=(
        # Approved snippets judged again when a release changes the shipped rules.
        JobSpec(
            name="snippets-recheck",
            roles=frozenset({"admin"}),
            interval_s=snippet_jobs.recheck_interval,
            build=snippet_jobs.build_recheck_tick,
            rerun_when_busy=False,
        ),
    ),
    cli=register_cli,
    # The dashboard's daily counters, kept in the transaction that stores each read.
    hooks={"on_messages": dashboard.on_messages},
)
