"""The only code that queries the tagging domain's tables; keyword-only, typed.

Customers and their advisor relations are ``bot``'s: read them through
``bot.service``, never write them here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Subquery

from bot import service as bot_service
from bot.models import Customer, FollowRelation, RelationStatus
from tagging.models import (
    AttributeField,
    AttributeImport,
    Audience,
    CustomerTag,
    CustomerTagHistory,
    ImportReject,
    Origin,
    SealedAttribute,
    SyncRequest,
    SyncRun,
    Tag,
    TagGroup,
    TagRule,
    TagSource,
)


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- library


async def create_group(
    *,
    conn: BaseDBAsyncClient,
    name: str,
    order: int = 0,
    colour: str = "",
    description: str = "",
    owner: str = "",
    origin: Origin = Origin.SIYU,
    sync_to_wecom: bool = False,
    wecom_group_id: str | None = None,
    strategy_id: int | None = None,
) -> TagGroup:
    return await TagGroup.create(
        using_db=conn,
        name=name,
        order=order,
        colour=colour,
        description=description,
        owner=owner,
        origin=origin,
        sync_to_wecom=sync_to_wecom or origin == Origin.WECOM,
        wecom_group_id=wecom_group_id,
        strategy_id=strategy_id,
        synced_at=now() if wecom_group_id else None,
    )


async def get_group(*, conn: BaseDBAsyncClient, group_id: int) -> TagGroup | None:
    return await TagGroup.get_or_none(id=group_id, deleted_at=None, using_db=conn)


async def group_named(*, conn: BaseDBAsyncClient, name: str) -> TagGroup | None:
    return await TagGroup.get_or_none(name=name, deleted_at=None, using_db=conn)


async def group_by_wecom_id(*, conn: BaseDBAsyncClient, wecom_group_id: str) -> TagGroup | None:
    return await TagGroup.get_or_none(wecom_group_id=wecom_group_id, using_db=conn)


async def live_groups(*, conn: BaseDBAsyncClient | None = None) -> list[TagGroup]:
    q = TagGroup.filter(deleted_at=None).order_by("order", "id")
    return await (q.using_db(conn) if conn else q)


async def update_group(*, conn: BaseDBAsyncClient, group: TagGroup, **changes: Any) -> TagGroup:
    for name, value in changes.items():
        setattr(group, name, value)
    await group.save(using_db=conn)
    return group


async def create_tag(
    *,
    conn: BaseDBAsyncClient,
    group: TagGroup,
    name: str,
    order: int = 0,
    colour: str = "",
    description: str = "",
    owner: str = "",
    origin: Origin = Origin.SIYU,
    wecom_tag_id: str | None = None,
    push_pending: bool = False,
) -> Tag:
    return await Tag.create(
        using_db=conn,
        group=group,
        name=name,
        order=order,
        colour=colour,
        description=description,
        owner=owner,
        origin=origin,
        wecom_tag_id=wecom_tag_id,
        push_pending=push_pending,
        synced_at=now() if wecom_tag_id else None,
    )


async def get_tag(*, conn: BaseDBAsyncClient | None = None, tag_id: int) -> Tag | None:
    q = Tag.filter(id=tag_id, deleted_at=None).prefetch_related("group")
    return await (q.using_db(conn) if conn else q).first()


async def tag_named(*, conn: BaseDBAsyncClient, group_id: int, name: str) -> Tag | None:
    return await Tag.get_or_none(group_id=group_id, name=name, deleted_at=None, using_db=conn)


async def tag_by_wecom_id(*, conn: BaseDBAsyncClient, wecom_tag_id: str) -> Tag | None:
    q = Tag.filter(wecom_tag_id=wecom_tag_id).prefetch_related("group").using_db(conn)
    return await q.first()


async def tags_by_wecom_ids(
    *, conn: BaseDBAsyncClient, wecom_tag_ids: Sequence[str]
) -> dict[str, Tag]:
    if not wecom_tag_ids:
        return {}
    rows = await Tag.filter(wecom_tag_id__in=list(wecom_tag_ids), deleted_at=None).using_db(conn)
    return {str(t.wecom_tag_id): t for t in rows}


async def live_tags(
    *, conn: BaseDBAsyncClient | None = None, group_id: int | None = None
) -> list[Tag]:
    q = Tag.filter(deleted_at=None).prefetch_related("group").order_by("group_id", "order", "id")
    if group_id is not None:
        q = q.filter(group_id=group_id)
    return await (q.using_db(conn) if conn else q)


async def tags_named(*, names: Sequence[str]) -> dict[str, list[int]]:
    """Live tag ids by name (a name may exist in several groups)."""
    out: dict[str, list[int]] = {}
    if not names:
        return out
    rows = await Tag.filter(name__in=list(names), deleted_at=None).values_list("name", "id")
    for name, tag_id in rows:
        out.setdefault(str(name), []).append(int(tag_id))
    return out


async def update_tag(*, conn: BaseDBAsyncClient, tag: Tag, **changes: Any) -> Tag:
    for name, value in changes.items():
        setattr(tag, name, value)
    await tag.save(using_db=conn)
    return tag


# ---------------------------------------------------------------- customer tags


async def customer_ids_by(*, key: str, values: Sequence[str]) -> dict[str, int]:
    """Customer row ids by ``external_userid`` or ``unionid`` (read only; ``bot`` owns them)."""
    if not values or key not in ("external_userid", "unionid"):
        return {}
    out: dict[str, int] = {}
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), 1000):  # bounded IN lists
        chunk = unique[start : start + 1000]
        rows = await Customer.filter(**{f"{key}__in": chunk}).values_list(key, "id")
        for value, cid in rows:
            out.setdefault(str(value), int(cid))
    return out


async def customer_id_of(
    *, conn: BaseDBAsyncClient | None = None, external_userid: str
) -> int | None:
    """The customer's row id (``bot`` owns the table; read only here)."""
    q = Customer.filter(external_userid=external_userid)
    found = await (q.using_db(conn) if conn else q).values_list("id", flat=True)
    return int(found[0]) if found else None  # type: ignore[call-overload]


