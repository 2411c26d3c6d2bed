"""``siyu tags …``: the tag library and audiences from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.domain import CliContext

T = TypeVar("T")


def _run_db(ctx: CliContext, work: Callable[[], Awaitable[T]]) -> T:
    from core import db as core_db

    async def run() -> T:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            return await work()

    return asyncio.run(run())


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from tagging import service

    async def work() -> list[dict[str, Any]]:
        groups = await service.live_groups()
        tags = await service.live_tags()
        return [
            {
                "group": g.name,
                "origin": g.origin.value,
                "sync_to_wecom": g.sync_to_wecom,
                "wecom_group_id": g.wecom_group_id,
                "tags": [
                    {"id": t.id, "name": t.name, "wecom_tag_id": t.wecom_tag_id}
                    for t in tags
                    if t.group_id == g.id  # type: ignore[attr-defined]
                ],
            }
            for g in groups
        ]

    print(json.dumps(_run_db(ctx, work), ensure_ascii=False, indent=2))
    return 0


def cmd_count(args: argparse.Namespace, ctx: CliContext) -> int:
    from tagging import audience

    try:
        query = audience.parse(args.expr)
    except audience.ExpressionError as exc:
        print(f"invalid expression at {exc.position}: {exc.message}")
        return 2

    async def work() -> int:
        return await audience.count(query)

    try:
        n = _run_db(ctx, work)
    except audience.ExpressionError as exc:
        print(f"invalid expression at {exc.position}: {exc.message}")
        return 2
    print(json.dumps({"count": n}))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("tags", help="the tag library, WeCom corp-tag sync and audiences")
    tsub = sp.add_subparsers(dest="tags_command", required=True)
    tsub.add_parser("list", help="groups and tags, with their WeCom ids").set_defaults(
        func=lambda a: cmd_list(a, ctx)
    )
    c = tsub.add_parser("count", help="how many customers an audience expression selects")
    c.add_argument("expr", help='e.g. tag:"高净值" AND NOT tag:"已退订"')
    c.set_defaults(func=lambda a: cmd_count(a, ctx))
