"""The sop domain's record: what ``sop`` hands the composition root."""

from __future__ import annotations

from core.domain import Domain
from sop import engine, pages, views
from sop.cli import register as register_cli

# The engine's part: pipeline hooks (triggers, exits), the scheduler, trigger and
# results jobs, and the outbox policies for sop.* rows (re-check, settle).
_ENGINE = engine.register()

DOMAIN = Domain(
    name="sop",
    model_modules=("sop.models",),
    migrations="sop.migrations",
    contexts=_ENGINE.contexts,  # type: ignore[arg-type]
    hooks=_ENGINE.hooks,
    jobs=_ENGINE.jobs,
    outbox_checks=_ENGINE.outbox_checks,
    outbox_settled=_ENGINE.outbox_settled,
    # The campaign API (/api/v1/campaigns), mounted by admin behind its guard.
    routes={"admin": (views.add_routes,)},
    # The console's pages: list, builder, campaign, approval, results.
    pages=(pages.add_pages,),
    # `siyu campaigns …`: list, show, stats, pause/resume/archive, opt-out.
    cli=register_cli,
)
