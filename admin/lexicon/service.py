"""The only code that queries the lexicon's tables (``admin_lexicon_entry``, ``_version``).

Keyword-only and typed; writes take the caller's transaction (``conn``), so a flow puts
the change and its audit entry in one commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.functions import Max

from admin.lexicon.models import LexiconEntry, LexiconVersion

# The code a finding names as its rule_id (terms) or a reviewer reads in a diff.
CODE_PREFIX = {
    "term": "INST",
    "exception": "EXC",
    "basis": "BAS",
    "rewording": "RW",
    "segment": "SEG",
}

ENTRY_FIELDS = (
    "code",
    "kind",
    "text",
    "body",
    "category",
    "categories",
    "basis",
    "severity",
    "segment",
    "suggestion",
    "note",
)


def snapshot(entry: LexiconEntry) -> dict[str, Any]:
    """An entry as versions keep it (what a diff compares and a roll-back restores)."""
    out = {f: getattr(entry, f) for f in ENTRY_FIELDS}
    out["categories"] = sorted(out["categories"] or [])
    return out


async def entries(*, conn: BaseDBAsyncClient | None = None) -> list[LexiconEntry]:
    q = LexiconEntry.all()
    if conn is not None:
        q = q.using_db(conn)
    return await q.order_by("kind", "segment", "text")


async def entry_by_id(*, entry_id: int) -> LexiconEntry | None:
    return await LexiconEntry.filter(id=entry_id).first()


async def entry_by_key(
    *, kind: str, text: str, segment: str, conn: BaseDBAsyncClient | None = None
) -> LexiconEntry | None:
    q = LexiconEntry.filter(kind=kind, text=text, segment=segment)
    if conn is not None:
        q = q.using_db(conn)
    return await q.first()


async def insert_entry(
    *, conn: BaseDBAsyncClient, code: str | None = None, updated_by: str, **values: Any
) -> LexiconEntry:
    """A new entry; its code is ``INST-0007`` style unless a restored one keeps its own."""
    kind = str(values["kind"])
    row = await LexiconEntry.create(
        using_db=conn,
        code=code or f"tmp-{secrets.token_hex(6)}",
        updated_by=updated_by[:128],
        **values,
    )
    if code is None:
        row.code = f"{CODE_PREFIX[kind]}-{row.id:04d}"
        await LexiconEntry.filter(id=row.id).using_db(conn).update(code=row.code)
    return row


async def update_entry(
    *, conn: BaseDBAsyncClient, entry_id: int, updated_by: str, **values: Any
) -> int:
    return (
        await LexiconEntry.filter(id=entry_id)
        .using_db(conn)
        .update(updated_by=updated_by[:128], **values)
    )


async def delete_entry(*, conn: BaseDBAsyncClient, entry_id: int) -> int:
    return await LexiconEntry.filter(id=entry_id).using_db(conn).delete()


async def replace_entries(
    *, conn: BaseDBAsyncClient, rows: Sequence[dict[str, Any]], updated_by: str
) -> None:
    """The draft becomes ``rows`` (a version's snapshot), codes kept."""
    await LexiconEntry.all().using_db(conn).delete()
    for row in rows:
        values = {k: v for k, v in row.items() if k in ENTRY_FIELDS and k != "code"}
        await insert_entry(conn=conn, code=str(row["code"]), updated_by=updated_by, **values)


async def terms_citing(*, basis: str) -> int:
    return await LexiconEntry.filter(kind="term", basis=basis).count()


# ------------------------------------------------------------------ versions


async def latest_version(*, conn: BaseDBAsyncClient | None = None) -> LexiconVersion | None:
    q = LexiconVersion.all()
    if conn is not None:
        q = q.using_db(conn)
    return await q.order_by("-number").first()


async def version(*, number: int) -> LexiconVersion | None:
    return await LexiconVersion.filter(number=number).first()


async def previous_version(*, number: int) -> LexiconVersion | None:
    return await LexiconVersion.filter(number__lt=number).order_by("-number").first()


async def versions(*, offset: int = 0, limit: int = 50) -> tuple[list[LexiconVersion], int]:
    total = await LexiconVersion.all().count()
    rows = await LexiconVersion.all().order_by("-number").offset(offset).limit(limit)
    return rows, total


async def next_version_number(*, conn: BaseDBAsyncClient) -> int:
    found = await LexiconVersion.all().using_db(conn).annotate(top=Max("number")).values("top")
    top = found[0]["top"] if found else None
    return int(top or 0) + 1


async def insert_version(*, conn: BaseDBAsyncClient, **values: Any) -> LexiconVersion:
    return await LexiconVersion.create(using_db=conn, **values)