async def customer_tag(
    *, conn: BaseDBAsyncClient, customer_id: int, tag_id: int
) -> CustomerTag | None:
    return await CustomerTag.get_or_none(customer_id=customer_id, tag_id=tag_id, using_db=conn)


async def apply_customer_tag(
    *,
    conn: BaseDBAsyncClient,
    customer_id: int,
    tag_id: int,
    source: TagSource,
    applied_by: str,
    reason: Mapping[str, Any] | None = None,
    advisor_userid: str | None = None,
    expires_at: datetime | None = None,
    at: datetime | None = None,
) -> CustomerTag | None:
    """Tag the customer and record it; None when the customer already has the tag.

    Idempotent under the (customer, tag) unique key: two workers applying the same
    rule to the same customer leave one row and one history entry.
    """
    at = at or now()
    if await customer_tag(conn=conn, customer_id=customer_id, tag_id=tag_id):
        return None
    try:
        row = await CustomerTag.create(
            using_db=conn,
            customer_id=customer_id,
            tag_id=tag_id,
            source=source,
            applied_by=applied_by[:96],
            applied_at=at,
            reason=dict(reason or {}),
            advisor_userid=advisor_userid,
            expires_at=expires_at,
        )
    except IntegrityError:
        return None
    await _history(
        conn=conn,
        customer_id=customer_id,
        tag_id=tag_id,
        action="add",
        source=source,
        actor=applied_by,
        reason=reason,
        at=at,
    )
    return row


