"""The audit log: append-only, hash-chained, written in the transaction of the change.

Every console or API action that changes something or reads sensitive data, every
sign-in (success or failure) and every API key use is one entry: when, who (an
operator, an API key or the system), what action on which target, the result and the
source address.  Each entry's hash covers its content and the previous entry's hash,
so editing, deleting or reordering any entry breaks the chain at that point, and
``siyu audit verify`` names the first such entry.

Rewriting the whole table consistently (recomputing every hash) would still verify;
so the chain head is also written out periodically — a log line and a line in
``<data dir>/audit/heads.jsonl`` — and verification checks each recorded head
against the table.  On PostgreSQL the application's role is granted INSERT and
SELECT only on the log (docs/audit.md), so the application itself cannot rewrite it.

Why one head row: entries must form one line even when several processes append at
once.  Appenders update the head row *first*; its row lock (PostgreSQL) or the write
lock of ``BEGIN IMMEDIATE`` (SQLite, core.sqlite_engine) orders them, and each reads
the head only after it holds that lock.

Only this module queries ``core_audit_log`` / ``core_audit_head``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from core.models import AuditEntry, AuditHead

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HEADS_FILE = Path("audit") / "heads.jsonl"

ActorKind = Literal["operator", "api_key", "system"]
DetailValue = str | int | bool | None | list[str]

# Column widths (core/models.py): values are cut to fit *before* hashing, so what is
# stored is exactly what was hashed and a long name never fails the change it records.
_WIDTH = {"actor_id": 64, "actor_name": 128, "action": 64, "target": 128, "result": 32}
_SOURCE_WIDTH = 64


@dataclass(frozen=True)
class Actor:
    """Who acted: an operator, an API key or the system (a job, the CLI)."""

    kind: ActorKind
    id: str
    name: str = ""

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls("system", name, name)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    actor_kind: str
    actor_id: str
    actor_name: str
    action: str
    target: str
    result: str
    source: str
    detail: str
    prev_hash: str
    hash: str

    @property
    def detail_dict(self) -> dict[str, object]:
        try:
            value = json.loads(self.detail)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


def _at_text(at: datetime) -> str:
    # Microseconds in UTC: what both SQLite (ISO text) and PostgreSQL (timestamptz)
    # give back, so a stored entry hashes the same after the round trip.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_detail(detail: Mapping[str, DetailValue] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def entry_hash(
    *,
    prev_hash: str,
    at: datetime,
    actor_kind: str,
    actor_id: str,
    actor_name: str,
    action: str,
    target: str,
    result: str,
    source: str,
    detail: str,
) -> str:
    """sha256 over the previous hash and the entry's content (not its position).

    The position (``seq``) is left out on purpose: an entry moved elsewhere keeps a
    valid hash of its own but no longer links to its new predecessor, which is how
    ``verify`` tells a reordering from an edit.
    """
    content = json.dumps(
        {
            "at": _at_text(at),
            "actor_kind": actor_kind,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "action": action,
            "target": target,
            "result": result,
            "source": source,
            "detail": detail,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        action=row.action,
        target=row.target,
        result=row.result,
        source=row.source,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _recompute(row: AuditRecord | AuditEntry) -> str:
    return entry_hash(
        prev_hash=row.prev_hash,
        at=row.at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        action=row.action,
        target=row.target,
        result=row.result,
        source=row.source,
        detail=row.detail,
    )


class AuditHeadMissing(RuntimeError):
    """The head row is gone: the audit table was tampered with or never migrated."""


async def append(
    *,
    conn: BaseDBAsyncClient,
    actor: Actor,
    action: str,
    target: str = "",
    result: str = "ok",
    source: str = "",
    detail: Mapping[str, DetailValue] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one entry inside the caller's transaction (``conn``).

    Call it in the same transaction as the change it records: if the change rolls
    back, so does its entry, and no change commits without one.  ``detail`` holds ids
    and reasons only — never a message body or a personal number.
    """
    at = at or datetime.now(UTC)
    values = {
        "actor_id": actor.id[: _WIDTH["actor_id"]],
        "actor_name": actor.name[: _WIDTH["actor_name"]],
        "action": action[: _WIDTH["action"]],
        "target": target[: _WIDTH["target"]],
        "result": result[: _WIDTH["result"]],
    }
    source = source[:_SOURCE_WIDTH]
    detail_text = canonical_detail(detail)
    # Take the head's lock first (see the module docstring), then read it.
    moved = await AuditHead.filter(id=1).using_db(conn).update(seq=F("seq") + 1)
    if not moved:
        await _start_chain(conn)
        moved = await AuditHead.filter(id=1).using_db(conn).update(seq=F("seq") + 1)
    head = await AuditHead.filter(id=1).using_db(conn).first()
    assert head is not None
    digest = entry_hash(
        prev_hash=head.hash,
        at=at,
        actor_kind=actor.kind,
        source=source,
        detail=detail_text,
        **values,
    )
    row = await AuditEntry.create(
        using_db=conn,
        seq=head.seq,
        at=at,
        actor_kind=actor.kind,
        source=source,
        detail=detail_text,
        prev_hash=head.hash,
        hash=digest,
        **values,
    )
    await AuditHead.filter(id=1).using_db(conn).update(hash=digest)
    return _record(row)


