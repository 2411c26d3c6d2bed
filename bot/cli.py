"""The edge's ``siyu`` commands: ``archive``, ``messages``, ``deadletter``, ``outbox``, ``wecom``.

Registered by the root through the domain record (``bot.DOMAIN.cli``); each
command gets the settings the root built once, through ``CliContext``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import datetime
from functools import partial
from typing import Any

from bot.models import OutboxState
from bot.wecom import decrypt_cli
from core import loops
from core.audit import Actor
from core.domain import CliContext

# ------------------------------------------------------------------ archive


ARCHIVE_IMPORT_HELP = """\
Queue decrypted 会话存档 (message archive) records for the worker, which checks
them for compliance and stores them, exactly like records pulled from WeCom.

input: FILE holds one decrypted record per line (JSON lines, UTF-8; "-" reads
standard input), in the shape WeCom's finance SDK gives after decryption:

  {"msgid": "CAQQlu…", "action": "send", "from": "zhangwei",
   "tolist": ["wmCUST0001"], "roomid": "", "msgtime": 1735718400000,
   "msgtype": "text", "text": {"content": "您好，这是上周说的产品资料。"}}

  msgtime is in milliseconds; action is send (default), recall or switch (a
  switch record carries "user" and "time" instead of from/tolist/msgtime).
  Limits: msgid at most 128 characters, user ids and roomid at most 64, a record
  at most 262,144 characters as JSON and its text at most 200,000.  Blank lines
  are skipped.

output: one JSON object {"accepted", "duplicate", "rejected", "errors"}; each
error names its input line.  A record queued before (by an earlier run of this
import, the API or the puller) counts as a duplicate, so a file can simply be
imported again.  Exit status: 0 every record accepted or a duplicate, 1 some
lines rejected (the others are queued), 2 the file or the queue unavailable."""


def read_archive_lines(fh: Any) -> tuple[list[Any], list[int], list[dict[str, Any]]]:
    """Parse JSON lines from a binary file: (records, their line numbers, bad lines).

    Split on "\\n" only, like the ingest API: U+2028/U+2029/U+0085 are legal inside
    a JSON string.  Each bad line is reported by number; the others still count.
    """
    records: list[Any] = []
    linenos: list[int] = []
    bad: list[dict[str, Any]] = []
    for lineno, raw in enumerate(fh, 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            bad.append({"line": lineno, "error": "not UTF-8"})
            continue
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            bad.append({"line": lineno, "error": f"invalid JSON: {exc.msg}"})
            continue
        except RecursionError:
            bad.append({"line": lineno, "error": "invalid JSON: nested too deeply"})
            continue
        linenos.append(lineno)
    return records, linenos, bad


def cmd_archive_import(args: argparse.Namespace, ctx: CliContext) -> int:
    import redis

    from bot.archive import ingest_records
    from bot.stream import InboundStream
    from core import redis as core_redis
    from core.crypto import load_keyring

    try:
        if args.file == "-":
            records, linenos, bad_lines = read_archive_lines(sys.stdin.buffer)
        else:
            with open(args.file, "rb") as fh:
                records, linenos, bad_lines = read_archive_lines(fh)
    except OSError as exc:
        print(f"siyu: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    settings = ctx.settings

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

    try:
        out = loops.run(run())
    except (redis.RedisError, OSError) as exc:
        print(
            f"siyu: the queue (Redis) is unavailable: {type(exc).__name__}; import again "
            "once it is back (records already queued are skipped as duplicates)",
            file=sys.stderr,
        )
        return 2
    # Validation errors come indexed among the parsed records: name their lines.
    rejected = []
    for e in out["errors"]:
        index = e.pop("index")
        rejected.append({"line": linenos[index], **e})
    out["errors"] = sorted(bad_lines + rejected, key=lambda e: int(e["line"]))
    out["rejected"] += len(bad_lines)
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

    return loops.run(run())


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
                        # Which API key handed it in ("api_key:<key id>"), else null.
                        "ingested_by": m.ingested_by,
                    }
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
                after = batch[-1].id
        return n

    n = loops.run(run())
    print(f"exported {n} messages", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ dead letters / outbox


def like_pattern(pattern: str) -> re.Pattern[str]:
    """SQL LIKE, matched the same on every database: % any text, _ one character,
    case-insensitive; the whole error must match (so "%Timeout%" for a part of it)."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


async def _select_dead_letters(args: argparse.Namespace) -> list[Any]:
    """Open dead letters matching --since / --error (every open one for --all)."""
    from bot import service as bot_service

    since = getattr(args, "since_at", None)
    rows = await bot_service.dead_letters(status="open", since=since)
    if getattr(args, "error", None):
        match = like_pattern(args.error)
        rows = [dl for dl in rows if match.fullmatch(dl.error)]
    return rows