async def remove_customer_tag(
    *,
    conn: BaseDBAsyncClient,
    customer_id: int,
    tag_id: int,
    source: TagSource,
    actor: str,
    reason: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> CustomerTag | None:
    """Remove the tag and record who removed it; None when the customer lacked it."""
    row = await customer_tag(conn=conn, customer_id=customer_id, tag_id=tag_id)
    if row is None:
        return None
    deleted = await CustomerTag.filter(id=row.id).using_db(conn).delete()
    if not deleted:
        return None
    await _history(
        conn=conn,
        customer_id=customer_id,
        tag_id=tag_id,
        action="remove",
        source=source,
        actor=actor,
        reason=reason,
        at=at or now(),
    )
    return row


async def _history(
    *,
    conn: BaseDBAsyncClient,
    customer_id: int,
    tag_id: int,
    action: str,
    source: TagSource,
    actor: str,
    reason: Mapping[str, Any] | None,
    at: datetime,
) -> None:
    await CustomerTagHistory.create(
        using_db=conn,
        customer_id=customer_id,
        tag_id=tag_id,
        action=action,
        source=source,
        actor=actor[:96],
        reason=dict(reason or {}),
        at=at,
    )


def _numbered(conn: BaseDBAsyncClient, sql: str) -> str:
    """``?`` placeholders as the connection's dialect writes them."""
    if conn.capabilities.dialect != "postgres":
        return sql
    parts = sql.split("?")
    return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]


def _columns(model: type[Any], alias: str, prefix: str = "") -> str:
    return ", ".join(
        f'"{alias}"."{c}" AS "{prefix}{c}"' for c in model._meta.fields_db_projection.values()
    )


def _hydrated(model: type[Any], row: Mapping[str, Any], prefix: str = "") -> Any:
    # The model the ORM would build from these columns (it converts each as it reads).
    return model._init_from_db(
        **{c: row[prefix + c] for c in model._meta.fields_db_projection.values()}
    )


async def customer_tags_read(
    *, customer_id: int, history_limit: int
) -> tuple[list[CustomerTag], list[CustomerTagHistory], dict[int, Tag]]:
    """``tags_of_customer`` (each with its tag), ``history_with_tags`` and the tags the
    history names (``tags_by_ids``: deleted ones too, without their group) for the
    customer page's panel, written out in one statement: the ORM built five on every
    view of a customer, several times the cost of reading them."""
    conn = CustomerTag._meta.db
    ct_cols = list(CustomerTag._meta.fields_db_projection.values())
    h_cols = list(CustomerTagHistory._meta.fields_db_projection.values())
    no_ct = ", ".join(f'NULL AS "ct__{c}"' for c in ct_cols)
    no_h = ", ".join(f'NULL AS "h__{c}"' for c in h_cols)
    tag = _columns(Tag, "t", "t__")
    found = await conn.execute_query_dict(
        _numbered(
            conn,
            f'SELECT 0 AS "kind", {_columns(CustomerTag, "ct", "ct__")}, {no_h}, {tag} '  # noqa: S608 - model columns only
            'FROM "tagging_customer_tag" "ct" '
            'JOIN "tagging_tag" "t" ON "t"."id" = "ct"."tag_id" '
            'WHERE "ct"."customer_id" = ? UNION ALL '
            f"SELECT 1, {no_ct}, {_columns(CustomerTagHistory, 'h', 'h__')}, {tag} "
            f"FROM (SELECT {_columns(CustomerTagHistory, 'x')} "
            'FROM "tagging_customer_tag_history" "x" WHERE "x"."customer_id" = ? '
            'ORDER BY "x"."at" DESC, "x"."id" DESC LIMIT ?) "h" '
            'LEFT JOIN "tagging_tag" "t" ON "t"."id" = "h"."tag_id" '
            'ORDER BY "kind", "ct__tag_id", "h__at" DESC, "h__id" DESC',
        ),
        [customer_id, customer_id, history_limit],
    )
    tags, history, named = [], [], {}
    for r in found:
        if r["kind"] == 0:
            ct = _hydrated(CustomerTag, r, "ct__")
            # As prefetch_related("tag") leaves it.
            object.__setattr__(ct, "_tag", _hydrated(Tag, r, "t__"))
            tags.append(ct)
            continue
        history.append(_hydrated(CustomerTagHistory, r, "h__"))
        if r["t__id"] is not None:
            named[int(r["t__id"])] = _hydrated(Tag, r, "t__")
    return tags, history, named


async def attribute_fields_read() -> list[AttributeField]:
    """``AttributeField.all().order_by("id")`` written out (every customer page)."""
    conn = AttributeField._meta.db
    found = await conn.execute_query_dict(
        f'SELECT {_columns(AttributeField, "f")} FROM "tagging_attribute_field" "f" '  # noqa: S608 - model columns only
        'ORDER BY "f"."id"'
    )
    return [_hydrated(AttributeField, r) for r in found]


