"""Core's own domain record: the audit log's tables, its head export and ``siyu audit``.

The audit log belongs to core (docs/architecture.md: every domain's use cases write
entries in their own transactions), so its table cannot sit in a domain's
migrations — a domain listed before that one could not rely on it.  Core therefore
hands the root a record like any domain's, listed first in ``siyu.domains``; the
migrator needs nothing new for it (migrations are keyed by (domain, version), and
``core`` is just another name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from functools import partial

from aiohttp import web

from core import audit
from core.appkit import SETTINGS
from core.cli import Subparsers
from core.domain import CliContext, Domain, JobSpec, JobTick
from core.settings import Settings

# A minute: cheap (one row read, a line appended only when the head moved), and it
# bounds how much of the log a rebuild could rewrite unseen.
HEAD_EXPORT_INTERVAL_S = 60.0


def _head_interval(settings: Settings) -> float:
    return HEAD_EXPORT_INTERVAL_S


def build_head_export(app: web.Application) -> JobTick:
    return audit.HeadExporter(app[SETTINGS].data_dir).tick


def cmd_audit_verify(args: argparse.Namespace, ctx: CliContext) -> int:
    from core import db as core_db

    settings = ctx.settings
    heads = [] if args.ignore_exported else audit.read_heads(settings.data_dir)

    async def run() -> audit.VerifyReport:
        async with core_db.db_lifespan(settings, ctx.schema):
            return await audit.verify(recorded_heads=heads)

    report = asyncio.run(run())
    out = {
        "ok": report.ok,
        "entries": report.entries,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "exported_heads_checked": len(heads),
    }
    if report.problem is not None:
        out["problem"] = {
            "kind": report.problem.kind,
            "seq": report.problem.seq,
            "message": report.problem.message,
        }
    print(json.dumps(out, ensure_ascii=False))
    return 0 if report.ok else 1


def cmd_audit_head(args: argparse.Namespace, ctx: CliContext) -> int:
    from core import db as core_db

    settings = ctx.settings

    async def run() -> audit.ChainHead:
        async with core_db.db_lifespan(settings, ctx.schema):
            return await audit.chain_head()

    head = asyncio.run(run())
    print(json.dumps({"seq": head.seq, "hash": head.hash}))
    return 0


def register_cli(sub: Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("audit", help="the hash-chained audit log: verify, head")
    asub = sp.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser(
        "verify", help="walk the chain; report the first altered, missing or reordered entry"
    )
    v.add_argument(
        "--ignore-exported",
        action="store_true",
        help="do not check the heads exported to <data dir>/audit/heads.jsonl",
    )
    v.set_defaults(func=partial(cmd_audit_verify, ctx=ctx))
    h = asub.add_parser("head", help="print the chain head (position and hash)")
    h.set_defaults(func=partial(cmd_audit_head, ctx=ctx))


DOMAIN = Domain(
    name="core",
    model_modules=("core.models",),
    migrations="core.migrations",
    jobs=(
        JobSpec(
            name="audit-head",
            roles=frozenset({"scheduler"}),
            interval_s=_head_interval,
            build=build_head_export,
            rerun_when_busy=False,
        ),
    ),
    cli=register_cli,
)