def _check_deadletter_args(args: argparse.Namespace) -> str | None:
    """Parse --since; for requeue, one id or a selection (--all/--since/--error), not both."""
    args.since_at = None
    if getattr(args, "since", ""):
        try:
            args.since_at = parse_export_time("--since", args.since)
        except ValueError as exc:
            return str(exc)
    if args.action != "requeue":
        return None
    selecting = bool(args.all or args.since or args.error)
    if args.id is None and not selecting:
        return "requeue: give a dead letter ID, or --all, --since or --error"
    if args.id is not None and selecting:
        return "requeue: give either an ID or --all/--since/--error, not both"
    if args.all and (args.since or args.error):
        return "requeue: --all takes every open dead letter; drop --since/--error"
    return None


def cmd_deadletter(args: argparse.Namespace, ctx: CliContext) -> int:
    import redis
    from tortoise.exceptions import DoesNotExist

    from bot import service as bot_service
    from bot.stream import InboundStream
    from bot.worker import (
        REQUEUEABLE_SOURCES,
        DeadLetterError,
        check_requeueable,
        requeue_one,
    )
    from core import db as core_db
    from core import redis as core_redis
    from core.crypto import load_keyring

    problem = _check_deadletter_args(args)
    if problem:
        print(f"siyu: deadletter {problem}", file=sys.stderr)
        return 2
    settings = ctx.settings

    async def run() -> int:
        # The database first: an unknown id or an empty selection is answered before
        # Redis is opened (the embedded one takes seconds to start).
        async with core_db.db_lifespan(settings, ctx.schema):
            if args.action == "list":
                for dl in await _select_dead_letters(args):
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
            if args.id is not None:
                try:
                    dl = await bot_service.get_dead_letter(dead_letter_id=args.id)
                    check_requeueable(dl)
                except DoesNotExist:
                    print(
                        f"siyu: no dead letter with id {args.id} (see `siyu deadletter list`)",
                        file=sys.stderr,
                    )
                    return 2
                except DeadLetterError as exc:
                    print(f"siyu: {exc}", file=sys.stderr)
                    return 2
                if dl.status == "requeued":
                    print(
                        f"siyu: dead letter {dl.id} was requeued before; nothing queued again",
                        file=sys.stderr,
                    )
                    return 0
                if dl.status != "open":
                    print(
                        f"siyu: dead letter {dl.id} is {dl.status}; not requeued", file=sys.stderr
                    )
                    return 2
                selected = [dl]
            else:
                matched = await _select_dead_letters(args)
                selected = [dl for dl in matched if dl.source in REQUEUEABLE_SOURCES]
                for dl in matched:
                    if dl.source not in REQUEUEABLE_SOURCES:
                        print(
                            f"siyu: skipped dead letter {dl.id}: its {dl.source!r} record "
                            "cannot be requeued",
                            file=sys.stderr,
                        )
                if not selected:
                    print("siyu: no open dead letter matches; nothing queued", file=sys.stderr)
                    return 0
            queued = 0
            try:
                async with core_redis.redis_lifespan(settings) as client:
                    stream = InboundStream(
                        client,
                        load_keyring(settings),
                        stream=settings.pipeline.stream,
                        group=settings.pipeline.group,
                    )
                    for dl in selected:
                        done = await requeue_one(stream, dl)
                        queued += done.stream_id is not None
                        if args.id is not None:
                            print(done.stream_id or "already queued by an earlier requeue")
                        else:
                            print(json.dumps({"id": dl.id, "stream_id": done.stream_id}))
            except (redis.RedisError, OSError) as exc:
                print(
                    f"siyu: the queue (Redis) is unavailable ({type(exc).__name__}) after "
                    f"{queued} of {len(selected)}; run the command again once it is back "
                    "(nothing is queued twice)",
                    file=sys.stderr,
                )
                return 2
            if args.id is None:
                print(f"requeued {queued} dead letters", file=sys.stderr)
            return 0

    return loops.run(run())


def _positive_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= OUTBOX_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"must be 1..{OUTBOX_LIMIT_MAX}")
    return n


OUTBOX_LIMIT_MAX = 10_000


def _outbox_actor() -> Actor:
    import getpass

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        who = "unknown"
    return Actor("system", "cli", f"cli:{who}")


def cmd_outbox(args: argparse.Namespace, ctx: CliContext) -> int:
    action = getattr(args, "outbox_command", None) or "list"
    if action == "list":
        return _outbox_list(args, ctx)
    return _outbox_change(args, ctx, action)