async def sealed_names_of(*, customer_id: int) -> set[str]:
    """``sealed_names`` for one customer, written out (every customer page)."""
    conn = SealedAttribute._meta.db
    found = await conn.execute_query_dict(
        _numbered(
            conn,
            'SELECT "name" FROM "tagging_sealed_attribute" WHERE "customer_id" = ?',
        ),
        [customer_id],
    )
    return {str(r["name"]) for r in found}


async def attribute_panel_read(*, customer_id: int) -> tuple[list[AttributeField], set[str]]:
    """``attribute_fields_read`` and ``sealed_names_of`` in one statement (every customer
    page draws the attributes box): the fields, then the customer's sealed names."""
    conn = AttributeField._meta.db
    names = list(AttributeField._meta.fields_db_projection.values())
    nulls = ", ".join(f'NULL AS "{c}"' for c in names)
    found = await conn.execute_query_dict(
        _numbered(
            conn,
            f'SELECT 0 AS "kind", {_columns(AttributeField, "f")}, NULL AS "sealed" '  # noqa: S608 - model columns only
            'FROM "tagging_attribute_field" "f" UNION ALL '
            f'SELECT 1, {nulls}, "s"."name" FROM "tagging_sealed_attribute" "s" '
            'WHERE "s"."customer_id" = ? ORDER BY "kind", "id"',
        ),
        [customer_id],
    )
    fields = [_hydrated(AttributeField, r) for r in found if r["kind"] == 0]
    return fields, {str(r["sealed"]) for r in found if r["kind"] == 1}


async def tags_of_customer(
    *, conn: BaseDBAsyncClient | None = None, customer_id: int
) -> list[CustomerTag]:
    q = CustomerTag.filter(customer_id=customer_id).prefetch_related("tag").order_by("tag_id")
    return await (q.using_db(conn) if conn else q)


async def customers_with_tag(*, conn: BaseDBAsyncClient, tag_id: int) -> list[CustomerTag]:
    return await CustomerTag.filter(tag_id=tag_id).using_db(conn).order_by("id")


async def history_of_customer(*, customer_id: int) -> list[CustomerTagHistory]:
    return await CustomerTagHistory.filter(customer_id=customer_id).order_by("at", "id")


async def siyu_tags_of_customer(*, conn: BaseDBAsyncClient, customer_id: int) -> list[CustomerTag]:
    """Tags siyu applied (not an advisor in WeCom), with their tag and group."""
    return (
        await CustomerTag.filter(customer_id=customer_id)
        .exclude(source=TagSource.WECOM)
        .using_db(conn)
        .prefetch_related("tag__group")
    )


async def wecom_tags_of_relation(
    *, conn: BaseDBAsyncClient, customer_id: int, advisor_userid: str
) -> list[CustomerTag]:
    return (
        await CustomerTag.filter(
            customer_id=customer_id, source=TagSource.WECOM, advisor_userid=advisor_userid
        )
        .using_db(conn)
        .prefetch_related("tag")
    )


# ---------------------------------------------------------------- sync bookkeeping


async def request_sync(
    *,
    conn: BaseDBAsyncClient,
    key: str,
    kind: str,
    wecom_id: str = "",
    advisor_userid: str = "",
    change_type: str = "",
) -> bool:
    """Ask the sync job to pull something; once per key (a redelivered callback is a no-op)."""
    if await SyncRequest.filter(key=key).using_db(conn).exists():
        return False
    try:
        await SyncRequest.create(
            using_db=conn,
            key=key[:160],
            kind=kind,
            wecom_id=wecom_id[:64],
            advisor_userid=advisor_userid[:64],
            change_type=change_type[:32],
        )
    except IntegrityError:
        return False
    return True


#: A request WeCom keeps refusing (not a rate limit) is given up after this many tries;
#: the reconcile rotation asks again another day.
MAX_SYNC_ATTEMPTS = 5


