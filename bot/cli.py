"""The edge's ``siyu`` commands: ``archive``, ``messages``, ``deadletter``, ``outbox``, ``wecom``.

Registered by the root through the domain record (``bot.DOMAIN.cli``); each
command gets the settings the root built once, through ``CliContext``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from functools import partial
from typing import Any

from bot.models import OutboxState
from bot.wecom import decrypt_cli
from core.domain import CliContext

# ------------------------------------------------------------------ archive


def cmd_archive_import(args: argparse.Namespace, ctx: CliContext) -> int:
    from bot.archive import ingest_records
    from bot.stream import InboundStream
    from core import redis as core_redis
    from core.crypto import load_keyring

    settings = ctx.settings
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
            stream = InboundStream(
                client,
                load_keyring(settings),
                stream=settings.pipeline.stream,
                group=settings.pipeline.group,
            )
            report = await ingest_records(stream, records)
            return report.as_dict()

    out = asyncio.run(run())
    out["rejected"] += len(bad_lines)
    out["errors"] = bad_lines + out["errors"]
    print(json.dumps(out, ensure_ascii=False))
    return 0 if not out["rejected"] else 1


ARCHIVE_REDECRYPT_HELP = """\
Decrypt again the 会话存档 records the archive puller dead-lettered because it
could not decrypt them (an RSA or DecryptData failure, e.g. a wrong private key
file for their publickey_ver), after the cause is fixed and the scheduler
restarted with the right SIYU_ARCHIVE__PRIVATE_KEYS.

The records are kept still under WeCom's encryption, sealed with the field key;
only the puller holds the finance SDK and the private keys, so this command marks
them and wakes it; each is then decrypted and queued for the worker (or comes
back open with the new error).  Records whose key is simply missing are never
dead-lettered: the puller waits before them and carries on once it has the key.