def _outbox_list(args: argparse.Namespace, ctx: CliContext) -> int:
    from bot import service as bot_service
    from bot.outbox import recipient_of
    from core import db as core_db

    async def run() -> int:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            rows = await bot_service.recent_outbox(state=args.state, limit=args.limit)
            for it in rows:
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
                            "recipient": recipient_of(it.api, it.payload),
                            "next_attempt_at": it.next_attempt_at.isoformat(),
                            "updated_at": it.updated_at.isoformat(),
                        },
                        ensure_ascii=False,
                    )
                )
            if len(rows) == args.limit:
                total = await bot_service.count_outbox(state=args.state)
                if total > len(rows):
                    which = f"{args.state} rows" if args.state else "rows"
                    print(
                        f"siyu: showing the newest {len(rows)} of {total} {which}; "
                        "raise --limit to see more",
                        file=sys.stderr,
                    )
        return 0

    return loops.run(run())


def _outbox_change(args: argparse.Namespace, ctx: CliContext, action: str) -> int:
    from bot import outbox
    from core import db as core_db

    if action == "discard":
        try:
            outbox.check_discard_reason(args.reason)
        except ValueError as exc:
            print(f"siyu: outbox discard: {exc}", file=sys.stderr)
            return 2

    async def run() -> int:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            unknown = await outbox.check_outbox_ids(ids=args.ids)
            if unknown:
                # Nothing changes when one id is wrong: the operator retypes the list.
                names = ", ".join(str(i) for i in unknown)
                print(
                    f"siyu: outbox {action}: no outbox row with id {names}; nothing changed "
                    "(see `siyu outbox --state failed` or `--state unknown` for ids)",
                    file=sys.stderr,
                )
                return 2
            if action == "retry":
                results = await outbox.do_retry_outbox(ids=args.ids, actor=_outbox_actor())
            else:
                results = await outbox.do_discard_outbox(
                    ids=args.ids, reason=args.reason, actor=_outbox_actor()
                )
        for r in results:
            line = {"id": r.id, "state": r.state, "result": r.result}
            print(json.dumps(line, ensure_ascii=False))
        return 0 if all(r.ok for r in results) else 1

    return loops.run(run())


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

    recorded = loops.run(run())
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


def cmd_keys_seal_existing(args: argparse.Namespace, ctx: CliContext) -> int:
    """Seal personal data that rows stored before sealing existed keep in clear."""
    from bot import customers as bot_customers
    from bot import flows as bot_flows
    from core import db as core_db
    from core.crypto import load_keyring

    settings = ctx.settings
    keyring = load_keyring(settings, create=False)

    async def run() -> tuple[bot_flows.SealedExisting, int]:
        async with core_db.db_lifespan(settings, ctx.schema):
            # The keys that seal must be the ones the database was sealed with.
            await bot_flows.check_field_keys(keyring=keyring, settings=settings)
            sealed = await bot_flows.do_seal_existing_rows(keyring=keyring)
            # Then the phone numbers in those (now sealed) remarks, under the active key:
            # rows stored before the customer search, or indexed under a retired key.
            return sealed, await bot_customers.index_existing_phones(keyring=keyring)

    done, indexed = loops.run(run())
    print(
        json.dumps(
            {"events": done.events, "follow_relations": done.follows, "phones_indexed": indexed}
        )
    )
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
    ksub.add_parser(
        "seal-existing",
        help="seal what rows stored before this release keep in clear: event fields "
        "outside the allow-list, follow-relation remarks and descriptions (masked in "
        "clear); then index the phone numbers advisors noted (a keyed blind index, for the "
        "console's customer search) where not indexed under the active key; safe to run "
        "twice or beside running workers. Prints the counts",
    ).set_defaults(func=partial(cmd_keys_seal_existing, ctx=ctx))