async def pending_sync_requests(*, kind: str, limit: int) -> list[SyncRequest]:
    return (
        await SyncRequest.filter(kind=kind, done_at=None, attempts__lt=MAX_SYNC_ATTEMPTS)
        .order_by("id")
        .limit(limit)
    )


async def followed_customers(*, after: int, limit: int) -> list[tuple[int, str]]:
    """Customers with an active advisor relation, in id order after ``after`` (read only)."""
    rows = (
        await Customer.filter(id__gt=after, follows__status="active")
        .distinct()
        .order_by("id")
        .limit(limit)
        .values_list("id", "external_userid")
    )
    return [(int(i), str(e)) for i, e in rows]


async def finish_sync_requests(*, ids: Sequence[int], error: str = "") -> None:
    if not ids:
        return
    if error:
        await SyncRequest.filter(id__in=list(ids)).update(
            attempts=F("attempts") + 1, last_error=error[:255]
        )
    else:
        await SyncRequest.filter(id__in=list(ids)).update(done_at=now(), last_error="")


async def start_run(*, kind: str) -> SyncRun:
    return await SyncRun.create(kind=kind, started_at=now(), changes=[])


async def finish_run(
    *, run: SyncRun, ok: bool, changes: list[dict[str, Any]], error: str = ""
) -> SyncRun:
    run.ok = ok
    run.changes = changes
    run.error = error[:255]
    run.finished_at = now()
    await run.save()
    return run


async def last_run(*, kind: str) -> SyncRun | None:
    return await SyncRun.filter(kind=kind).order_by("-id").first()


# ---------------------------------------------------------------- audiences


async def save_audience(
    *, conn: BaseDBAsyncClient, name: str, expr: str, created_by: str
) -> Audience:
    existing = await Audience.get_or_none(name=name, using_db=conn)
    if existing is not None:
        existing.expr = expr
        await existing.save(using_db=conn)
        return existing
    return await Audience.create(using_db=conn, name=name, expr=expr, created_by=created_by)


async def audiences() -> list[Audience]:
    return await Audience.all().order_by("name")


async def audience_named(*, name: str) -> Audience | None:
    return await Audience.get_or_none(name=name)


# ---------------------------------------------------------------- console reads


def _marks(dialect: str, start: int, n: int) -> list[str]:
    return [f"${start + i}" if dialect == "postgres" else "?" for i in range(n)]


def _reach_sql(dialect: str, reach: frozenset[str], start: int) -> str:
    """A condition on ``ct.customer_id``: an advisor in ``reach`` follows the customer."""
    marks = ", ".join(_marks(dialect, start, max(len(reach), 1)))
    return (
        "EXISTS (SELECT 1 FROM bot_follow_relation f JOIN bot_advisor a ON a.id = f.advisor_id "  # noqa: S608 - placeholders only
        f"WHERE f.customer_id = ct.customer_id AND f.status = 'active' AND a.userid IN ({marks}))"
    )


async def tag_counts(*, reach: frozenset[str] | None) -> dict[int, int]:
    """Customers per tag; within ``reach`` (advisors' userids) unless None."""
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    dialect = "postgres" if conn.capabilities.dialect == "postgres" else "sqlite"
    where, params = "", []
    if reach is not None:
        where = "WHERE " + _reach_sql(dialect, reach, 1)
        params = sorted(reach) or [""]
    _, rows = await conn.execute_query(
        # Fixed text and placeholders; the userids are bound.
        f"SELECT ct.tag_id, COUNT(*) AS n FROM tagging_customer_tag ct {where} "  # noqa: S608
        "GROUP BY ct.tag_id",
        params,
    )
    return {int(r["tag_id"]): int(r["n"]) for r in rows}


def _followed_by(reach: frozenset[str]) -> Subquery:
    """Customers an advisor in ``reach`` follows (a subquery: no DISTINCT, so a list
    can order by its own columns on PostgreSQL)."""
    return Subquery(
        FollowRelation.filter(
            advisor__userid__in=sorted(reach) or [""], status=RelationStatus.ACTIVE
        ).values("customer_id")
    )


