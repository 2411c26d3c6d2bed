"""``siyu dashboard rebuild [--since DAY]``: recompute the dashboard's daily rollups.

For a database that stored messages before the rollups existed (migration 0002), or
after a repair.  Idempotent: a second run writes the same rows.  Reads masked fields
only (intent, categories, ids), never message bodies.
"""

from __future__ import annotations

import argparse
from datetime import date
from functools import partial

from admin import dashboard
from admin.cli import _run_db
from core.cli import Subparsers
from core.domain import CliContext


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text) if len(text) == 10 else date.fromisoformat("")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date YYYY-MM-DD") from None


def cmd_rebuild(args: argparse.Namespace, ctx: CliContext) -> int:
    since: date | None = args.since
    result = _run_db(ctx, lambda: dashboard.rebuild(since=since))
    scope = f"from {since.isoformat()}" if since else "all days"
    print(f"dashboard rebuilt ({scope}): {result.messages} messages over {result.days} days")
    return 0


def register(sub: Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("dashboard", help="the console dashboard's daily rollups: rebuild")
    dsub = sp.add_subparsers(dest="dashboard_command", required=True)
    r = dsub.add_parser("rebuild", help="recompute the daily rollups from stored messages")
    r.add_argument(
        "--since",
        type=parse_day,
        help="first day to recompute, YYYY-MM-DD (北京时间); default: all",
    )
    r.set_defaults(func=partial(cmd_rebuild, ctx=ctx))