async def _start_chain(conn: BaseDBAsyncClient) -> None:
    """Create the head row of an empty log (the migration seeds it; a truncate drops it).

    A log that has entries but no head was tampered with: refuse to append to it.
    """
    if await AuditEntry.all().using_db(conn).exists():
        # A concurrent first append may have created the head and committed its entry
        # since this transaction found no head to update: that head is the chain's.
        if await AuditHead.filter(id=1).using_db(conn).exists():
            return
        raise AuditHeadMissing("core_audit_head has no row but the log has entries")
    try:
        # A savepoint: on PostgreSQL a concurrent first append's insert would
        # otherwise abort the caller's whole transaction with a unique violation.
        async with in_transaction(conn.connection_name) as savepoint:
            await AuditHead.create(using_db=savepoint, id=1, seq=0, hash=GENESIS)
    except IntegrityError:
        pass  # another appender created it first; its row lock orders us next


async def append_alone(
    *,
    actor: Actor,
    action: str,
    target: str = "",
    result: str = "ok",
    source: str = "",
    detail: Mapping[str, DetailValue] | None = None,
) -> AuditRecord:
    """An entry with no other change to share a transaction with (a refused sign-in)."""
    async with in_transaction() as conn:
        return await append(
            conn=conn,
            actor=actor,
            action=action,
            target=target,
            result=result,
            source=source,
            detail=detail,
        )


async def chain_head() -> ChainHead:
    head = await AuditHead.filter(id=1).first()
    if head is None:
        return ChainHead(seq=0, hash=GENESIS)  # nothing appended yet
    return ChainHead(seq=head.seq, hash=head.hash)


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class AuditFilter:
    actor_kind: str = ""
    actor: str = ""  # matches the actor's id or name exactly
    action: str = ""  # exact, or a prefix ending in "." ("auth.")
    target: str = ""
    result: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive


async def entries(
    *, where: AuditFilter, before_seq: int | None = None, limit: int = 50
) -> list[AuditRecord]:
    """Newest first, keyset-paged by ``seq`` (stable while entries are appended)."""
    from tortoise.expressions import Q

    if where.target and where == AuditFilter(target=where.target) and before_seq is None:
        return await _target_entries(where.target, limit)
    q = AuditEntry.all()
    if where.actor_kind:
        q = q.filter(actor_kind=where.actor_kind)
    if where.actor:
        q = q.filter(Q(actor_id=where.actor) | Q(actor_name=where.actor))
    if where.action:
        if where.action.endswith("."):
            q = q.filter(action__startswith=where.action)
        else:
            q = q.filter(action=where.action)
    if where.target:
        q = q.filter(target=where.target)
    if where.result:
        q = q.filter(result=where.result)
    if where.since is not None:
        q = q.filter(at__gte=where.since)
    if where.until is not None:
        q = q.filter(at__lt=where.until)
    if before_seq is not None:
        q = q.filter(seq__lt=before_seq)
    rows = await q.order_by("-seq").limit(limit)
    return [_record(r) for r in rows]


async def _target_entries(target: str, limit: int) -> list[AuditRecord]:
    """One thing's entries, newest first — what a case or customer page shows beside
    it, on every view: written out (index ``core_audit_log(target, seq)``), the ORM's
    statement building cost more than the read."""
    conn = AuditEntry._meta.db
    marks = ("$1", "$2") if conn.capabilities.dialect == "postgres" else ("?", "?")
    columns = ", ".join(f'"{c}"' for c in AuditEntry._meta.fields_db_projection.values())
    rows = await conn.execute_query_dict(
        f'SELECT {columns} FROM "core_audit_log" WHERE "target" = {marks[0]} '  # noqa: S608 - model columns and placeholders only
        f'ORDER BY "seq" DESC LIMIT {marks[1]}',
        [target, limit],
    )
    for r in rows:  # SQLite's ISO text read as the ORM reads it (naive stays naive), faster
        if isinstance(r["at"], str):
            r["at"] = datetime.fromisoformat(r["at"])
    return [_record(AuditEntry._init_from_db(**r)) for r in rows]


async def distinct_actions() -> list[str]:
    rows = await AuditEntry.all().distinct().order_by("action").values_list("action", flat=True)
    return [str(r) for r in rows]


# ------------------------------------------------------------------ verifying

ProblemKind = Literal["altered", "missing", "reordered", "head", "rewritten"]


@dataclass(frozen=True)
class ChainProblem:
    kind: ProblemKind
    seq: int
    message: str


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    last_seq: int
    last_hash: str
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