async def tag_customers(
    *, tag_id: int, reach: frozenset[str] | None, source: str = "", offset: int, limit: int
) -> tuple[list[CustomerTag], int]:
    """A tag's customers (newest first) within ``reach``, with the customer row, and the total."""
    q = CustomerTag.filter(tag_id=tag_id)
    if source:
        q = q.filter(source=source)
    if reach is not None:
        q = q.filter(customer_id__in=_followed_by(reach))
    total = await q.count()
    ids = (
        await q.order_by("-applied_at", "-id")
        .offset(offset)
        .limit(limit)
        .values_list("id", flat=True)
    )
    rows = (
        await CustomerTag.filter(id__in=list(ids))
        .prefetch_related("customer")
        .order_by("-applied_at", "-id")
    )
    return rows, total


async def customer_in_reach(*, customer_id: int, reach: frozenset[str] | None) -> Customer | None:
    """The customer row, or None — also outside ``reach`` (the same answer either way)."""
    q = Customer.filter(id=customer_id)
    if reach is not None:
        q = q.filter(
            follows__advisor__userid__in=sorted(reach) or [""], follows__status="active"
        ).distinct()
    return await q.first()


async def pending_pushes() -> int:
    """Tags and groups whose change is still on its way to WeCom."""
    return (
        await Tag.filter(deleted_at=None, push_pending=True).count()
        + await TagGroup.filter(deleted_at=None, push_pending=True).count()
    )


async def recent_runs(*, limit: int = 10) -> list[SyncRun]:
    return await SyncRun.all().order_by("-id").limit(limit)


async def sync_requests_waiting() -> int:
    return await SyncRequest.filter(done_at=None, attempts__lt=MAX_SYNC_ATTEMPTS).count()


async def history_with_tags(*, customer_id: int, limit: int = 100) -> list[CustomerTagHistory]:
    return (
        await CustomerTagHistory.filter(customer_id=customer_id).order_by("-at", "-id").limit(limit)
    )


async def tags_by_ids(*, ids: Sequence[int]) -> dict[int, Tag]:
    """Tags by id, deleted ones too (history names tags that are gone)."""
    if not ids:
        return {}
    rows = await Tag.filter(id__in=list(set(ids))).prefetch_related("group")
    return {t.id: t for t in rows}


# ---------------------------------------------------------------- attributes