Prints one JSON object: requested, requeued, still_failing, pending ids.
Exit 0 when every record was requeued (or --wait 0), 1 when some still fail or
no puller took them within --wait seconds, 2 for an id that is not such a
dead letter (nothing is marked then).
"""


def cmd_archive_redecrypt(args: argparse.Namespace, ctx: CliContext) -> int:
    import time

    import redis

    from bot import service as bot_service
    from bot.archive_puller import wake_archive_puller
    from bot.stream import InboundStream
    from core import db as core_db
    from core import redis as core_redis
    from core.crypto import load_keyring

    if bool(args.all) == bool(args.ids):
        print("siyu: give dead letter ids, or --all (not both)", file=sys.stderr)
        return 2
    settings = ctx.settings

    async def run() -> int:
        async with core_db.db_lifespan(settings, ctx.schema):
            if args.ids:
                found = await bot_service.dead_letters_by_id(ids=args.ids)
                problems = []
                for i in args.ids:
                    dl = found.get(i)
                    if dl is None:
                        problems.append(f"{i}: no such dead letter")
                    elif dl.source != bot_service.ARCHIVE_RAW:
                        problems.append(
                            f"{i}: not an undecryptable archive record (source {dl.source!r}); "
                            "use siyu deadletter requeue"
                        )
                    elif dl.status != "open":
                        problems.append(f"{i}: is {dl.status}, not open")
                if problems:
                    for p in problems:
                        print(f"siyu: dead letter {p}", file=sys.stderr)
                    return 2
            requested = await bot_service.request_archive_redecrypt(
                ids=None if args.all else list(args.ids)
            )
            if requested:
                try:
                    async with core_redis.redis_lifespan(settings) as client:
                        await wake_archive_puller(
                            InboundStream(
                                client, load_keyring(settings), stream=settings.pipeline.stream
                            )
                        )
                except (redis.RedisError, OSError) as exc:
                    print(
                        f"siyu: could not wake the archive puller ({type(exc).__name__}); "
                        "it takes the marked records at its next poll",
                        file=sys.stderr,
                    )
            deadline = time.monotonic() + max(0.0, args.wait)
            while True:
                rows = await bot_service.dead_letters_by_id(ids=requested)
                pending = [i for i in requested if rows[i].status == "redecrypt"]
                if not pending or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(1.0)
            out = {
                "requested": requested,
                "requeued": [i for i in requested if rows[i].status == "requeued"],
                "still_failing": [
                    {"id": i, "error": rows[i].error} for i in requested if rows[i].status == "open"
                ],
                "pending": pending,
            }
            print(json.dumps(out, ensure_ascii=False))
            if pending and args.wait > 0:
                print(
                    "siyu: no archive puller took them yet: is a scheduler with "
                    "SIYU_ARCHIVE__SDK running? They stay marked for it.",
                    file=sys.stderr,
                )
            return 1 if out["still_failing"] or (pending and args.wait > 0) else 0

    return asyncio.run(run())


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


def cmd_messages_export(args: argparse.Namespace, ctx: CliContext) -> int:
    from bot import models
    from core import db as core_db

    settings = ctx.settings
    try:
        since = parse_export_time("--since", args.since) if args.since else None
        until = parse_export_time("--until", args.until) if args.until else None
    except ValueError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return 2
    if since is not None and until is not None and until <= since:
        print(
            f"siyu: --until ({args.until}) must be later than --since ({args.since})",
            file=sys.stderr,
        )
        return 2

    async def run() -> int:
        n = 0
        async with core_db.db_lifespan(settings, ctx.schema):
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
                        "msgid": m.msgid,
                        "source": m.source,
                        "from": m.sender_id,
                        "to": m.receiver_ids,
                        "roomid": m.roomid,
                        "msgtime": m.msgtime.isoformat(),
                        "msgtype": m.msgtype,
                        "direction": m.direction,
                        "masked_text": m.masked_text,
                        "analysis": m.analysis,
                    }
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
                after = batch[-1].id
        return n

    n = asyncio.run(run())
    print(f"exported {n} messages", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ dead letters / outbox


def cmd_deadletter(args: argparse.Namespace, ctx: CliContext) -> int:
    from bot import service as bot_service
    from bot.stream import InboundStream
    from bot.worker import requeue_dead_letter
    from core import db as core_db
    from core import redis as core_redis
    from core.crypto import load_keyring

    settings = ctx.settings

    async def run() -> int:
        async with core_db.db_lifespan(settings, ctx.schema):
            if args.action == "list":
                for dl in await bot_service.dead_letters(status="open"):
                    print(
                        json.dumps(
                            {
                                "id": dl.id,
                                "source": dl.source,
                                "key": dl.dedup_key,
                                "deliveries": dl.deliveries,
                                "error": dl.error,
                                "at": dl.created_at.isoformat(),
                            },
                            ensure_ascii=False,
                        )
                    )
                return 0
            async with core_redis.redis_lifespan(settings) as client:
                stream = InboundStream(
                    client, load_keyring(settings), stream=settings.pipeline.stream
                )
                print(await requeue_dead_letter(stream, args.id))
            return 0

    return asyncio.run(run())


def cmd_outbox(args: argparse.Namespace, ctx: CliContext) -> int:
    from bot import service as bot_service
    from core import db as core_db

    settings = ctx.settings

    async def run() -> int:
        async with core_db.db_lifespan(settings, ctx.schema):
            for it in await bot_service.recent_outbox(state=args.state, limit=args.limit):
                print(
                    json.dumps(
                        {
                            "id": it.id,
                            "api": it.api,
                            "state": it.state.value,
                            "attempts": it.attempts,
                            "errcode": it.last_errcode,
                            "error": it.last_error,
                            "key": it.idem_key,
                            "origin": it.origin,
                        },
                        ensure_ascii=False,
                    )
                )
        return 0

    return asyncio.run(run())


# ------------------------------------------------------------------ keys


def cmd_keys_check(args: argparse.Namespace, ctx: CliContext) -> int:
    """Compare the configured field keys with those the database records (never the keys)."""
    from bot import flows as bot_flows
    from bot import service as bot_service
    from core import db as core_db
    from core.crypto import load_keyring

    settings = ctx.settings
    keyring = load_keyring(settings, create=False)  # a check never creates a key file
    configured = keyring.key_checks()

    async def run() -> dict[str, str]:
        async with core_db.db_lifespan(settings, ctx.schema):
            return await bot_service.field_key_checks()

    recorded = asyncio.run(run())
    missing, differ = bot_flows.key_mismatch(recorded=recorded, configured=configured)
    for kid in sorted(set(configured) | set(recorded)):
        if kid in missing:
            state = "missing"
        elif kid in differ:
            state = "different key"
        else:
            state = "ok" if kid in recorded else "new (recorded at the next start)"
        line = {"key_id": kid, "active": kid == keyring.active_key_id, "state": state}
        print(json.dumps(line, ensure_ascii=False))
    if missing or differ:
        print(
            "siyu: the configured field keys do not match the database; "
            "restore the key file or set SIYU_CRYPTO__KEYS to the keys the data was written with",
            file=sys.stderr,
        )
        return 1
    return 0


def register_keys(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], ctx: CliContext
) -> None:
    sp = sub.add_parser("keys", help="field keys (AES-GCM) and the database's record of them")
    ksub = sp.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser(
        "check",
        help="compare the configured keys with the key ids the database was sealed with "
        "(exit 1 on a mismatch); prints ids and states, never key material",
    ).set_defaults(func=partial(cmd_keys_check, ctx=ctx))


# ------------------------------------------------------------------ parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("archive", help="会话存档 transcripts")
    asub = sp.add_subparsers(dest="archive_command", required=True)
    ap = asub.add_parser("import", help="queue decrypted archive records from a JSONL file")
    ap.add_argument("file")
    ap.set_defaults(func=partial(cmd_archive_import, ctx=ctx))
    rp = asub.add_parser(
        "redecrypt",
        help="decrypt again the archive records dead-lettered as undecryptable",
        description=ARCHIVE_REDECRYPT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead letter ids")
    rp.add_argument("--all", action="store_true", help="every open one")
    rp.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for the puller's outcome (default 60; 0: just mark them)",
    )
    rp.set_defaults(func=partial(cmd_archive_redecrypt, ctx=ctx))

    sp = sub.add_parser("messages", help="stored messages")
    msub = sp.add_subparsers(dest="messages_command", required=True)
    mp = msub.add_parser("export", help="print stored messages as JSON lines")
    mp.add_argument(
        "--since",
        default="",
        metavar="WHEN",
        help="only messages sent at or after WHEN, an ISO date or date/time "
        "(2026-11-01, 2026-11-01T08:30, 2026-11-01T00:00+00:00); "
        "no offset means Asia/Shanghai",
    )
    mp.add_argument(
        "--until",
        default="",
        metavar="WHEN",
        help="only messages sent before WHEN (exclusive), same format as "
        "--since; no offset means Asia/Shanghai",
    )
    mp.add_argument(
        "--violations-only",
        action="store_true",
        help="only messages flagged with a compliance violation",
    )
    mp.add_argument(
        "--advisor",
        default="",
        metavar="USERID",
        help="only messages of the advisor with this WeCom userid",
    )
    mp.set_defaults(func=partial(cmd_messages_export, ctx=ctx))

    sp = sub.add_parser("deadletter", help="entries that kept failing")
    dsub = sp.add_subparsers(dest="action", required=True)
    dsub.add_parser("list").set_defaults(func=partial(cmd_deadletter, ctx=ctx))
    dp = dsub.add_parser("requeue")
    dp.add_argument("id", type=int)
    dp.set_defaults(func=partial(cmd_deadletter, ctx=ctx))

    sp = sub.add_parser("outbox", help="outbound WeCom writes and their state")
    sp.add_argument("--state", choices=[s.value for s in OutboxState])
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(func=partial(cmd_outbox, ctx=ctx))

    decrypt_cli.register(sub)
    register_keys(sub, ctx)
