"""The ``siyu`` command: one entry for operators and the Makefile."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.settings import ALL_ROLES, Settings, SettingsError


def _settings() -> Settings:
    return Settings()


# ------------------------------------------------------------------ migrate

def cmd_migrate(args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from core import db as core_db

    settings = _settings()

    async def run() -> list[Any]:
        await core_db.init_db(settings)
        try:
            return await core_db.migrate(
                Tortoise.get_connection("default"), core_db.dialect_of(settings.database_url)
            )
        finally:
            await core_db.close_db()

    ran = asyncio.run(run())
    for m in ran:
        print(f"applied {m.version:04d}_{m.name}")
    if not ran:
        print("database is up to date")
    return 0


# ------------------------------------------------------------------ serve

def cmd_serve(args: argparse.Namespace) -> int:
    from core.server import serve

    settings = _settings()
    if args.host:
        settings.http.host = args.host
    if args.port:
        settings.http.port = args.port
    roles = tuple(args.role) if args.role else ALL_ROLES
    asyncio.run(serve(settings, roles, auto_migrate=args.migrate))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.sandbox.demo import run_demo

    asyncio.run(run_demo(data_dir=Path(args.data_dir), port=args.port, rate=args.rate,
                         duration_s=args.duration))
    return 0


# ------------------------------------------------------------------ archive

def cmd_archive_import(args: argparse.Namespace) -> int:
    from bot.archive import ingest_records
    from bot.stream import InboundStream
    from core import redis as core_redis
    from core.crypto import load_keyring

    settings = _settings()
    records: list[Any] = []
    bad_lines: list[dict[str, Any]] = []
    with open(args.file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                bad_lines.append({"line": lineno, "error": f"invalid JSON: {exc.msg}"})

    async def run() -> dict[str, Any]:
        async with core_redis.redis_lifespan(settings) as client:
            stream = InboundStream(client, load_keyring(settings),
                                   stream=settings.pipeline.stream, group=settings.pipeline.group)
            report = await ingest_records(stream, records)
            return report.as_dict()

    out = asyncio.run(run())
    out["rejected"] += len(bad_lines)
    out["errors"] = bad_lines + out["errors"]
    print(json.dumps(out, ensure_ascii=False))
    return 0 if not out["rejected"] else 1


# ------------------------------------------------------------------ messages

EXPORT_TZ = "Asia/Shanghai"


def parse_export_time(flag: str, text: str) -> datetime:
    """An ISO date/time as an aware UTC datetime; no offset means Asia/Shanghai.

    Comparing aware UTC values through the ORM keeps SQLite (ISO text in UTC) and
    PostgreSQL (timestamptz) in agreement whatever the process's local time zone.
    """
    from datetime import UTC
    from zoneinfo import ZoneInfo

    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{flag}: not an ISO date/time: {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(EXPORT_TZ))
    return at.astimezone(UTC)


def cmd_messages_export(args: argparse.Namespace) -> int:
    from bot import models
    from core import db as core_db

    settings = _settings()
    try:
        since = parse_export_time("--since", args.since) if args.since else None
        until = parse_export_time("--until", args.until) if args.until else None
    except ValueError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return 2
    if since is not None and until is not None and until <= since:
        print(f"siyu: --until ({args.until}) must be later than --since ({args.since})",
              file=sys.stderr)
        return 2

    async def run() -> int:
        n = 0
        async with core_db.db_lifespan(settings):
            q = models.Message.all()
            if since is not None:
                q = q.filter(msgtime__gte=since)
            if until is not None:
                q = q.filter(msgtime__lt=until)
            if args.violations_only:
                q = q.filter(has_violation=True)
            if args.advisor:
                q = q.filter(advisor__userid=args.advisor)
            after = 0
            while True:
                batch = await q.filter(id__gt=after).order_by("id").limit(500)
                if not batch:
                    break
                for m in batch:
                    row = {
                        "msgid": m.msgid, "source": m.source, "from": m.sender_id,
                        "to": m.receiver_ids, "roomid": m.roomid,
                        "msgtime": m.msgtime.isoformat(), "msgtype": m.msgtype,
                        "direction": m.direction, "masked_text": m.masked_text,
                        "analysis": m.analysis,
                    }  # fmt: skip
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
                after = batch[-1].id
        return n

    n = asyncio.run(run())
    print(f"exported {n} messages", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ dead letters / outbox

def cmd_deadletter(args: argparse.Namespace) -> int:
    from bot import service as bot_service
    from bot.stream import InboundStream
    from bot.worker import requeue_dead_letter
    from core import db as core_db
    from core import redis as core_redis
    from core.crypto import load_keyring

    settings = _settings()

    async def run() -> int:
        async with core_db.db_lifespan(settings):
            if args.action == "list":
                for dl in await bot_service.dead_letters(status="open"):
                    print(json.dumps({"id": dl.id, "source": dl.source, "key": dl.dedup_key,
                                      "deliveries": dl.deliveries, "error": dl.error,
                                      "at": dl.created_at.isoformat()}, ensure_ascii=False))
                return 0
            async with core_redis.redis_lifespan(settings) as client:
                stream = InboundStream(client, load_keyring(settings),
                                       stream=settings.pipeline.stream)
                print(await requeue_dead_letter(stream, args.id))
            return 0

    return asyncio.run(run())


def cmd_outbox(args: argparse.Namespace) -> int:
    from bot import service as bot_service
    from core import db as core_db

    settings = _settings()

    async def run() -> int:
        async with core_db.db_lifespan(settings):
            for it in await bot_service.recent_outbox(state=args.state, limit=args.limit):
                print(json.dumps({"id": it.id, "api": it.api, "state": it.state.value,
                                  "attempts": it.attempts, "errcode": it.last_errcode,
                                  "error": it.last_error, "key": it.idem_key},
                                 ensure_ascii=False))
        return 0

    return asyncio.run(run())


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siyu", description="siyu (私域): WeCom engagement platform")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("migrate", help="apply database migrations")
    sp.set_defaults(func=cmd_migrate)

    sp = sub.add_parser("serve", help="run receiver, workers, scheduler and API")
    sp.add_argument("--role", action="append", choices=ALL_ROLES,
                    help="run only this role (repeatable); default: all")
    sp.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    sp.add_argument("--host", default="")
    sp.add_argument("--port", type=int, default=0)
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("demo", help="siyu serve + the WeCom sandbox, configured together")
    sp.add_argument("--data-dir", default="./var/demo")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--rate", type=float, default=2.0, help="simulated actions per second")
    sp.add_argument("--duration", type=float, default=0.0, help="stop after N s (0: run)")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("archive", help="会话存档 transcripts")
    asub = sp.add_subparsers(dest="archive_command", required=True)
    ap = asub.add_parser("import", help="queue decrypted archive records from a JSONL file")
    ap.add_argument("file")
    ap.set_defaults(func=cmd_archive_import)

    sp = sub.add_parser("messages", help="stored messages")
    msub = sp.add_subparsers(dest="messages_command", required=True)
    mp = msub.add_parser("export", help="print stored messages as JSON lines")
    mp.add_argument("--since", default="", metavar="WHEN",
                    help="only messages sent at or after WHEN, an ISO date or date/time "
                         "(2026-11-01, 2026-11-01T08:30, 2026-11-01T00:00+00:00); "
                         "no offset means Asia/Shanghai")
    mp.add_argument("--until", default="", metavar="WHEN",
                    help="only messages sent before WHEN (exclusive), same format as "
                         "--since; no offset means Asia/Shanghai")
    mp.add_argument("--violations-only", action="store_true",
                    help="only messages flagged with a compliance violation")
    mp.add_argument("--advisor", default="", metavar="USERID",
                    help="only messages of the advisor with this WeCom userid")
    mp.add_argument("--format", default="jsonl", choices=["jsonl"])
    mp.set_defaults(func=cmd_messages_export)

    sp = sub.add_parser("deadletter", help="entries that kept failing")
    dsub = sp.add_subparsers(dest="action", required=True)
    dsub.add_parser("list").set_defaults(func=cmd_deadletter)
    dp = dsub.add_parser("requeue")
    dp.add_argument("id", type=int)
    dp.set_defaults(func=cmd_deadletter)

    sp = sub.add_parser("outbox", help="outbound WeCom writes and their state")
    sp.add_argument("--state", choices=["pending", "sending", "done", "failed"])
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(func=cmd_outbox)

    from bot.wecom import decrypt_cli

    decrypt_cli.register(sub)
    try:
        from compliance_nlp import AnalyzerConfig
        from compliance_nlp import cli as nlp_cli  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # pragma: no cover - the library ships with siyu
        pass
    else:
        def nlp_config() -> Any:
            s = _settings()
            return AnalyzerConfig(intent_model_dir=s.nlp.intent_model_dir,
                                  violation_model_dir=s.nlp.violation_model_dir,
                                  use_model=s.nlp.use_model, mask_style=s.nlp.mask_style)

        nlp_cli.register(sub, nlp_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from core.logs import setup_logging

    args = build_parser().parse_args(argv)
    try:
        setup_logging(_settings().log_level)
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"siyu: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from core.db import SchemaNotMigrated

        if isinstance(exc, SchemaNotMigrated):
            print(f"siyu: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
