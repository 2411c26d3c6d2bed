"""The tagging domain's record: what ``tagging`` hands the composition root."""

from __future__ import annotations

from core.domain import CustomerPanel, Domain, JobSpec
from tagging import hooks, jobs, pages, service, sync, views
from tagging.cli import register as register_cli

DOMAIN = Domain(
    name="tagging",
    model_modules=("tagging.models",),
    migrations="tagging.migrations",
    routes={"admin": (views.add_routes,)},
    # Console pages (标签管理) inside the shell; templates in tagging/templates.
    pages=(pages.add_pages,),
    customer_panels=(
        CustomerPanel(key="tagging.tags", title="标签", render=pages.tags_panel, order=20),
        CustomerPanel(
            key="tagging.attributes",
            title="自定义与加密属性",
            render=pages.attributes_panel,
            order=25,
        ),
    ),
    jobs=(
        JobSpec(
            name="tagging-sync",
            roles=frozenset({"scheduler"}),
            interval_s=jobs._interval,
            build=jobs.build_tick,
            rerun_when_busy=False,
        ),
        JobSpec(
            name="tagging-rules",
            roles=frozenset({"scheduler"}),
            interval_s=jobs._rules_interval,
            build=jobs.build_rules_tick,
            rerun_when_busy=False,
        ),
    ),
    cli=register_cli,
    hooks={"on_messages": hooks.on_messages, "on_event": hooks.on_event},
    export_customer=service.export_customer,
    outbox_checks={"tagging.tag": sync.before_tag_write, "tagging.mark": sync.before_mark},
    outbox_settled={"tagging.tag": sync.on_tag_settled, "tagging.group": sync.on_tag_settled},
)
