"""The sop domain's record: what ``sop`` hands the composition root."""

from __future__ import annotations

from core.domain import CustomerPanel, DashboardChart, Domain
from sop import engine, pages, panels, touch_views, views
from sop.attribute_uses import attribute_uses
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
    # The campaign API (/api/v1/campaigns) and the advisor's touches the chat sidebar
    # reads and records (/api/v1/touches), mounted by admin behind its guard.
    routes={"admin": (views.add_routes, touch_views.add_routes)},
    # The console's pages: list, builder, campaign, approval, results.
    pages=(pages.add_pages,),
    # `siyu campaigns …`: list, show, stats, pause/resume/archive, opt-out.
    cli=register_cli,
    customer_panels=(
        # The customer page: every journey and its touches (the viewer's reach).
        CustomerPanel(
            key="sop.journeys",
            title="SOP 旅程",
            render=panels.journeys_panel,
            order=40,
            surfaces=frozenset({"console"}),
        ),
        # The chat sidebar: what is due for this customer, ready to check and send.
        CustomerPanel(
            key="sop.due",
            title="待跟进的 SOP 触达",
            render=panels.due_panel,
            order=5,
            surfaces=frozenset({"sidebar"}),
        ),
    ),
    dashboard_charts=(
        DashboardChart(
            key="sop.funnel",
            title="SOP 活动转化漏斗",
            kind="funnel",
            hint="运行中的活动，所选时间段内入组的客户：至少有一次触达到达该阶段的客户数",
            data=panels.dashboard_funnels,
            order=10,
            permission="campaigns:read",
        ),
    ),
    # Campaigns using a customer attribute keep tagging from retiring it.
    attribute_uses=attribute_uses,
)
