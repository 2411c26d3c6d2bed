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


def _keyring(ctx: CliContext) -> Any:
    from core.crypto import load_keyring

    # As `siyu serve` does: a new installation may import before it ever served.
    return load_keyring(ctx.settings, create=True)


def cmd_import(args: argparse.Namespace, ctx: CliContext) -> int:
    """Stream a CSV in chunks; each chunk validated, applied and reported by line number."""
    import csv
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from bot import flows as bot_flows
    from core.audit import Actor
    from tagging import attributes

    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    actor = Actor("system", "cli", "cli:customers-import")
    keyring = _keyring(ctx)

    async def work() -> attributes.ImportReport:
        # The keys that seal AUM and holdings must be the ones the database knows.
        await bot_flows.check_field_keys(keyring=keyring, settings=ctx.settings)
        total = attributes.ImportReport()
        # A CLI command: nothing else runs on this loop, and the file is read line by line.
        with path.open(newline="", encoding="utf-8-sig") as fh:  # noqa: ASYNC230
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if "external_userid" not in header and "unionid" not in header:
                raise SystemExit("the header needs an external_userid or unionid column")
            unknown = [h for h in header if h not in ("external_userid", "unionid")]
            schema = await attributes.load_schema()
            unknown = [h for h in unknown if h not in schema]
            if unknown:
                raise SystemExit(f"unknown attribute columns: {', '.join(unknown)}")
            retired = [h for h in header if h in schema and schema[h].retired]
            if retired:
                raise SystemExit(f"retired attribute columns: {', '.join(retired)}")
            batch = await attributes.start_import(actor=actor, source="csv", filename=path.name)
            total.import_id = batch.id
            chunk: list[dict[str, str]] = []
            first_line = 2  # line 1 is the header
            ok = False
            try:
                with tqdm(unit=" rows", file=sys.stderr, disable=args.quiet) as bar:
                    for row in reader:
                        chunk.append(row)
                        if len(chunk) == args.chunk:
                            total.merge(await _chunk(chunk, first_line, batch))
                            first_line += len(chunk)
                            bar.update(len(chunk))
                            chunk = []
                    if chunk:
                        total.merge(await _chunk(chunk, first_line, batch))
                        bar.update(len(chunk))
                ok = True
            finally:
                await attributes.finish_import(batch=batch, ok=ok)
        return total

    async def _chunk(
        rows: list[dict[str, str]], first_line: int, batch: Any
    ) -> attributes.ImportReport:
        return await attributes.do_import_attributes(
            rows=rows,
            actor=actor,
            keyring=keyring,
            first_number=first_line,
            source="csv",
            filename=path.name,
            batch=batch,
        )

    try:
        report = _run_db(ctx, work)
    except UnicodeDecodeError:
        print("the file is not UTF-8", file=sys.stderr)
        return 2
    summary = report.as_dict()
    for err in summary["errors"][:200]:
        print(f"line {err['row']}: {err['error']}", file=sys.stderr)
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k not in ("errors", "import_id")},
            ensure_ascii=False,
        )
    )
    return 1 if summary["rejected"] else 0


def cmd_sync(args: argparse.Namespace, ctx: CliContext) -> int:
    """A full pull of WeCom's corp tags and the reconcile, now; prints the report."""
    import sys

    from bot.wecom.client import WeComError
    from tagging import sync

    settings = ctx.settings
    if not settings.wecom.corp_id or not settings.wecom.app_secret.get_secret_value():
        print("siyu: SIYU_WECOM__CORP_ID and SIYU_WECOM__APP_SECRET are needed", file=sys.stderr)
        return 2

    keyring = _keyring(ctx)

    async def work() -> dict[str, Any]:
        import aiohttp

        from bot.wecom.client import WeComClient
        from core.redis import redis_lifespan

        # The client the scheduler builds (bot.app.wecom_ctx): the access token and the
        # per-API buckets are shared through Redis, so this run counts against WeCom's
        # limits with everyone else's calls.
        async with redis_lifespan(settings) as redis, aiohttp.ClientSession() as session:
            client = WeComClient(
                session=session,
                redis=redis,
                corp_id=settings.wecom.corp_id,
                base_url=settings.wecom.api_base_url,
                secrets={
                    "app": settings.wecom.app_secret.get_secret_value(),
                    "contact": settings.wecom.contact_secret.get_secret_value(),
                },
                agent_id=settings.wecom.agent_id,
                timeout_s=settings.wecom.http_timeout_s,
                keyring=keyring,
            )
            try:
                report = await sync.sync_library(client=client, kind="reconcile")
            except WeComError as exc:
                return {"ok": False, "errcode": exc.errcode, "errmsg": exc.errmsg}
        return {"ok": True, "counts": report.counts(), "changes": report.changes}

    result = _run_db(ctx, work)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if result["ok"] else 1


def cmd_seal_attributes(args: argparse.Namespace, ctx: CliContext) -> int:
    """Seal sensitive attributes stored in the clear before sealing existed."""
    from bot import flows as bot_flows
    from tagging import attributes

    keyring = _keyring(ctx)

    async def work() -> int:
        await bot_flows.check_field_keys(keyring=keyring, settings=ctx.settings)
        return await attributes.do_seal_existing(keyring=keyring)

    print(json.dumps({"customers": _run_db(ctx, work)}))
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
    tsub.add_parser(
        "sync",
        help="pull WeCom's corp tags now and reconcile (push back what siyu owns); "
        "prints the report, exits 1 when WeCom refused",
    ).set_defaults(func=lambda a: cmd_sync(a, ctx))
    tsub.add_parser(
        "seal-attributes",
        help="seal sensitive attributes (AUM, holdings, fields marked sensitive) "
        "still stored in the clear; running it again changes nothing",
    ).set_defaults(func=lambda a: cmd_seal_attributes(a, ctx))

    cp = sub.add_parser("customers", help="customers' institution attributes (imports)")
    csub = cp.add_subparsers(dest="customers_command", required=True)
    imp = csub.add_parser(
        "import",
        help="import attributes from a CSV (external_userid or unionid + attribute columns); "
        "re-running the same file changes nothing; exits 1 when rows were rejected",
    )
    imp.add_argument("file", help="UTF-8 CSV with a header row")
    imp.add_argument("--chunk", type=int, default=1000, help="rows per transaction (default 1000)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=lambda a: cmd_import(a, ctx))
