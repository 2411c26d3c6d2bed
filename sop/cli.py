"""``siyu campaigns …``: SOP campaigns and their results from the command line.

Building and approving stay in the console and the API (they need a person on each
side); the command line lists, shows, reports, pauses and archives, and records an
operator's opt-out for a customer.  Every change is audited as ``system:cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.domain import CliContext

T = TypeVar("T")
CLI_ACTOR_NAME = "cli:campaigns"


def _run_db(ctx: CliContext, work: Callable[[], Awaitable[T]]) -> T:
    from core import db as core_db

    async def run() -> T:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            return await work()

    return asyncio.run(run())


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from sop import campaigns

    async def work() -> list[dict[str, Any]]:
        rows = await campaigns.list_campaigns(status=args.status)
        return [
            {
                "id": r.campaign.id,
                "name": r.campaign.name,
                "status": r.campaign.status.value,
                "current_version": r.campaign.current_version,
                "latest_version": r.campaign.latest_version,
                "latest_version_status": r.latest_status.value,
                "owner": r.campaign.owner,
                "enrolled": r.enrolled,
                "active_enrolments": r.active,
                "touches_planned": r.planned,
                "touches_sent": r.sent,
            }
            for r in rows
        ]

    print(json.dumps(_run_db(ctx, work), ensure_ascii=False, indent=2))
    return 0


def cmd_show(args: argparse.Namespace, ctx: CliContext) -> int:
    from sop import campaigns, views

    async def work() -> dict[str, Any]:
        c = await campaigns.get_campaign(args.id)
        versions = [
            views.version_dict(v, await campaigns.steps_of(v))
            for v in await campaigns.versions_of(c)
        ]
        return {**views.campaign_dict(c), "versions": versions}

    try:
        print(json.dumps(_run_db(ctx, work), ensure_ascii=False, indent=2))
    except campaigns.NotFound as exc:
        print(exc.message, file=sys.stderr)
        return 1
    return 0


def cmd_stats(args: argparse.Namespace, ctx: CliContext) -> int:
    from sop import campaigns, stats

    async def work() -> stats.CampaignStats:
        return await stats.campaign_stats(await campaigns.get_campaign(args.id))

    try:
        result = _run_db(ctx, work)
    except campaigns.NotFound as exc:
        print(exc.message, file=sys.stderr)
        return 1
    if args.csv:
        sys.stdout.write(stats.to_csv(result))
    else:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    return 0


def _transition(name: str) -> Callable[[argparse.Namespace, CliContext], int]:
    def cmd(args: argparse.Namespace, ctx: CliContext) -> int:
        from core.audit import Actor
        from sop import campaigns

        do = getattr(campaigns, f"do_{name}")

        async def work() -> Any:
            return await do(campaign_id=args.id, actor=Actor.system(CLI_ACTOR_NAME), source="cli")

        try:
            c = _run_db(ctx, work)
        except campaigns.CampaignError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        print(json.dumps({"id": c.id, "status": c.status.value}, ensure_ascii=False))
        return 0

    return cmd


def cmd_opt_out(args: argparse.Namespace, ctx: CliContext) -> int:
    from core.audit import Actor
    from sop import campaigns

    async def work() -> bool:
        return await campaigns.do_opt_out(
            external_userid=args.external_userid,
            reason=args.reason,
            actor=Actor.system(CLI_ACTOR_NAME),
            source="cli",
        )

    try:
        new = _run_db(ctx, work)
    except campaigns.CampaignError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(json.dumps({"opted_out": True, "new": new}))
    return 0


def cmd_calendar(args: argparse.Namespace, ctx: CliContext) -> int:
    """The holiday calendar steps are planned with: each year and where it comes from,
    after checking the operator's file (``--file``, else ``SIYU_SOP__HOLIDAY_FILE``)."""
    from sop.engine import holidays

    path = args.file if args.file is not None else ctx.settings.sop.holiday_file
    try:
        years = holidays.read_calendar_file(path) if path else {}
    except holidays.HolidayFileError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    holidays.configure(years)
    try:
        first, last = holidays.covered_years()
        out = {
            "file": path or None,
            "covered": f"{first}–{last}",
            "years": {str(y): src for y, src in holidays.year_sources().items() if y >= last - 2},
            "file_years": {
                str(y.year): {
                    "holidays": len(y.holidays),
                    "workdays": sorted(d.isoformat() for d in y.workdays),
                }
                for y in years.values()
            },
        }
    finally:
        holidays.configure(None)
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("campaigns", help="SOP campaigns: list, show, results, pause, archive")
    csub = sp.add_subparsers(dest="campaigns_command", required=True)
    ls = csub.add_parser("list", help="campaigns with their status, versions and counts (JSON)")
    ls.add_argument(
        "--status", choices=("draft", "pending_approval", "active", "paused", "archived")
    )
    ls.set_defaults(func=lambda a: cmd_list(a, ctx))
    show = csub.add_parser("show", help="a campaign, every version, its steps and findings")
    show.add_argument("id", type=int)
    show.set_defaults(func=lambda a: cmd_show(a, ctx))
    st = csub.add_parser("stats", help="results per version and step (JSON, or --csv)")
    st.add_argument("id", type=int)
    st.add_argument("--csv", action="store_true", help="the console's CSV")
    st.set_defaults(func=lambda a: cmd_stats(a, ctx))
    for name, text in (
        ("pause", "pause a running campaign: pending touches stop at once"),
        ("resume", "resume a paused campaign"),
        ("archive", "archive a campaign: planned touches are skipped, enrolments end"),
    ):
        p = csub.add_parser(name, help=text)
        p.add_argument("id", type=int)
        cmd = _transition(name)
        p.set_defaults(func=lambda a, cmd=cmd: cmd(a, ctx))
    oo = csub.add_parser("opt-out", help="record an operator's opt-out for a customer")
    oo.add_argument("external_userid")
    oo.add_argument("--reason", default="", help="why (kept, audited)")
    oo.set_defaults(func=lambda a: cmd_opt_out(a, ctx))
    cal = csub.add_parser(
        "calendar",
        help="check the holiday calendar file and show which years steps can skip holidays in",
    )
    cal.add_argument(
        "--file",
        help="a calendar file to check (JSON, docs/sop-engine.md); default: SIYU_SOP__HOLIDAY_FILE",
    )
    cal.set_defaults(func=lambda a: cmd_calendar(a, ctx))
