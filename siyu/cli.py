"""``siyu``: one command for operators and the Makefile.

Settings are built once, on first use, and passed down to every command through
``CliContext``; each domain registers its own subcommands (``bot.cli``,
``compliance_nlp.cli``); the root adds ``serve``, ``migrate`` and ``demo``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from core import cli as core_cli
from core import loops
from core.domain import CliContext, CliRegister, Domain
from core.settings import ALL_ROLES, Settings
from siyu.app import schema_of
from siyu.domains import DOMAINS


def cmd_migrate(args: argparse.Namespace, ctx: CliContext) -> int:
    from tortoise import Tortoise

    from core import db as core_db

    settings = ctx.settings

    async def run() -> list[core_db.MigrationFile]:
        await core_db.init_db(settings, ctx.schema)
        try:
            return await core_db.migrate(
                Tortoise.get_connection("default"),
                ctx.schema,
                core_db.dialect_of(settings.database_url),
            )
        finally:
            await core_db.close_db()

    ran = loops.run(run())
    for m in ran:
        print(f"applied {m.label}")
    if not ran:
        print("database is up to date")
    return 0


def cmd_serve(args: argparse.Namespace, ctx: CliContext) -> int:
    from core.server import serve
    from siyu.app import create_app

    settings = ctx.settings
    if args.host:
        settings.http.host = args.host
    if args.port:
        settings.http.port = args.port
    roles = tuple(args.role) if args.role else ALL_ROLES
    app = create_app(settings, roles, auto_migrate=args.migrate)
    loops.run(serve(app, settings.http.host, settings.http.port, label=",".join(roles)))
    return 0


def cmd_demo(args: argparse.Namespace, ctx: CliContext) -> int:
    from siyu.demo import run_demo

    loops.run(
        run_demo(
            data_dir=Path(args.data_dir), port=args.port, rate=args.rate, duration_s=args.duration
        )
    )
    return 0


def _register_root(sub: core_cli.Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("serve", help="run receiver, workers, scheduler and API")
    sp.add_argument(
        "--role",
        action="append",
        choices=ALL_ROLES,
        help="run only this role (repeatable); default: all",
    )
    sp.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    sp.add_argument("--host", default="")
    sp.add_argument("--port", type=int, default=0)
    sp.set_defaults(func=partial(cmd_serve, ctx=ctx))

    sp = sub.add_parser("migrate", help="apply database migrations (every domain's)")
    sp.set_defaults(func=partial(cmd_migrate, ctx=ctx))

    sp = sub.add_parser("demo", help="siyu serve + the WeCom sandbox, configured together")
    sp.add_argument("--data-dir", default="./var/demo")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--rate", type=float, default=2.0, help="simulated actions per second")
    sp.add_argument("--duration", type=float, default=0.0, help="stop after N s (0: run)")
    sp.set_defaults(func=partial(cmd_demo, ctx=ctx))


def _register_nlp(sub: core_cli.Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    # compliance_nlp is a library that imports nothing of ours: the root hands it
    # the analyzer configuration built from siyu's settings.
    from compliance_nlp import AnalyzerConfig
    from compliance_nlp import cli as nlp_cli

    def nlp_config() -> AnalyzerConfig:
        s = ctx.settings.nlp
        return AnalyzerConfig(
            intent_model_dir=s.intent_model_dir,
            violation_model_dir=s.violation_model_dir,
            use_model=s.use_model,
            mask_style=s.mask_style,
        )

    nlp_cli.register(sub, nlp_config)


def _bound(
    register: CliRegister, ctx: CliContext
) -> Callable[[core_cli.Subparsers[argparse.ArgumentParser]], None]:
    def add(sub: core_cli.Subparsers[argparse.ArgumentParser]) -> None:
        register(sub, ctx)

    return add


def build_parser(
    ctx: CliContext | None = None, *, domains: Sequence[Domain] = DOMAINS
) -> argparse.ArgumentParser:
    ctx = ctx or CliContext(settings_factory=Settings, schema=schema_of(domains))
    parser, groups = core_cli.new_parser(
        "siyu", "siyu (私域): WeCom engagement platform for financial institutions"
    )
    groups.register("siyu", partial(_register_root, ctx=ctx))
    for domain in domains:
        if domain.cli is not None:
            groups.register(domain.name, _bound(domain.cli, ctx))
    groups.register("compliance_nlp", partial(_register_nlp, ctx=ctx))
    core_cli.finish_help(parser, groups)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    ctx: CliContext | None = None,
    domains: Sequence[Domain] = DOMAINS,
) -> int:
    from core.logs import setup_logging

    ctx = ctx or CliContext(settings_factory=Settings, schema=schema_of(domains))
    args = build_parser(ctx, domains=domains).parse_args(argv)

    def run(a: argparse.Namespace) -> int:
        setup_logging(ctx.settings.log_level)
        return int(a.func(a) or 0)

    return core_cli.run_command(run, args)


if __name__ == "__main__":
    sys.exit(main())