async def verify(*, recorded_heads: Sequence[ChainHead] = (), batch: int = 1000) -> VerifyReport:
    """Walk the chain in order and report the first entry that does not hold.

    - ``altered``: the entry's content does not match its hash (edited in place);
    - ``missing``: a position is absent (deleted), or the head says more entries exist;
    - ``reordered``: the entry is intact but does not follow its predecessor (moved,
      or replaced by an entry from elsewhere in the chain);
    - ``head``: the head row disagrees with the last entry;
    - ``rewritten``: an exported head (``recorded_heads``) is not in the table as
      recorded — the table was rebuilt after that head was written out.
    """
    expected_at = {h.seq: h.hash for h in recorded_heads}
    count = 0
    last_seq = 0
    last_hash = GENESIS

    def report(problem: ChainProblem | None) -> VerifyReport:
        return VerifyReport(entries=count, last_seq=last_seq, last_hash=last_hash, problem=problem)

    while True:
        rows = await AuditEntry.filter(seq__gt=last_seq).order_by("seq").limit(batch)
        if not rows:
            break
        for row in rows:
            want_seq = last_seq + 1
            if row.seq != want_seq:
                return report(
                    ChainProblem(
                        "missing",
                        want_seq,
                        f"entry {want_seq} is missing (the next entry present is {row.seq})",
                    )
                )
            if _recompute(row) != row.hash:
                return report(
                    ChainProblem(
                        "altered", row.seq, f"entry {row.seq} was altered after it was written"
                    )
                )
            if row.prev_hash != last_hash:
                return report(
                    ChainProblem(
                        "reordered",
                        row.seq,
                        f"entry {row.seq} does not follow entry {last_seq} "
                        "(entries were moved, replaced or removed)",
                    )
                )
            recorded = expected_at.pop(row.seq, None)
            if recorded is not None and recorded != row.hash:
                return report(
                    ChainProblem(
                        "rewritten",
                        row.seq,
                        f"entry {row.seq} differs from the head exported earlier "
                        "(the log was rebuilt)",
                    )
                )
            count += 1
            last_seq, last_hash = row.seq, row.hash
    head = await AuditHead.filter(id=1).first()
    if head is None:
        if count == 0 and not expected_at:
            return report(None)  # an empty log whose head is created on first append
        return report(ChainProblem("head", last_seq, "the chain head row is missing"))
    if head.seq > last_seq:
        return report(
            ChainProblem(
                "missing",
                last_seq + 1,
                f"entries {last_seq + 1}..{head.seq} are missing (the head says {head.seq})",
            )
        )
    if head.seq != last_seq or head.hash != last_hash:
        return report(
            ChainProblem("head", last_seq, "the chain head does not match the last entry")
        )
    if expected_at:
        seq = min(expected_at)
        return report(
            ChainProblem(
                "missing",
                seq,
                f"entry {seq} was exported as a chain head but is no longer in the log",
            )
        )
    return report(None)


# ------------------------------------------------------------------ the exported head


def heads_path(data_dir: Path) -> Path:
    return data_dir / HEADS_FILE


def read_heads(data_dir: Path) -> list[ChainHead]:
    path = heads_path(data_dir)
    if not path.exists():
        return []
    heads = []
    for line in path.read_text("utf-8").splitlines():
        try:
            item = json.loads(line)
            heads.append(ChainHead(seq=int(item["seq"]), hash=str(item["hash"])))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash: the earlier ones still count
    return heads


def last_written_head(data_dir: Path) -> ChainHead | None:
    """The newest head in ``heads.jsonl`` (read from the file's tail, not all of it)."""
    path = heads_path(data_dir)
    if not path.exists():
        return None
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 4096))
        tail = fh.read().decode("utf-8", "replace")
    for line in reversed(tail.splitlines()):
        try:
            item = json.loads(line)
            return ChainHead(seq=int(item["seq"]), hash=str(item["hash"]))
        except (ValueError, KeyError, TypeError):
            continue
    return None


def write_head(data_dir: Path, head: ChainHead, *, at: datetime | None = None) -> None:
    """Append the head to ``heads.jsonl`` and log it.

    The log line is the copy that leaves the machine (log shipping); the file is the
    copy ``siyu audit verify`` reads.  Appended and fsynced, so a line once written
    stays, and a crash leaves at worst a torn last line.
    """
    path = heads_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"seq": head.seq, "hash": head.hash, "at": (at or datetime.now(UTC)).isoformat()}
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("audit chain head", extra={"audit_seq": head.seq, "audit_hash": head.hash})


class HeadExporter:
    """The periodic job's tick: write the head out when it moved since last time.

    Several processes may run it (jobs run wherever their role runs); two writing the
    same head is harmless, a line per new head is all that matters.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.last: ChainHead | None = None
        self._loaded = False

    async def tick(self) -> int:
        import asyncio

        if not self._loaded:
            self.last = await asyncio.to_thread(last_written_head, self.data_dir)
            self._loaded = True
        head = await chain_head()
        if head.seq == 0 or head == self.last:
            return 0
        await asyncio.to_thread(write_head, self.data_dir, head)
        self.last = head
        return 0  # one line per interval at most, however busy the log is