# ------------------------------------------------------------------ parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser(
        "archive",
        help="会话存档 (message archive) transcripts",
        description="Advisor–customer chats reach siyu only through WeCom's message "
        "archive; these commands feed decrypted records to the worker.",
    )
    asub = sp.add_subparsers(dest="archive_command", required=True, metavar="{import,redecrypt}")
    ap = asub.add_parser(
        "import",
        help="queue decrypted archive records from a JSON-lines file",
        description=ARCHIVE_IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "file", metavar="FILE", help='JSON lines, one decrypted record each ("-": stdin)'
    )
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

    sp = sub.add_parser(
        "deadletter",
        help="entries that kept failing in the worker: list them, queue them again",
        description="Entries the worker could not store, kept (sealed) for an operator. "
        "Only failures of the entry itself are counted towards a dead letter; an "
        "unreachable database or Redis is waited out.  Fix the cause, then requeue.",
    )
    dsub = sp.add_subparsers(dest="action", required=True, metavar="{list,requeue}")
    since_help = (
        "only dead letters created at or after WHEN, an ISO date or date/time "
        "(2026-11-01, 2026-11-01T08:30); no offset means Asia/Shanghai"
    )
    error_help = (
        "only dead letters whose error matches PATTERN, an SQL LIKE pattern "
        "(%% any text, _ one character; case-insensitive), e.g. '%%ValidationError%%'"
    )
    lp = dsub.add_parser(
        "list",
        help="print open dead letters as JSON lines (id, source, key, deliveries, error, at)",
        description="Print the open dead letters as JSON lines, oldest first; with "
        "--since/--error, those a `requeue` with the same options would take.",
    )
    lp.add_argument("--since", default="", metavar="WHEN", help=since_help)
    lp.add_argument("--error", default="", metavar="PATTERN", help=error_help)
    lp.set_defaults(func=partial(cmd_deadletter, ctx=ctx))
    dp = dsub.add_parser(
        "requeue",
        help="queue dead letters again (one ID, or --all/--since/--error)",
        description="Put open dead letters back on the stream, once each: a dead letter "
        "requeued before is not queued again.  Give one ID, or select open ones with "
        "--all, or --since and/or --error.  Prints the new stream entry id (one ID) "
        "or a JSON line per dead letter.",
    )
    dp.add_argument(
        "id", type=int, nargs="?", default=None, help="the dead letter's id, from `list`"
    )
    dp.add_argument("--all", action="store_true", help="every open dead letter")
    dp.add_argument("--since", default="", metavar="WHEN", help=since_help)
    dp.add_argument("--error", default="", metavar="PATTERN", help=error_help)
    dp.set_defaults(func=partial(cmd_deadletter, ctx=ctx))

    from bot.outbox import REASON_MAX

    sp = sub.add_parser(
        "outbox",
        help="outbound WeCom writes: list them by state, retry or discard them",
        description="Every write to WeCom (app messages, mass sends, welcome messages, "
        "tags) goes through the outbox and is sent once by the scheduler.  A write "
        "that failed, or whose outcome is unknown (the request may have reached WeCom "
        "but no answer came back, for a write that must not be sent twice), waits for "
        "an operator: look in WeCom, then `retry` or `discard` it.  Without a "
        "subcommand: the same as `list`.",
    )
    state_help = "only rows in this state; failed and unknown ones wait for an operator"
    limit_help = f"print at most N rows, newest first (default 50, at most {OUTBOX_LIMIT_MAX:,}); "
    limit_help += "a note on stderr says when more rows match"
    sp.add_argument("--state", choices=[s.value for s in OutboxState], help=state_help)
    sp.add_argument("--limit", type=_positive_limit, default=50, metavar="N", help=limit_help)
    sp.set_defaults(func=partial(cmd_outbox, ctx=ctx))
    osub = sp.add_subparsers(dest="outbox_command", required=False, metavar="{list,retry,discard}")
    lp = osub.add_parser(
        "list",
        help="print rows as JSON lines (id, api, state, attempts, error, origin, recipient …)",
        description="Print outbox rows as JSON lines, newest first.  recipient names "
        "members by userid and customers by a masked id; origin says which domain "
        "asked and for what.",
    )
    lp.add_argument(
        "--state",
        choices=[s.value for s in OutboxState],
        default=argparse.SUPPRESS,
        help=state_help,
    )
    lp.add_argument(
        "--limit",
        type=_positive_limit,
        default=argparse.SUPPRESS,
        metavar="N",
        help=limit_help,
    )
    lp.set_defaults(func=partial(cmd_outbox, ctx=ctx))
    rp = osub.add_parser(
        "retry",
        help="send failed or unknown-outcome rows again (each at most once)",
        description="Queue rows in state failed or unknown again, now, with a fresh "
        "attempt budget.  For an unknown row, first check in WeCom that the write did "
        "not happen (e.g. no mass-send task for the advisor).  A row already queued is "
        "left as it is, so repeating the command sends nothing twice; a sent, cancelled "
        "or in-flight row is refused.  Unknown ids: exit 2, nothing changes.",
    )
    rp.add_argument("ids", type=int, nargs="+", metavar="ID", help="outbox row ids, from list")
    rp.set_defaults(func=partial(cmd_outbox, ctx=ctx))
    xp = osub.add_parser(
        "discard",
        help="cancel queued, failed or unknown-outcome rows, keeping them with a reason",
        description="Never send these rows: they stay, in state cancelled, with who "
        "discarded them and why (personal numbers in the reason are masked); the "
        "domain that asked learns the outcome.  A sent or in-flight row is refused.  "
        "Unknown ids: exit 2, nothing changes.",
    )
    xp.add_argument("ids", type=int, nargs="+", metavar="ID", help="outbox row ids, from list")
    xp.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        help=f"why, for the record (at most {REASON_MAX} characters)",
    )
    xp.set_defaults(func=partial(cmd_outbox, ctx=ctx))

    decrypt_cli.register(sub)
    register_keys(sub, ctx)
