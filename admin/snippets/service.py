"""The only code that queries ``admin_snippet``; writes take the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q
from tortoise.functions import Count

from admin.snippets.models import Snippet

# Columns a listing needs: never the image bytes.
LIST_FIELDS = (
    "id",
    "title",
    "topic",
    "segment",
    "kind",
    "text",
    "link_title",
    "link_url",
    "link_desc",
    "link_picurl",
    "mp_appid",
    "mp_title",
    "mp_page",
    "image_name",
    "image_type",
    "media_id",
    "media_uploaded_at",
    "status",
    "status_reason",
    "revision",
    "created_by",
    "updated_by",
    "approved_by",
    "approved_at",
    "approved_rules",
    "checked_rules",
    "checked_at",
    "use_count",
    "last_used_at",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class SnippetFilter:
    q: str = ""
    topic: str = ""
    segment: str = ""
    # Empty: every status.
    statuses: tuple[str, ...] = ()
    kind: str = ""


def _query(where: SnippetFilter) -> Any:
    q = Snippet.all()
    if where.statuses:
        q = q.filter(status__in=list(where.statuses))
    if where.topic:
        q = q.filter(topic=where.topic)
    if where.segment:
        # A snippet for every segment ("") serves each of them.
        q = q.filter(Q(segment=where.segment) | Q(segment=""))
    if where.kind:
        q = q.filter(kind=where.kind)
    for word in where.q.split()[:5]:
        q = q.filter(
            Q(title__icontains=word)
            | Q(text__icontains=word)
            | Q(topic__icontains=word)
            | Q(link_title__icontains=word)
            | Q(mp_title__icontains=word)
        )
    return q


async def snippets(*, where: SnippetFilter, offset: int = 0, limit: int = 50) -> list[Snippet]:
    rows: list[Snippet] = (
        await _query(where)
        .order_by("-use_count", "topic", "title", "id")
        .offset(offset)
        .limit(limit)
        .only(*LIST_FIELDS)
    )
    return rows


async def count(*, where: SnippetFilter) -> int:
    return int(await _query(where).count())


async def status_counts(*, where: SnippetFilter) -> dict[str, int]:
    rows = (
        await _query(SnippetFilter(q=where.q, topic=where.topic, segment=where.segment))
        .annotate(n=Count("id"))
        .group_by("status")
        .values("status", "n")
    )
    return {str(r["status"]): int(r["n"]) for r in rows}


async def topics() -> list[str]:
    rows = await Snippet.all().distinct().order_by("topic").values_list("topic", flat=True)
    return [str(t) for t in rows]


async def snippet(*, snippet_id: int, conn: BaseDBAsyncClient | None = None) -> Snippet | None:
    q = Snippet.filter(id=snippet_id)
    if conn is not None:
        q = q.using_db(conn)
    return await q.first()


async def approved_with_text() -> list[Snippet]:
    """Approved snippets for a re-check (no image bytes)."""
    rows: list[Snippet] = await Snippet.filter(status="approved").order_by("id").only(*LIST_FIELDS)
    return rows


async def insert(*, conn: BaseDBAsyncClient, **values: Any) -> Snippet:
    return await Snippet.create(using_db=conn, **values)


async def update(*, conn: BaseDBAsyncClient, snippet_id: int, **values: Any) -> int:
    return await Snippet.filter(id=snippet_id).using_db(conn).update(**values)


async def update_if(
    *,
    conn: BaseDBAsyncClient,
    snippet_id: int,
    statuses: Sequence[str],
    revision: int,
    **values: Any,
) -> bool:
    """Change the row only while it is in ``statuses`` at ``revision`` (no lost update)."""
    moved = (
        await Snippet.filter(id=snippet_id, status__in=list(statuses), revision=revision)
        .using_db(conn)
        .update(**values)
    )
    return bool(moved)


async def edit(*, conn: BaseDBAsyncClient, snippet_id: int, **values: Any) -> int:
    """An edit: new content, a new revision, back to review."""
    return (
        await Snippet.filter(id=snippet_id)
        .using_db(conn)
        .update(revision=F("revision") + 1, **values)
    )


async def mark_checked(
    *, conn: BaseDBAsyncClient, ids: Sequence[int], rules: str, at: datetime
) -> int:
    if not ids:
        return 0
    return (
        await Snippet.filter(id__in=list(ids), status="approved")
        .using_db(conn)
        .update(checked_rules=rules[:255], checked_at=at)
    )


async def count_use(*, conn: BaseDBAsyncClient, snippet_id: int, at: datetime) -> int:
    return (
        await Snippet.filter(id=snippet_id, status="approved")
        .using_db(conn)
        .update(use_count=F("use_count") + 1, last_used_at=at)
    )


async def set_media(
    *, snippet_id: int, revision: int, media_id: str, at: datetime, conn: BaseDBAsyncClient
) -> int:
    return (
        await Snippet.filter(id=snippet_id, revision=revision)
        .using_db(conn)
        .update(media_id=media_id, media_uploaded_at=at)
    )