async def customer_attributes(
    *, conn: BaseDBAsyncClient, customer_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Customers' clear attributes by row id (read only; ``bot`` owns the column)."""
    out: dict[int, dict[str, Any]] = {}
    unique = list(dict.fromkeys(customer_ids))
    for start in range(0, len(unique), 1000):
        rows = (
            await Customer.filter(id__in=unique[start : start + 1000])
            .using_db(conn)
            .values_list("id", "attributes")
        )
        for cid, attrs in rows:
            out[int(cid)] = dict(attrs or {})
    return out


async def customers_with_attributes(*, after: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Customers with any attribute, in id order after ``after`` (read only)."""
    rows = (
        await Customer.filter(id__gt=after)
        .order_by("id")
        .limit(limit)
        .values_list("id", "attributes")
    )
    return [(int(cid), dict(attrs or {})) for cid, attrs in rows]


async def sealed_rows(
    *, conn: BaseDBAsyncClient, customer_ids: Sequence[int], names: Sequence[str]
) -> dict[tuple[int, str], SealedAttribute]:
    if not customer_ids or not names:
        return {}
    out: dict[tuple[int, str], SealedAttribute] = {}
    unique = list(dict.fromkeys(customer_ids))
    for start in range(0, len(unique), 1000):
        rows = await SealedAttribute.filter(
            customer_id__in=unique[start : start + 1000], name__in=list(names)
        ).using_db(conn)
        for row in rows:
            out[(int(row.customer_id), row.name)] = row  # type: ignore[attr-defined]
    return out


async def sealed_names(
    *, conn: BaseDBAsyncClient, customer_ids: Sequence[int]
) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    unique = list(dict.fromkeys(customer_ids))
    for start in range(0, len(unique), 1000):
        rows = (
            await SealedAttribute.filter(customer_id__in=unique[start : start + 1000])
            .using_db(conn)
            .values_list("customer_id", "name")
        )
        for cid, name in rows:
            out.setdefault(int(cid), set()).add(str(name))
    return out


async def count_attribute_breaking(
    *,
    conn: BaseDBAsyncClient,
    name: str,
    kind: str,
    allowed: Sequence[str] | None = None,
    minimum: str | None = None,
    maximum: str | None = None,
    max_length: int | None = None,
) -> dict[str, int]:
    """How many customers' clear values of ``name`` a narrower check would refuse, per
    check and in ``total`` (one pass over ``bot_customer``, read only).

    The checks mirror ``tagging.attributes.check_value``: values outside ``allowed``
    (an enum, a list's items), numbers or ISO dates outside the new bounds, texts (or
    list items) longer than ``max_length``.
    """
    dialect = "postgres" if conn.capabilities.dialect == "postgres" else "sqlite"
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if dialect == "postgres" else "?"

    def col() -> str:
        if dialect == "postgres":
            return f"(c.attributes ->> {bind(name)})"
        return f"json_extract(c.attributes, {bind('$.' + name)})"

    def items(condition: Callable[[str], str]) -> str:
        # Any item of a list value (``v`` reads one item as text).
        if dialect == "postgres":
            key = bind(name)
            return (
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE WHEN "  # noqa: S608 - placeholders
                f"jsonb_typeof(c.attributes -> {key}) = 'array' THEN c.attributes -> {key} "
                f"ELSE '[]'::jsonb END) v WHERE {condition('v')})"
            )
        typed, extracted = bind("$." + name), bind("$." + name)
        return (
            "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type(c.attributes, "  # noqa: S608 - placeholders
            f"{typed}) = 'array' THEN json_extract(c.attributes, {extracted}) ELSE '[]' END) v "
            f"WHERE {condition('v.value')})"
        )

    checks: dict[str, str] = {}
    if allowed is not None:
        if kind == "list":
            checks["enum_values"] = items(
                lambda v: (
                    f"{v} NOT IN ({', '.join(bind(a) for a in allowed)})" if allowed else "1 = 0"
                )
            )
        else:
            checks["enum_values"] = f"{col()} NOT IN ({', '.join(bind(a) for a in allowed)})"
    for key, bound, op in (("minimum", minimum, "<"), ("maximum", maximum, ">")):
        if bound is None:
            continue
        if kind == "date":
            checks[key] = f"{col()} {op} {bind(bound)}"
        elif kind in ("int", "decimal"):
            cast = "NUMERIC" if dialect == "postgres" else "REAL"
            value: Any = Decimal(bound) if dialect == "postgres" else float(bound)
            checks[key] = f"CAST({col()} AS {cast}) {op} {bind(value)}"
    if max_length is not None:
        if kind == "list":
            checks["max_length"] = items(lambda v: f"length({v}) > {bind(max_length)}")
        else:
            checks["max_length"] = f"length({col()}) > {bind(max_length)}"
    if not checks:
        return {"total": 0}
    sums = [
        f"COALESCE(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END), 0) AS {key}"
        for key, cond in checks.items()
    ]
    # The same conditions again for the customers that break any (one may break two).
    any_of = " OR ".join(f"({c})" for c in checks.values())
    if dialect == "sqlite":
        # Numbered placeholders read their value again; SQLite's "?" take it again.
        params += list(params)
    _, rows = await conn.execute_query(
        # Column names and values are bound; the rest is this function's fixed text.
        f"SELECT {', '.join(sums)}, "  # noqa: S608 - see above
        f"COALESCE(SUM(CASE WHEN {any_of} THEN 1 ELSE 0 END), 0) AS total FROM bot_customer c",
        params,
    )
    return {k: int(v or 0) for k, v in dict(rows[0]).items()}


async def actor_names(
    *, refs: Iterable[str], lookup: Callable[[Iterable[str]], Awaitable[dict[str, str]]] | None
) -> dict[str, str]:
    """Names for the refs of who applied a tag (``operator:12``, ``api_key:…``,
    ``wecom:<advisor>``, ``rule:5``), one query per kind however many rows show them:
    operators and API keys through ``lookup`` (the console shell's ``ACTOR_NAMES``),
    advisors from ``bot``, rules from this domain.  Unknown refs are left out."""
    wanted = set(refs)
    out: dict[str, str] = {}
    if lookup is not None:
        out.update(
            await lookup(sorted(r for r in wanted if r.startswith(("operator:", "api_key:"))))
        )
    advisors = {r.partition(":")[2] for r in wanted if r.startswith("wecom:")} - {""}
    if advisors:
        found = await bot_service.advisors_by_userid(userids=advisors)
        out.update({f"wecom:{u}": a.name for u, a in found.items() if a.name})
    rules = {int(i) for r in wanted if r.startswith("rule:") and (i := r[5:]).isdigit()}
    if rules:
        rows = await TagRule.filter(id__in=sorted(rules)).values_list("id", "name")
        out.update({f"rule:{i}": str(n) for i, n in rows})
    return out


async def attribute_field(*, name: str) -> AttributeField | None:
    return await AttributeField.get_or_none(name=name)


async def rules_with_audience() -> list[TagRule]:
    """Every rule (enabled or not) that selects by an audience expression."""
    return await TagRule.filter(trigger="schedule").order_by("id")


async def has_sealed(*, customer_id: int, name: str) -> bool:
    return await SealedAttribute.filter(customer_id=customer_id, name=name).exists()


async def sealed_of_customer(*, customer_id: int) -> list[SealedAttribute]:
    return await SealedAttribute.filter(customer_id=customer_id).order_by("name")


async def imports(*, offset: int, limit: int) -> tuple[list[AttributeImport], int]:
    rows = await AttributeImport.all().order_by("-id").offset(offset).limit(limit)
    return rows, await AttributeImport.all().count()


async def get_import(*, import_id: int) -> AttributeImport | None:
    return await AttributeImport.get_or_none(id=import_id)


async def import_rejects(*, import_id: int, limit: int | None = None) -> list[ImportReject]:
    q = ImportReject.filter(batch_id=import_id).order_by("row", "id")
    return await (q.limit(limit) if limit else q)


# ---------------------------------------------------------------- PIPL


async def export_customer(*, conn: BaseDBAsyncClient, external_userid: str) -> dict[str, Any]:
    """One customer's tags and tag history (PIPL art. 45 access request)."""
    customer_id = await customer_id_of(conn=conn, external_userid=external_userid)
    if customer_id is None:
        return {"customer_tags": [], "customer_tag_history": [], "sealed_attributes": []}
    tags = (
        await CustomerTag.filter(customer_id=customer_id)
        .using_db(conn)
        .prefetch_related("tag")
        .order_by("id")
    )
    history = await CustomerTagHistory.filter(customer_id=customer_id).using_db(conn).order_by("id")
    sealed = await SealedAttribute.filter(customer_id=customer_id).using_db(conn).order_by("name")
    return {
        # Sealed values stay sealed in an export, as message originals do: an authorised
        # reader opens them through the audited console.
        "sealed_attributes": [
            {"name": a.name, "sealed": True, "updated_at": a.updated_at.isoformat()} for a in sealed
        ],
        "customer_tags": [
            {
                "tag": ct.tag.name,
                "source": ct.source.value,
                "applied_by": ct.applied_by,
                "applied_at": ct.applied_at.isoformat(),
                "reason": ct.reason,
                "advisor_userid": ct.advisor_userid,
                "expires_at": ct.expires_at.isoformat() if ct.expires_at else None,
            }
            for ct in tags
        ],
        "customer_tag_history": [
            {
                "tag_id": h.tag_id,
                "action": h.action,
                "source": h.source.value,
                "actor": h.actor,
                "reason": h.reason,
                "at": h.at.isoformat(),
            }
            for h in history
        ],
    }


async def rule_names(*, ids: Iterable[int]) -> dict[int, str]:
    """Auto-tag rules' names by id: the reason a tag was applied, as people read it."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await TagRule.filter(id__in=wanted).values_list("id", "name")
    return {int(i): str(n) for i, n in rows}
