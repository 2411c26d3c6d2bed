"""The only code that queries the edge's tables.  Keyword-only, typed."""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

from tortoise import timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.fields import Field as TortoiseField
from tortoise.fields import JSONField
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator

from bot import models
from bot.models import OutboxState, RelationStatus


def now() -> datetime:
    return datetime.now(UTC)


M = TypeVar("M", bound=Model)


async def _create_once(model: type[M], *, conn: BaseDBAsyncClient, **values: Any) -> M | None:
    """Insert a row, or None when a concurrent worker inserted the same key first.

    The insert runs in a savepoint: on PostgreSQL a unique violation aborts the
    whole transaction otherwise, and the message would fail and be redelivered.
    """
    try:
        async with in_transaction(conn.connection_name) as savepoint:
            return await model.create(using_db=savepoint, **values)
    except IntegrityError:
        return None


# How many rows one INSERT carries is bounded by the bind parameters a statement may
# hold: 32,767 on PostgreSQL (the wire protocol counts them in 16 bits), 32,766 on
# SQLite (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
_MAX_BIND_PARAMETERS = 32_000
# INSERT … RETURNING came with SQLite 3.35 (2021): an older library inserts row by row.
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# PostgreSQL column types ``_insert_many`` binds as one array per column (see there).
_ARRAY_TYPES = re.compile(r"(VARCHAR\(\d+\)|TEXT|BIGINT|INT|SMALLINT|BOOL|TIMESTAMPTZ|JSONB)")


def _converter(model: type[Model], name: str) -> Callable[[Any], Any]:
    """``field.to_db_value`` for one column, with its usual case done inline.

    A string, integer or boolean column whose field converts as tortoise's base
    ``Field`` does (no conversion for a value of the field's own type, then the
    validators) gets that check written out for the value of exactly its type, and a
    JSON column without validators encodes a dict or list with the field's encoder;
    anything else (None, another type, a validator other than a length or a range, a
    value one of them refuses) goes through ``to_db_value`` itself, which converts or
    raises as it always did.  Converting the values was most of a multi-row insert's
    cost in the worker: two dozen columns per message, three calls per value.
    """
    field = model._meta.fields_map[name]

    def slow(value: Any) -> Any:
        return field.to_db_value(value, model)

    kind = type(field).to_db_value
    if kind is JSONField.to_db_value and not field.validators:
        encode = field.encoder

        def json_value(value: Any) -> Any:
            return encode(value) if type(value) in (dict, list) else slow(value)

        return json_value
    limits = _plain_limits(field)
    if limits is None:
        return slow
    exact, longest, lowest, highest = limits

    def plain(value: Any) -> Any:
        if (
            type(value) is exact
            and (longest is None or len(value) <= longest)
            and (lowest is None or value >= lowest)
            and (highest is None or value <= highest)
        ):
            return value
        return slow(value)

    return plain


def _plain_limits(field: TortoiseField[Any]) -> tuple[type[Any], int | None, Any, Any] | None:
    """(type, longest, lowest, highest) of a string, integer or boolean column that
    converts as tortoise's base ``Field`` does, with no validator but a length or a range;
    None for any other column."""
    exact = field.field_type
    if type(field).to_db_value is not TortoiseField.to_db_value or exact not in (str, int, bool):
        return None
    longest = lowest = highest = None
    for v in field.validators:
        if type(v) is MaxLengthValidator:
            longest = v.max_length
        elif type(v) is MinValueValidator:
            lowest = v.min_value
        elif type(v) is MaxValueValidator:
            highest = v.max_value
        else:
            return None
    return exact, longest, lowest, highest


def _column_converter(model: type[Model], name: str) -> Callable[[list[Any]], list[Any]]:
    """``_converter`` for a whole column of a multi-row insert: the values as they are
    when every one is of the column's own type (or None where the column takes NULL)
    and within its length and range, told by a few passes in C over the column rather
    than a call per value; otherwise each value through ``_converter``."""
    one = _converter_of(model, name)
    field = model._meta.fields_map[name]
    limits = _plain_limits(field)
    if limits is None:

        def each(values: list[Any]) -> list[Any]:
            return [one(v) for v in values]

        return each
    exact, longest, lowest, highest = limits
    allowed = {exact, type(None)} if field.null else {exact}

    def column(values: list[Any]) -> list[Any]:
        kinds = set(map(type, values))
        if kinds <= allowed:
            given = values if type(None) not in kinds else [v for v in values if v is not None]
            if not given or (
                (longest is None or max(map(len, given)) <= longest)
                and (lowest is None or min(given) >= lowest)
                and (highest is None or max(given) <= highest)
            ):
                return values
        return [one(v) for v in values]

    return column


_Built = TypeVar("_Built")
_CONVERTERS: dict[tuple[type[Model], str], tuple[Any, Callable[[Any], Any]]] = {}
_COLUMN_CONVERTERS: dict[tuple[type[Model], str], tuple[Any, Callable[[list[Any]], list[Any]]]] = {}


def _built_once(
    cache: dict[tuple[type[Model], str], tuple[Any, _Built]],
    build: Callable[[type[Model], str], _Built],
    model: type[Model],
    name: str,
) -> _Built:
    """``build(model, name)``, built once per field (tests re-initialise the ORM: keyed
    by the field object itself)."""
    field = model._meta.fields_map[name]
    cached = cache.get((model, name))
    if cached is None or cached[0] is not field:
        cached = (field, build(model, name))
        cache[(model, name)] = cached
    return cached[1]


def _converter_of(model: type[Model], name: str) -> Callable[[Any], Any]:
    return _built_once(_CONVERTERS, _converter, model, name)


def _column_converter_of(model: type[Model], name: str) -> Callable[[list[Any]], list[Any]]:
    return _built_once(_COLUMN_CONVERTERS, _column_converter, model, name)


async def _insert_many(
    model: type[Model],
    *,
    conn: BaseDBAsyncClient,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    returning: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Insert ``rows`` with a few multi-row statements, skipping those whose key exists.

    ``INSERT … ON CONFLICT (conflict) DO NOTHING``: a row whose unique key is already
    stored (or inserted by a concurrent transaction, which PostgreSQL waits for) is
    skipped without an error, so the transaction stays usable and no savepoint per
    row is needed.  Returns the ``returning`` columns of the rows inserted now.

    Values go through the model's fields as ``Model.create`` sends them (defaults,
    created/updated timestamps, max_length and the other validators), so a value the
    ORM would refuse makes this call raise too; no model instance is built, which
    would cost more than the insert itself.  Rows are inserted in the order given:
    callers sort them by key, so two transactions inserting overlapping keys take the
    unique index's locks in the same order and cannot deadlock.

    On PostgreSQL the rows go as one array per column (``INSERT … SELECT * FROM
    unnest($1::type[], …)``): the statement's text is the same whatever the number of
    rows, so the driver prepares it once per connection, where a ``VALUES`` list of
    another length each time was parsed, planned and evicted again on the server and
    in the driver's statement cache.
    """
    if not rows:
        return []
    meta = model._meta
    fields = list(conn.executor_class(model=model, db=conn).regular_columns)
    unknown = {name for row in rows for name in row} - set(fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    columns = [meta.fields_db_projection[f] for f in fields]
    at = timezone.now()

    def db_value(name: str, row: Mapping[str, Any]) -> Any:
        field = meta.fields_map[name]
        if getattr(field, "auto_now", False) or (
            getattr(field, "auto_now_add", False) and row.get(name) is None
        ):
            value: Any = at
        elif name in row:
            value = row[name]
        else:
            value = field.default() if callable(field.default) else field.default
        return field.to_db_value(value, model)

    # A column whose value is the same for every row (the timestamps, a constant default
    # no row gives) is converted once per call, not once per row: the per-value work
    # was most of a multi-row insert's cost in the worker.
    same: dict[str, Any] = {}
    for f in fields:
        if all(f not in row for row in rows) or (
            getattr(meta.fields_map[f], "auto_now", False)
            or getattr(meta.fields_map[f], "auto_now_add", False)
            and all(row.get(f) is None for row in rows)
        ):
            default = meta.fields_map[f].default
            if not callable(default) or getattr(meta.fields_map[f], "auto_now", False):
                same[f] = db_value(f, {})
    # Every other column: the row's value, or the field's default where the row has none
    # (a callable default is called per row, as Model.create would).
    by_column: list[list[Any]] = []
    for f in fields:
        if f in same:
            by_column.append([same[f]] * len(rows))
            continue
        field = meta.fields_map[f]
        if getattr(field, "auto_now_add", False):
            by_column.append([db_value(f, row) for row in rows])
            continue
        default = field.default
        try:
            given = list(map(itemgetter(f), rows))
        except KeyError:  # some rows leave the column to its default
            given = [
                row[f] if f in row else default() if callable(default) else default for row in rows
            ]
        by_column.append(_column_converter_of(model, f)(given))
    # Identifiers come from the model, never from input; every value is bound.
    table, names = _quoted(meta.db_table), ", ".join(map(_quoted, columns))
    keys = ", ".join(_quoted(meta.fields_db_projection.get(c, c)) for c in conflict)
    head = f"INSERT INTO {table} ({names}) "
    tail = f" ON CONFLICT ({keys}) DO NOTHING"
    back = f" RETURNING {', '.join(map(_quoted, returning))}" if returning else ""
    postgres = conn.capabilities.dialect == "postgres"
    types = [meta.fields_map[f].get_for_dialect("postgres", "SQL_TYPE") for f in fields]
    if postgres and all(isinstance(t, str) and _ARRAY_TYPES.fullmatch(t) for t in types):
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        sql = head + f"SELECT * FROM unnest({arrays})" + tail + back  # noqa: S608 - model identifiers and types, values bound
        if returning:
            return list(await conn.execute_query_dict(sql, by_column))
        await conn.execute_query(sql, by_column)
        return []
    values = [list(row_values) for row_values in zip(*by_column, strict=True)]
    if returning and not postgres and not _SQLITE_RETURNING:
        one = "(" + ", ".join("?" * len(columns)) + ")"
        return await _insert_each_sqlite(
            conn, head + "VALUES " + one + tail, values, meta.db_table, returning
        )
    out: list[dict[str, Any]] = []
    per_statement = max(1, _MAX_BIND_PARAMETERS // len(columns))
    for start in range(0, len(values), per_statement):
        chunk = values[start : start + per_statement]
        if postgres:
            n = len(columns)
            groups = (
                "(" + ", ".join(f"${i * n + j + 1}" for j in range(n)) + ")"
                for i in range(len(chunk))
            )
        else:
            one = "(" + ", ".join("?" * len(columns)) + ")"
            groups = (one for _ in chunk)
        sql = head + "VALUES " + ", ".join(groups) + tail + back
        params = [v for row_values in chunk for v in row_values]
        if returning:
            out += await conn.execute_query_dict(sql, params)
        else:
            await conn.execute_query(sql, params)
    return out


async def _insert_each_sqlite(
    conn: BaseDBAsyncClient,
    sql: str,
    values: list[list[Any]],
    table: str,
    returning: Sequence[str],
) -> list[dict[str, Any]]:
    """``_insert_many`` on SQLite before 3.35: row by row, reading back each row inserted."""
    out: list[dict[str, Any]] = []
    select = (
        f"SELECT {', '.join(map(_quoted, returning))} FROM {_quoted(table)} "  # noqa: S608 - model identifiers
        "WHERE rowid = last_insert_rowid()"
    )
    for row_values in values:
        changed, _ = await conn.execute_query(sql, row_values)
        if changed:
            out += await conn.execute_query_dict(select)
    return out


async def upsert_advisor(
    *, conn: BaseDBAsyncClient, userid: str, profile: dict[str, Any] | None = None
) -> models.Advisor:
    advisor = await models.Advisor.get_or_none(userid=userid, using_db=conn)
    if advisor is None:
        advisor = await _create_once(models.Advisor, conn=conn, userid=userid) or (
            await models.Advisor.get(userid=userid, using_db=conn)  # another worker won
        )
    if profile:
        advisor.name = str(profile.get("name", advisor.name))[:128]
        dept = profile.get("department")
        if isinstance(dept, list):
            advisor.department = ",".join(str(d) for d in dept)[:255]
        leaders = profile.get("direct_leader") or []
        if leaders:
            advisor.manager_userid = str(leaders[0])
        advisor.synced_at = now()
        await advisor.save(using_db=conn)
    return advisor


async def upsert_customer(
    *,
    conn: BaseDBAsyncClient,
    external_userid: str,
    contact: dict[str, Any] | None = None,
    needs_sync: bool = False,
) -> models.Customer:
    customer = await models.Customer.get_or_none(external_userid=external_userid, using_db=conn)
    if customer is None:
        customer = await _create_once(
            models.Customer, conn=conn, external_userid=external_userid, needs_sync=needs_sync
        ) or await models.Customer.get(external_userid=external_userid, using_db=conn)
    if contact:
        customer.name = str(contact.get("name", customer.name))[:128]
        customer.unionid = contact.get("unionid") or customer.unionid
        customer.contact_type = int(contact.get("type", customer.contact_type) or 1)
        customer.corp_name = str(contact.get("corp_name", customer.corp_name) or "")[:255]
        customer.gender = int(contact.get("gender", customer.gender) or 0)
        customer.needs_sync = False
        customer.synced_at = now()
        await customer.save(using_db=conn)
    elif needs_sync and not customer.needs_sync and customer.synced_at is None:
        customer.needs_sync = True
        await customer.save(using_db=conn, update_fields=["needs_sync", "updated_at"])
    return customer


async def ensure_advisors(*, conn: BaseDBAsyncClient, userids: Iterable[str]) -> dict[str, int]:
    """``userid → id`` of these members, inserting those not stored yet.

    For a whole read at once: one SELECT, and an INSERT of the missing ones; one
    inserted meanwhile by another worker is skipped by the INSERT and read back.
    """
    wanted = sorted(set(userids))
    if not wanted:
        return {}
    rows = await _rows_by_key(conn, models.Advisor, "userid", wanted, ("userid", "id"))
    found = {str(r["userid"]): int(r["id"]) for r in rows}
    missing = [u for u in wanted if u not in found]
    if missing:
        inserted = await _insert_many(
            models.Advisor,
            conn=conn,
            rows=[{"userid": u} for u in missing],
            conflict=("userid",),
            returning=("userid", "id"),
        )
        found.update((str(r["userid"]), int(r["id"])) for r in inserted)
        if raced := [u for u in missing if u not in found]:
            rows = await _rows_by_key(conn, models.Advisor, "userid", raced, ("userid", "id"))
            found.update((str(r["userid"]), int(r["id"])) for r in rows)
    return found


async def _rows_by_key(
    conn: BaseDBAsyncClient,
    model: type[Model],
    key: str,
    values: Sequence[str],
    columns: Sequence[str],
) -> list[dict[str, Any]]:
    """``columns`` of the rows whose ``key`` is one of ``values``, as plain values.

    Written out: the storing transaction reads a read's members and customers this way,
    and the ORM spent longer building the query than the database running it.
    """
    postgres = conn.capabilities.dialect == "postgres"
    params: list[Any] = []
    mark = _marker(params, postgres=postgres)
    sql = (
        f"SELECT {', '.join(map(_quoted, columns))} FROM {_quoted(model._meta.db_table)} "  # noqa: S608 - model identifiers, values bound
        f"WHERE {_one_of(_quoted(key), values, mark, postgres=postgres)}"
    )
    return list(await conn.execute_query_dict(sql, params))


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """A stored customer as the storing transaction needs it: the row's id and name."""

    id: int
    external_userid: str
    name: str


async def ensure_customers(
    *, conn: BaseDBAsyncClient, external_userids: Iterable[str]
) -> dict[str, CustomerRef]:
    """These customers' rows, inserting those not stored yet; all marked for the reconcile
    job unless it has fetched them already (``upsert_customer(needs_sync=True)`` for many).

    A message names a customer by id only: their profile is fetched from WeCom later
    (``externalcontact/get`` by the reconcile job), never inside this transaction.
    """
    wanted = sorted(set(external_userids))
    if not wanted:
        return {}
    fields = ("id", "external_userid", "name", "needs_sync", "synced_at")
    rows = [
        tuple(r[f] for f in fields)
        for r in await _rows_by_key(conn, models.Customer, "external_userid", wanted, fields)
    ]
    found = {
        str(r[1]): CustomerRef(id=int(r[0]), external_userid=str(r[1]), name=str(r[2]))
        for r in rows
    }
    missing = [e for e in wanted if e not in found]
    if missing:
        inserted = await _insert_many(
            models.Customer,
            conn=conn,
            rows=[{"external_userid": e, "needs_sync": True} for e in missing],
            conflict=("external_userid",),
            returning=("id", "external_userid"),
        )
        for r in inserted:
            e = str(r["external_userid"])
            found[e] = CustomerRef(id=int(r["id"]), external_userid=e, name="")
        if raced := [e for e in missing if e not in found]:
            rows += [
                tuple(r[f] for f in fields)
                for r in await _rows_by_key(conn, models.Customer, "external_userid", raced, fields)
            ]
            found.update(
                (str(r[1]), CustomerRef(id=int(r[0]), external_userid=str(r[1]), name=str(r[2])))
                for r in rows
            )
    never_synced = sorted(int(r[0]) for r in rows if not r[3] and r[4] is None)
    if never_synced:
        await (
            models.Customer.filter(id__in=never_synced, needs_sync=False, synced_at__isnull=True)
            .using_db(conn)
            .update(needs_sync=True, updated_at=now())
        )
    return found


async def upsert_follow(
    *,
    conn: BaseDBAsyncClient,
    customer: models.Customer,
    advisor: models.Advisor,
    status: RelationStatus,
    at: datetime,
    follow: dict[str, Any] | None = None,
    originals_sealed: Mapping[str, str | None] | None = None,
) -> models.FollowRelation:
    """``originals_sealed``: sealed originals of the free-text fields ``follow`` holds masked."""
    rel = await models.FollowRelation.get_or_none(
        customer_id=customer.id, advisor_id=advisor.id, using_db=conn
    )
    if rel is None:
        rel = models.FollowRelation(customer=customer, advisor=advisor)
    if rel.status != status or rel.status_changed_at is None:
        rel.status = status
        rel.status_changed_at = at
    if status == RelationStatus.ACTIVE and rel.added_at is None:
        rel.added_at = at
    if follow:
        rel.remark = str(follow.get("remark", rel.remark) or "")[:255]
        rel.description = str(follow.get("description", rel.description) or "")[:512]
        if follow.get("createtime"):
            rel.added_at = datetime.fromtimestamp(int(follow["createtime"]), tz=UTC)
        if follow.get("add_way") is not None:
            rel.add_way = int(follow["add_way"])
        if follow.get("state"):
            rel.state = str(follow["state"])[:64]
    for name, sealed in (originals_sealed or {}).items():
        if name in ("remark", "description"):
            setattr(rel, f"{name}_sealed", sealed)
    await rel.save(using_db=conn)
    return rel


async def follow_relation(
    *, conn: BaseDBAsyncClient, external_userid: str, userid: str
) -> models.FollowRelation | None:
    return await models.FollowRelation.get_or_none(
        customer__external_userid=external_userid, advisor__userid=userid, using_db=conn
    )


async def advisors_following(*, conn: BaseDBAsyncClient, external_userid: str) -> list[str]:
    rels = (
        await models.FollowRelation.filter(
            customer__external_userid=external_userid, status=RelationStatus.ACTIVE
        )
        .using_db(conn)
        .prefetch_related("advisor")
    )
    return [r.advisor.userid for r in rels]


async def get_advisor(*, conn: BaseDBAsyncClient, userid: str) -> models.Advisor | None:
    return await models.Advisor.get_or_none(userid=userid, using_db=conn)


async def insert_messages(
    *, conn: BaseDBAsyncClient, rows: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str], int]:
    """Insert messages, each (source, msgid) once: the new rows' ids by (source, msgid).

    A key already stored (a redelivery, or a concurrent worker's insert) is skipped
    and absent from the answer: the caller learns per message that it is a duplicate.
    ``rows`` must not repeat a key.  One multi-row statement per few thousand values.
    """
    ordered = sorted(rows, key=lambda r: (str(r["source"]), str(r["msgid"])))
    inserted = await _insert_many(
        models.Message,
        conn=conn,
        rows=ordered,
        conflict=("source", "msgid"),
        returning=("id", "source", "msgid"),
    )
    return {(str(r["source"]), str(r["msgid"])): int(r["id"]) for r in inserted}


async def stored_message_keys(*, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (source, msgid) pairs are already stored: one statement for a read."""
    if not keys:
        return set()
    by_source: dict[str, list[str]] = {}
    for source, msgid in keys:
        by_source.setdefault(source, []).append(msgid)
    conn = models.Message._meta.db
    sql, params = stored_message_sql(by_source, postgres=conn.capabilities.dialect == "postgres")
    rows = await conn.execute_query_dict(sql, params)
    return {(str(r["source"]), str(r["msgid"])) for r in rows} & set(keys)


def _marker(params: list[Any], *, postgres: bool) -> Callable[[Any], str]:
    """Binds a value: appends it to ``params`` and returns its placeholder."""

    def mark(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if postgres else "?"

    return mark


def _one_of(
    column: str, values: Sequence[Any], mark: Callable[[Any], str], *, postgres: bool
) -> str:
    """``column`` is one of ``values``: ``IN (?, …)`` on SQLite, ``= ANY($n::text[])`` on
    PostgreSQL, where the statement's text then does not depend on how many values a
    read brings, so the driver prepares it once rather than once per length."""
    if postgres:
        return f"{column} = ANY({mark(list(values))}::text[])"
    return f"{column} IN ({', '.join(map(mark, values))})"


def stored_message_sql(
    by_source: Mapping[str, Sequence[str]], *, postgres: bool
) -> tuple[str, list[Any]]:
    """``stored_message_query`` for several sources in one statement (a branch each).

    Written out rather than built by the ORM: the worker runs it for every read, and
    building it cost more than running it.  Each branch is the ORM query's
    ``source = ? AND msgid IN (…)``, answered from the unique (source, msgid) index.
    """
    params: list[Any] = []
    mark = _marker(params, postgres=postgres)
    branches = []
    for source, msgids in sorted(by_source.items()):
        # Marked in the order the placeholders appear (SQLite's are positional).
        same_source = f'"source" = {mark(source)}'
        one_of = _one_of('"msgid"', msgids, mark, postgres=postgres)
        branches.append(
            'SELECT "source", "msgid" FROM "bot_message" '  # noqa: S608 - placeholders only
            f"WHERE {same_source} AND {one_of}"
        )
    return " UNION ALL ".join(branches), params


def stored_message_query(source: str, msgids: list[str]) -> Any:
    """The pre-check for one source: ``source = ? AND msgid IN (…)``.

    Filtering on the pair lets the database answer from the unique (source, msgid)
    index; ``msgid IN (…)`` alone cannot use it (source is its leading column).
    """
    return models.Message.filter(source=source, msgid__in=msgids)


async def stored_event_keys(*, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    rows = await models.Event.filter(event_key__in=keys).values_list("event_key", flat=True)
    return {str(k) for k in rows}


async def insert_event(*, conn: BaseDBAsyncClient, **values: Any) -> models.Event | None:
    return await _create_once(models.Event, conn=conn, **values)


async def upsert_group_chat(
    *,
    conn: BaseDBAsyncClient,
    chat_id: str,
    status: str | None = None,
    detail: dict[str, Any] | None = None,
) -> models.GroupChat:
    chat = await models.GroupChat.get_or_none(chat_id=chat_id, using_db=conn)
    if chat is None:
        chat = models.GroupChat(chat_id=chat_id)
    if status:
        chat.status = status
    if detail:
        chat.name = str(detail.get("name", chat.name) or "")[:255]
        chat.owner_userid = str(detail.get("owner", chat.owner_userid) or "")
        members = detail.get("member_list")
        if isinstance(members, list):
            chat.member_count = len(members)
    await chat.save(using_db=conn)
    return chat


async def open_review_cases(*, conn: BaseDBAsyncClient, rows: Sequence[Mapping[str, Any]]) -> None:
    """Open a review case per message (``message_id``, ``advisor_userid``, ``categories``,
    ``severity``), once per message: a message that has one keeps it."""
    await _insert_many(
        models.ReviewCase,
        conn=conn,
        rows=sorted(rows, key=lambda r: int(r["message_id"])),
        conflict=("message_id",),
    )


async def raise_alert(
    *,
    conn: BaseDBAsyncClient,
    idem_key: str,
    kind: str,
    recipient_userid: str | None,
    advisor_userid: str | None = None,
    external_userid: str | None = None,
    msgid: str | None = None,
    detail: dict[str, Any] | None = None,
) -> models.Alert | None:
    return await _create_once(
        models.Alert,
        conn=conn,
        idem_key=idem_key,
        kind=kind,
        recipient_userid=recipient_userid,
        advisor_userid=advisor_userid,
        external_userid=external_userid,
        msgid=msgid,
        detail=detail or {},
    )


async def raise_alerts(*, conn: BaseDBAsyncClient, rows: Sequence[Mapping[str, Any]]) -> None:
    """``raise_alert`` for many: each ``idem_key`` once, keys already raised skipped."""
    await _insert_many(
        models.Alert,
        conn=conn,
        rows=sorted(rows, key=lambda r: str(r["idem_key"])),
        conflict=("idem_key",),
    )


async def alerts_per_day(*, since: datetime) -> list[tuple[str, str, int]]:
    """``(day, kind, alerts)`` of the alerts raised from ``since`` on, a day being a
    calendar day in Asia/Shanghai (UTC+8 all year: China keeps no daylight saving).

    Counted in SQL over the (created_at, kind) index (migration 0013): a chart needs a
    number per day and kind, not every alert turned into an object.
    """
    conn = models.Alert._meta.db
    if conn.capabilities.dialect == "postgres":
        day, mark = "to_char(created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD')", "$1"
    else:
        # created_at is text with its UTC offset (…SS.ffffff+00:00). date() reads the
        # offset but rounds the fraction to milliseconds, which moves 23:59:59.9995 to
        # the next day: the whole seconds and the offset give the day exactly.
        day, mark = "date(substr(created_at, 1, 19) || substr(created_at, -6), '+8 hours')", "?"
    rows = await conn.execute_query_dict(
        f"SELECT {day} AS day, kind, COUNT(*) AS n FROM bot_alert "  # noqa: S608 - constants only
        f"WHERE created_at >= {mark} GROUP BY 1, 2",
        [since.astimezone(UTC)],
    )
    return [(str(r["day"]), str(r["kind"]), int(r["n"])) for r in rows]


async def enqueue_outbox(
    *,
    conn: BaseDBAsyncClient,
    idem_key: str,
    api: str,
    payload: dict[str, Any],
    secret_kind: str = "app",  # noqa: S107 - a kind name, not a secret
    not_before: datetime | None = None,
    origin: str,
) -> models.OutboxItem | None:
    """Add a WeCom write to the outbox once per business key (``bot.outbox.enqueue``)."""
    return await _create_once(
        models.OutboxItem,
        conn=conn,
        idem_key=idem_key,
        api=api,
        payload=payload,
        secret_kind=secret_kind,
        next_attempt_at=not_before or now(),
        origin=origin,
    )


async def enqueue_outbox_many(
    *, conn: BaseDBAsyncClient, rows: Sequence[Mapping[str, Any]]
) -> None:
    """``enqueue_outbox`` for many rows (``payload_sealed`` included): each ``idem_key`` once.

    A key already queued is skipped, and keeps what it has (its sealed payload too).
    """
    at = now()
    await _insert_many(
        models.OutboxItem,
        conn=conn,
        rows=[{"next_attempt_at": at, **r} for r in sorted(rows, key=lambda r: str(r["idem_key"]))],
        conflict=("idem_key",),
    )


async def seal_outbox_payload(
    *, conn: BaseDBAsyncClient, idem_key: str, payload_sealed: str
) -> None:
    """Attach the sealed payload to a row just queued (same transaction as the insert)."""
    await (
        models.OutboxItem.filter(idem_key=idem_key, payload_sealed__isnull=True)
        .using_db(conn)
        .update(payload_sealed=payload_sealed)
    )


async def due_outbox_ids(*, at: datetime, limit: int) -> list[int]:
    """Rows to try now: pending and due (oldest first), then sending with a lapsed lease.

    Both filters lead with ``state`` so the (state, next_attempt_at) and (state,
    lease_until) indexes answer them without reading settled rows.
    """
    pending = await due_outbox_query(at=at, limit=limit)
    stale = await stale_outbox_query(at=at, limit=limit)
    return [int(str(i)) for i in [*pending, *stale]]


def due_outbox_query(*, at: datetime, limit: int) -> Any:
    return (
        models.OutboxItem.filter(state=OutboxState.PENDING, next_attempt_at__lte=at)
        .order_by("next_attempt_at")
        .limit(limit)
        .values_list("id", flat=True)
    )


def stale_outbox_query(*, at: datetime, limit: int) -> Any:
    return (
        models.OutboxItem.filter(state=OutboxState.SENDING, lease_until__lt=at)
        .limit(limit)
        .values_list("id", flat=True)
    )


def open_dead_letters_query() -> Any:
    return models.DeadLetter.filter(status="open")


def new_claim_token() -> str:
    return secrets.token_hex(16)


async def claim_outbox(
    *, item_id: int, lease: timedelta, at: datetime | None = None
) -> models.OutboxItem | None:
    """Claim a due row with a conditional UPDATE: exactly one dispatcher wins.

    The lease runs from the moment of the claim (``at``, now by default), never from
    an earlier time such as the start of the dispatcher's round: a row claimed late
    in a long round would otherwise start with a lapsed lease, and a second
    dispatcher would claim and send it as well.

    A row whose lease lapsed is claimed again only when no request of it may have
    reached WeCom (``request_at`` unset: its dispatcher died before sending); one
    that may have is for :func:`take_over_outbox` or :func:`mark_outbox_in_doubt`.
    """
    at = at or now()
    token = new_claim_token()
    updated = await models.OutboxItem.filter(
        Q(id=item_id)
        & (
            Q(state=OutboxState.PENDING, next_attempt_at__lte=at)
            | Q(state=OutboxState.SENDING, lease_until__lt=at, request_at__isnull=True)
        )
    ).update(
        state=OutboxState.SENDING,
        lease_until=at + lease,
        claim=token,
        attempts=F("attempts") + 1,
        updated_at=at,
    )
    if not updated:
        return None
    return await models.OutboxItem.get_or_none(id=item_id, claim=token)


async def stale_outbox_in_doubt(*, item_id: int, at: datetime) -> models.OutboxItem | None:
    """The row, if its lease lapsed while a request of it may have reached WeCom."""
    return await models.OutboxItem.get_or_none(
        id=item_id, state=OutboxState.SENDING, lease_until__lt=at, request_at__isnull=False
    )


def _same_claim(claim: str | None) -> Q:
    return Q(claim=claim) if claim is not None else Q(claim__isnull=True)


async def take_over_outbox(
    *, stale: models.OutboxItem, lease: timedelta, at: datetime | None = None
) -> models.OutboxItem | None:
    """Claim a lapsed row whose request may have reached WeCom, the caller having
    judged a resend safe (``bot.outbox.resend_is_safe``).

    Conditional on the claim the caller read, so the judgement holds for the row as
    it still is; ``request_at`` is kept (the resend's window counts from the first).
    """
    at = at or now()
    token = new_claim_token()
    updated = await models.OutboxItem.filter(
        Q(id=stale.id, state=OutboxState.SENDING, lease_until__lt=at) & _same_claim(stale.claim)
    ).update(lease_until=at + lease, claim=token, attempts=F("attempts") + 1, updated_at=at)
    if not updated:
        return None
    return await models.OutboxItem.get_or_none(id=stale.id, claim=token)


async def mark_outbox_in_doubt(*, stale: models.OutboxItem, at: datetime | None = None) -> bool:
    """Leave a lapsed row that may have been sent, and must not be resent, for an operator.

    The claim is kept: if its dispatcher was only slow, its answer still settles
    the row (nobody else sent it); an operator's retry or discard clears it.
    """
    at = at or now()
    n = await models.OutboxItem.filter(
        Q(id=stale.id, state=OutboxState.SENDING, lease_until__lt=at) & _same_claim(stale.claim)
    ).update(
        state=OutboxState.UNKNOWN,
        lease_until=None,
        last_errcode=None,
        last_error="lease lapsed while a request may have reached WeCom: check WeCom, "
        "then retry or discard",
        updated_at=at,
    )
    return bool(n)


async def renew_outbox_lease(
    *, item: models.OutboxItem, lease: timedelta, at: datetime | None = None
) -> bool:
    """Extend the lease of a row still owned; False when it was taken over or settled."""
    at = at or now()
    until = at + lease
    n = await models.OutboxItem.filter(
        id=item.id, claim=item.claim, state=OutboxState.SENDING
    ).update(lease_until=until, updated_at=at)
    if n:
        item.lease_until = until
    return bool(n)


async def mark_outbox_request(
    *, item: models.OutboxItem, lease: timedelta, at: datetime | None = None
) -> bool:
    """Record, just before the request leaves, that it may reach WeCom (and renew the lease).

    The last fence before the network: False means another dispatcher owns the row
    now, and the request must not be sent.
    """
    at = at or now()
    request_at = item.request_at or at
    n = await models.OutboxItem.filter(
        id=item.id, claim=item.claim, state=OutboxState.SENDING
    ).update(request_at=request_at, lease_until=at + lease, updated_at=at)
    if n:
        item.request_at = request_at
    return bool(n)


TERMINAL_OUTBOX_STATES = (OutboxState.DONE, OutboxState.FAILED, OutboxState.CANCELLED)


async def finish_outbox(
    *,
    item: models.OutboxItem,
    state: OutboxState,
    result: dict[str, Any] | None = None,
    errcode: int | None = None,
    error: str = "",
    retry_at: datetime | None = None,
    notify: bool = False,
    request_at: datetime | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> bool:
    """Record an attempt's outcome, only while ``item.claim`` still owns the row.

    ``UPDATE … WHERE id = ? AND claim = ?``: a dispatcher whose lease lapsed and whose
    row another dispatcher took over (or an operator retried) changes nothing and
    gets False.  ``notify``: an on-settled callback is still owed.  ``request_at``:
    since when a request may have reached WeCom unanswered, None once WeCom answered.
    """
    at = now()
    values: dict[str, Any] = {
        "state": state,
        "lease_until": None,
        "claim": None,
        "request_at": request_at,
        "last_errcode": errcode,
        "last_error": error[:512],
        "updated_at": at,
    }
    if result is not None:
        values["result"] = result
    if state == OutboxState.DONE:
        values["done_at"] = at
    if state in TERMINAL_OUTBOX_STATES:
        values["settled_at"] = at
        values["notify_pending"] = notify
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    query = models.OutboxItem.filter(
        id=item.id,
        claim=item.claim,
        state__in=(OutboxState.SENDING, OutboxState.UNKNOWN),
    )
    n = await (query.using_db(conn) if conn is not None else query).update(**values)
    if not n:
        return False
    for name, value in values.items():
        setattr(item, name, value)
    return True


async def outbox_needing_notify(*, limit: int) -> list[models.OutboxItem]:
    return await models.OutboxItem.filter(notify_pending=True).order_by("id").limit(limit)


async def mark_outbox_notified(*, conn: BaseDBAsyncClient, item_id: int) -> bool:
    """Clear ``notify_pending`` once; False when another dispatcher already did."""
    n = (
        await models.OutboxItem.filter(id=item_id, notify_pending=True)
        .using_db(conn)
        .update(notify_pending=False)
    )
    return bool(n)


async def outbox_counts() -> dict[str, int]:
    """Rows per state, every state named (0 when none): a gauge must fall back to 0."""
    from tortoise.functions import Count

    rows = await models.OutboxItem.annotate(n=Count("id")).group_by("state").values("state", "n")
    return {s.value: 0 for s in OutboxState} | {str(r["state"]): int(r["n"]) for r in rows}


async def add_dead_letter(
    *,
    stream_id: str,
    source: str,
    dedup_key: str,
    payload_sealed: str,
    error: str,
    deliveries: int,
) -> None:
    try:
        await models.DeadLetter.create(
            stream_id=stream_id,
            source=source,
            dedup_key=dedup_key,
            payload_sealed=payload_sealed,
            error=error[:1024],
            deliveries=deliveries,
        )
    except IntegrityError:
        pass


async def dead_letters(
    *, status: str = "open", since: datetime | None = None
) -> list[models.DeadLetter]:
    q = models.DeadLetter.filter(status=status)
    if since is not None:
        q = q.filter(created_at__gte=since)
    return await q.order_by("id")


async def get_dead_letter(*, dead_letter_id: int) -> models.DeadLetter:
    return await models.DeadLetter.get(id=dead_letter_id)


async def mark_dead_letter(*, dead_letter: models.DeadLetter, status: str) -> None:
    dead_letter.status = status
    await dead_letter.save(update_fields=["status", "updated_at"])


async def recent_outbox(*, state: str | None, limit: int) -> list[models.OutboxItem]:
    q = models.OutboxItem.all().order_by("-id").limit(limit)
    if state:
        q = q.filter(state=state)
    return await q


async def count_outbox(*, state: str | None) -> int:
    q = models.OutboxItem.all()
    if state:
        q = q.filter(state=state)
    return await q.count()


async def outbox_items(*, ids: list[int]) -> dict[int, models.OutboxItem]:
    rows = await models.OutboxItem.filter(id__in=ids)
    return {int(r.id): r for r in rows}


# What an operator may do with a row in each state.  A row in flight (sending) is
# left to its dispatcher; a sent one is never sent again from here.
OPERATOR_RETRYABLE = (OutboxState.FAILED, OutboxState.UNKNOWN)
OPERATOR_DISCARDABLE = (OutboxState.PENDING, OutboxState.FAILED, OutboxState.UNKNOWN)


async def retry_outbox(
    *, item_id: int, at: datetime | None = None, conn: BaseDBAsyncClient | None = None
) -> bool:
    """Queue a failed or in-doubt row again, now, with a fresh attempt budget.

    Conditional on the state, so retrying twice (or while a dispatcher already took
    the row) queues it once.  The claim is cleared: a dispatcher still waiting for
    an old answer changes nothing when it comes.  An on-settled callback still owed
    for the old outcome is dropped: the row will settle again and be notified then.
    """
    at = at or now()
    rows = models.OutboxItem.filter(id=item_id, state__in=OPERATOR_RETRYABLE)
    n = await (rows.using_db(conn) if conn else rows).update(
        state=OutboxState.PENDING,
        next_attempt_at=at,
        attempts=0,
        claim=None,
        lease_until=None,
        request_at=None,
        settled_at=None,
        notify_pending=False,
        updated_at=at,
    )
    return bool(n)


async def discard_outbox(
    *,
    item_id: int,
    reason: str,
    at: datetime | None = None,
    conn: BaseDBAsyncClient | None = None,
) -> bool:
    """Cancel a row that is not in flight or sent, keeping it with the operator's reason.

    The on-settled callback learns "cancelled" (the dispatcher clears the flag
    where no callback is registered for the row's origin).
    """
    at = at or now()
    rows = models.OutboxItem.filter(id=item_id, state__in=OPERATOR_DISCARDABLE)
    n = await (rows.using_db(conn) if conn else rows).update(
        state=OutboxState.CANCELLED,
        claim=None,
        lease_until=None,
        last_error=reason[:512],
        settled_at=at,
        notify_pending=True,
        updated_at=at,
    )
    return bool(n)


async def open_dead_letters() -> int:
    return int(await open_dead_letters_query().count())


async def console_counts() -> dict[str, int]:
    """Stored messages, those with violations, open review cases, open dead letters."""
    return {
        "messages": await models.Message.all().count(),
        "violations": await models.Message.filter(has_violation=True).count(),
        "open_cases": await models.ReviewCase.filter(status="open").count(),
        "dead_letters": await open_dead_letters(),
    }


async def archive_cursor(*, name: str) -> int:
    cur = await models.ArchiveCursor.get_or_none(name=name)
    return int(cur.seq) if cur else 0


@dataclass(frozen=True)
class ArchiveLease:
    """One pull's hold on the archive cursor: where it stood, and the claim's fence."""

    seq: int
    fence: int


async def claim_archive_cursor(*, name: str) -> ArchiveLease:
    """Claim the cursor for one pull: increment its fencing token, then read it.

    Compare-and-set on the token, so two pullers (a Redis lock that expired while its
    holder was still pulling) never hold the same one; the later claim wins, and the
    earlier holder's next :func:`advance_archive_cursor` is refused.
    """
    for _ in range(20):
        cur = await models.ArchiveCursor.get_or_none(name=name)
        if cur is None:
            with contextlib.suppress(IntegrityError):  # a concurrent claim created it
                await models.ArchiveCursor.create(name=name, seq=0, fence=0)
            continue
        claimed = await models.ArchiveCursor.filter(id=cur.id, fence=cur.fence).update(
            fence=cur.fence + 1, updated_at=now()
        )
        if claimed:
            # Read after claiming: a former holder may have moved it until then.
            fresh = await models.ArchiveCursor.get(id=cur.id)
            return ArchiveLease(seq=int(fresh.seq), fence=int(cur.fence) + 1)
    raise RuntimeError(f"archive cursor {name!r}: could not claim it (contended)")


async def advance_archive_cursor(*, name: str, seq: int, fence: int | None = None) -> bool:
    """Move the cursor forward to ``seq`` — never back — in one conditional UPDATE.

    With ``fence``, only while that claim is the latest: False means another puller
    claimed the cursor since, and the caller must stop pulling.
    """
    q = models.ArchiveCursor.filter(name=name)
    if fence is not None:
        q = q.filter(fence=fence)
    if await q.filter(seq__lt=seq).update(seq=seq, updated_at=now()):
        return True
    cur = await models.ArchiveCursor.get_or_none(name=name)
    if cur is None:
        if fence is not None:
            return False  # a claim creates the row: without one there is no claim to honour
        try:
            await models.ArchiveCursor.create(name=name, seq=seq)
            return True
        except IntegrityError:  # created concurrently: move it forward instead
            return await advance_archive_cursor(name=name, seq=seq)
    # Already at or past seq: fine under our own claim, refused under a newer one.
    return fence is None or int(cur.fence) == fence


# Dead letters of archive records that could not be decrypted (still under WeCom's
# encryption, sealed with the field key).  An operator asks for them to be decrypted
# again once the key is fixed; the puller, which holds the finance SDK and the
# private keys, does it.  status: open → redecrypt (asked) → requeued | open again.
ARCHIVE_RAW = "archive_raw"


async def request_archive_redecrypt(*, ids: list[int] | None = None) -> list[int]:
    """Mark open undecryptable-archive dead letters (all, or these ids) for the puller."""
    q = models.DeadLetter.filter(source=ARCHIVE_RAW, status="open")
    if ids is not None:
        q = q.filter(id__in=ids)
    wanted = [int(dl.id) for dl in await q.order_by("id").only("id")]
    if wanted:
        await models.DeadLetter.filter(id__in=wanted, status="open").update(
            status="redecrypt", updated_at=now()
        )
    return wanted


async def dead_letters_by_id(*, ids: list[int]) -> dict[int, models.DeadLetter]:
    return {int(dl.id): dl for dl in await models.DeadLetter.filter(id__in=ids)}


async def archive_redecrypt_requests(*, limit: int = 1000) -> list[models.DeadLetter]:
    return (
        await models.DeadLetter.filter(source=ARCHIVE_RAW, status="redecrypt")
        .order_by("id")
        .limit(limit)
    )


async def settle_archive_redecrypt(*, dead_letter_id: int, ok: bool, error: str = "") -> bool:
    """Requeued when decrypted and queued; open again (with the new error) when not."""
    values: dict[str, Any] = {"status": "requeued" if ok else "open", "updated_at": now()}
    if not ok:
        values["error"] = error[:1024]
    n = await models.DeadLetter.filter(id=dead_letter_id, status="redecrypt").update(**values)
    return bool(n)


async def customers_needing_sync(*, limit: int) -> list[str]:
    rows = (
        await models.Customer.filter(needs_sync=True)
        .limit(limit)
        .values_list("external_userid", flat=True)
    )
    return [str(r) for r in rows]


async def export_customer(*, conn: BaseDBAsyncClient, external_userid: str) -> dict[str, Any]:
    """One customer's rows in the edge's tables, for a PIPL access request (art. 45).

    Message text is the masked text as stored; sealed originals stay sealed (an
    authorised reviewer opens them through the audited console, not an export).
    """
    customer = await models.Customer.get_or_none(external_userid=external_userid, using_db=conn)
    if customer is None:
        return {}
    follows = (
        await models.FollowRelation.filter(customer_id=customer.id)
        .using_db(conn)
        .prefetch_related("advisor")
    )
    messages = await models.Message.filter(customer_id=customer.id).using_db(conn).order_by("id")
    alerts = await models.Alert.filter(external_userid=external_userid).using_db(conn)
    return {
        "customer": [
            {
                "external_userid": customer.external_userid,
                "unionid": customer.unionid,
                "name": customer.name,
                "corp_name": customer.corp_name,
                "gender": customer.gender,
                "attributes": customer.attributes,
                "created_at": customer.created_at.isoformat(),
            }
        ],
        "follow_relations": [
            {
                "advisor": f.advisor.userid,
                "status": f.status.value,
                "remark": f.remark,
                "description": f.description,
                "state": f.state,
                "added_at": f.added_at.isoformat() if f.added_at else None,
            }
            for f in follows
        ],
        "messages": [
            {
                "msgid": m.msgid,
                "source": m.source,
                "direction": m.direction,
                "msgtime": m.msgtime.isoformat(),
                "msgtype": m.msgtype,
                "masked_text": m.masked_text,
                "intent": m.intent,
                "sentiment": m.sentiment,
            }
            for m in messages
        ],
        "alerts": [
            {"kind": a.kind, "advisor": a.advisor_userid, "created_at": a.created_at.isoformat()}
            for a in alerts
        ],
    }


async def field_key_checks() -> dict[str, str]:
    """``key id → key_check`` of every field key the data was sealed with."""
    rows = await models.FieldKey.all().values_list("key_id", "key_check")
    return {str(k): str(c) for k, c in rows}


async def record_field_key(*, key_id: str, key_check: str) -> str:
    """Record a key id once; the check stored for it (another process's if it was first)."""
    async with in_transaction() as conn:
        row = await _create_once(models.FieldKey, conn=conn, key_id=key_id, key_check=key_check)
    if row is not None:
        return key_check
    return str((await models.FieldKey.get(key_id=key_id)).key_check)


async def newest_sealed_message() -> tuple[str, str, str] | None:
    """(source, msgid, original_sealed) of the newest message with a sealed original."""
    row = (
        await models.Message.filter(original_sealed__isnull=False)
        .order_by("-id")
        .first()
        .values_list("source", "msgid", "original_sealed")
    )
    if not row:
        return None
    source, msgid, sealed = row
    return str(source), str(msgid), str(sealed)


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A stored message as conversation context: who spoke, masked text, when."""

    roomid: str | None
    advisor_userid: str | None
    external_userid: str | None
    sender_role: str
    masked_text: str
    msgtime: datetime


def conversation_turns_query(
    *,
    rooms: set[str],
    pairs: set[tuple[str, str]],
    since: datetime,
    until: datetime,
) -> Any:
    """The query behind ``conversation_turns`` (``bench/precheck_plan.py`` prints its plan)."""
    where = Q()
    if rooms:
        where |= Q(roomid__in=sorted(rooms))
    if pairs:
        where |= Q(
            roomid__isnull=True,
            advisor__userid__in=sorted({a for a, _ in pairs}),
            customer__external_userid__in=sorted({c for _, c in pairs}),
        )
    return (
        models.Message.filter(where, msgtime__gte=since, msgtime__lt=until)
        .exclude(masked_text="")
        .order_by("msgtime", "id")
        .values(
            "roomid",
            "advisor__userid",
            "customer__external_userid",
            "sender_role",
            "masked_text",
            "msgtime",
        )
    )


def conversation_turns_sql(
    *,
    rooms: set[str],
    pairs: set[tuple[str, str]],
    since: datetime,
    until: datetime,
    postgres: bool,
) -> tuple[str, list[Any]]:
    """``conversation_turns_query`` written out, as the worker runs it for every read.

    The same rows in the same order as the ORM's query (a test holds them to the same
    rows); the ORM spent milliseconds building it for a read's 64 pairs.  Times are bound
    as the model's field sends them, so SQLite compares the stored text.

    A branch per kind of conversation, each starting from what the read names: a group
    chat's lines by the (roomid, msgtime) index, a one-to-one chat's from its customer
    by the (customer_id, msgtime) index.  The one OR over the joined tables was answered
    on PostgreSQL by walking every one-to-one line of the window by (roomid, msgtime)
    and joining each to its advisor and customer — a cost that grew with the lines stored
    that day (21 ms a read at 3,000 lines, most of PostgreSQL's CPU in
    ``bench/pipeline.py``).  There the customer's lines are a ``LATERAL`` subquery the
    planner cannot flatten (``OFFSET 0``), so they are reached by ``customer_id`` whatever
    the table's statistics say (a fresh table has none; ~0.5 ms).
    """
    if not postgres:
        return _conversation_turns_sqlite(rooms=rooms, pairs=pairs, since=since, until=until)
    msgtime = models.Message._meta.fields_map["msgtime"]
    params: list[Any] = []
    mark = _marker(params, postgres=True)
    low = mark(msgtime.to_db_value(since, models.Message))
    high = mark(msgtime.to_db_value(until, models.Message))
    no_text = mark("")
    window = f'm."msgtime" >= {low} AND m."msgtime" < {high} AND m."masked_text" <> {no_text}'
    columns = (
        'm."roomid" AS "roomid", a."userid" AS "advisor_userid", '
        'c."external_userid" AS "external_userid", m."sender_role" AS "sender_role", '
        'm."masked_text" AS "masked_text", m."msgtime" AS "msgtime", m."id" AS "id"'
    )
    # Identifiers and placeholders only: every value is bound.
    branches = []
    if rooms:
        in_rooms = _one_of('m."roomid"', sorted(rooms), mark, postgres=True)
        branches.append(
            f'SELECT {columns} FROM "bot_message" m '  # noqa: S608
            'LEFT OUTER JOIN "bot_advisor" a ON a."id" = m."advisor_id" '
            'LEFT OUTER JOIN "bot_customer" c ON c."id" = m."customer_id" '
            f"WHERE {in_rooms} AND {window}"
        )
    if pairs:
        customers = _one_of(
            'c."external_userid"', sorted({c for _, c in pairs}), mark, postgres=True
        )
        advisors = _one_of('a."userid"', sorted({a for a, _ in pairs}), mark, postgres=True)
        branches.append(
            f'SELECT {columns} FROM "bot_customer" c CROSS JOIN LATERAL ('  # noqa: S608
            'SELECT * FROM "bot_message" m WHERE m."customer_id" = c."id" '
            f'AND m."roomid" IS NULL AND {window} OFFSET 0) m '
            'JOIN "bot_advisor" a ON a."id" = m."advisor_id" '
            f"WHERE {customers} AND {advisors}"
        )
    return " UNION ALL ".join(branches) + ' ORDER BY "msgtime", "id"', params


def _conversation_turns_sqlite(
    *, rooms: set[str], pairs: set[tuple[str, str]], since: datetime, until: datetime
) -> tuple[str, list[Any]]:
    """``conversation_turns_sql`` on SQLite: a branch per kind of conversation, each
    starting from what the read names.

    The one OR over the joined tables was answered by walking every one-to-one line of
    the window ((roomid, msgtime) index, roomid IS NULL) and joining each: its cost grew
    with the lines stored that day (1.4 → 8.4 ms a read of 128 lines at 1,000 → 6,000
    lines).  Here a group chat's lines come by the (roomid, msgtime) index, and a
    one-to-one chat's from its customer — ``CROSS JOIN`` keeps the customers outside
    (SQLite's planner never reorders it), found by the unique index — by the
    (customer_id, msgtime) index: ~0.2–0.6 ms whatever the day's lines.  Same rows,
    same order.
    """
    msgtime = models.Message._meta.fields_map["msgtime"]
    params: list[Any] = []
    mark = _marker(params, postgres=False)

    def in_window() -> str:  # marked where it stands in the text: placeholders are positional
        low = mark(msgtime.to_db_value(since, models.Message))
        high = mark(msgtime.to_db_value(until, models.Message))
        return f'm."msgtime" >= {low} AND m."msgtime" < {high} AND m."masked_text" <> {mark("")}'

    columns = (
        'm."roomid" AS "roomid", a."userid" AS "advisor_userid", '
        'c."external_userid" AS "external_userid", m."sender_role" AS "sender_role", '
        'm."masked_text" AS "masked_text", m."msgtime" AS "msgtime", m."id" AS "id"'
    )
    # Identifiers and placeholders only: every value is bound.
    branches = []
    if rooms:
        in_rooms = _one_of('m."roomid"', sorted(rooms), mark, postgres=False)
        branches.append(
            f'SELECT {columns} FROM "bot_message" m '  # noqa: S608
            'LEFT OUTER JOIN "bot_advisor" a ON a."id" = m."advisor_id" '
            'LEFT OUTER JOIN "bot_customer" c ON c."id" = m."customer_id" '
            f"WHERE {in_rooms} AND {in_window()}"
        )
    if pairs:
        customers = _one_of(
            'c."external_userid"', sorted({c for _, c in pairs}), mark, postgres=False
        )
        window = in_window()
        advisors = _one_of('a."userid"', sorted({a for a, _ in pairs}), mark, postgres=False)
        branches.append(
            f'SELECT {columns} FROM "bot_customer" c CROSS JOIN "bot_message" m '  # noqa: S608
            'JOIN "bot_advisor" a ON a."id" = m."advisor_id" '
            f'WHERE {customers} AND m."customer_id" = c."id" AND m."roomid" IS NULL '
            f"AND {window} AND {advisors}"
        )
    return " UNION ALL ".join(branches) + ' ORDER BY "msgtime", "id"', params


async def conversation_turns(
    *,
    rooms: set[str],
    pairs: set[tuple[str, str]],
    since: datetime,
    until: datetime,
) -> list[StoredTurn]:
    """Stored text messages of these conversations in ``[since, until)``, oldest first.

    A conversation is a group chat (``rooms``) or an advisor–customer pair (``pairs`` of
    userid, external_userid). One query for a whole batch: the pipeline judges each
    advisor line with what was said before it.
    """
    if not rooms and not pairs:
        return []
    conn = models.Message._meta.db
    sql, params = conversation_turns_sql(
        rooms=rooms,
        pairs=pairs,
        since=since,
        until=until,
        postgres=conn.capabilities.dialect == "postgres",
    )
    msgtime = models.Message._meta.fields_map["msgtime"]
    out = []
    for r in await conn.execute_query_dict(sql, params):
        turn = StoredTurn(
            roomid=r["roomid"],
            advisor_userid=r["advisor_userid"],
            external_userid=r["external_userid"],
            sender_role=str(r["sender_role"]),
            masked_text=str(r["masked_text"]),
            msgtime=msgtime.to_python_value(r["msgtime"]),
        )
        if turn.roomid is None and (turn.advisor_userid, turn.external_userid) not in pairs:
            continue  # the IN lists cross advisors with customers they never chatted with
        out.append(turn)
    return out


async def events_unsealed(*, after_id: int, limit: int) -> list[models.Event]:
    """Known events stored before their fields were split (``fields_sealed`` unset)."""
    return (
        await models.Event.filter(id__gt=after_id, kind="event", fields_sealed__isnull=True)
        .order_by("id")
        .limit(limit)
    )


async def seal_event_fields(
    *, event_id: int, fields_json: dict[str, Any], fields_sealed: str
) -> int:
    """Replace an event's fields by their clear part and the sealed rest, once."""
    return int(
        await models.Event.filter(id=event_id, fields_sealed__isnull=True).update(
            fields_json=fields_json, fields_sealed=fields_sealed, updated_at=now()
        )
    )


async def follows_unsealed(*, after_id: int, limit: int) -> list[models.FollowRelation]:
    """Follow relations whose remark or description has text but no sealed original."""
    from tortoise.expressions import Q

    return (
        await models.FollowRelation.filter(
            Q(id__gt=after_id)
            & (
                Q(remark_sealed__isnull=True, remark__not="")
                | Q(description_sealed__isnull=True, description__not="")
            )
        )
        .order_by("id")
        .limit(limit)
        .prefetch_related("customer", "advisor")
    )


async def seal_follow_text(
    *,
    relation_id: int,
    masked: Mapping[str, str],
    originals_sealed: Mapping[str, str | None],
) -> int:
    """Store the masked remark/description and their sealed originals, once."""
    values: dict[str, Any] = {"updated_at": now()}
    for name in ("remark", "description"):
        values[name] = masked[name]
        values[f"{name}_sealed"] = originals_sealed.get(name)
    return int(
        await models.FollowRelation.filter(
            id=relation_id, remark_sealed__isnull=True, description_sealed__isnull=True
        ).update(**values)
    )


# ------------------------------------------------------------------ review cases
# The compliance review workflow (admin's pages and CLI) reads and decides bot's
# ReviewCase rows only through these functions.

# Every status a case can be in; a decision moves it out of ``open``. ``escalated``
# stays undecided (a senior reviewer decides it later), the other two are final.
REVIEW_STATUSES = ("open", "escalated", "confirmed", "false_positive")
REVIEW_DECISIONS = ("confirmed", "false_positive", "escalated")
REVIEW_UNDECIDED = ("open", "escalated")

# Category names are compliance_nlp's taxonomy (lower-case words): checked before
# they are written into the JSON-membership SQL below, so nothing else can be.
_CATEGORY_NAME = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True, slots=True)
class ReviewFilter:
    """What the review queue shows; an empty field does not filter."""

    statuses: tuple[str, ...] = ()
    category: str = ""
    severity: str = ""
    advisor_userid: str = ""
    # The advisors whose WeCom direct_leader (Advisor.manager_userid) is this userid.
    team_leader: str = ""
    # When the case was opened: [since, until).
    since: datetime | None = None
    until: datetime | None = None
    # Only these advisors' cases (an advisor's or a team lead's reach); None = all.
    advisors: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class AdvisorInfo:
    userid: str
    name: str
    department: str
    manager_userid: str


@dataclass(frozen=True, slots=True)
class ReviewFacets:
    """How many cases each filter value would show, given the other filters."""

    status: dict[str, int]
    severity: dict[str, int]
    category: dict[str, int]
    advisor: dict[str, int]
    team: dict[str, int]


def _has_category(category: str) -> Any:
    from tortoise import Tortoise
    from tortoise.expressions import RawSQL

    if not _CATEGORY_NAME.match(category):
        raise ValueError(f"not a category name: {category!r}")
    column = '"bot_review_case"."categories"'
    if Tortoise.get_connection("default").capabilities.dialect == "postgres":
        return RawSQL(f"jsonb_exists({column}, '{category}')")
    # A checked category name (above) and a constant column: nothing user-typed.
    return RawSQL(f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = '{category}')")  # noqa: S608


async def _team_members(leader: str) -> list[str]:
    rows = await models.Advisor.filter(manager_userid=leader).values_list("userid", flat=True)
    return [str(r) for r in rows]


async def _review_query(where: ReviewFilter, *, without: str = "") -> Any:
    """The cases ``where`` selects, ignoring the facet named by ``without``."""
    q = models.ReviewCase.all()
    if where.statuses and without != "status":
        q = q.filter(status__in=list(where.statuses))
    if where.severity and without != "severity":
        q = q.filter(severity=where.severity)
    if where.advisor_userid and without != "advisor":
        q = q.filter(advisor_userid=where.advisor_userid)
    if where.team_leader and without != "team":
        q = q.filter(advisor_userid__in=await _team_members(where.team_leader))
    if where.since is not None:
        q = q.filter(created_at__gte=where.since)
    if where.until is not None:
        q = q.filter(created_at__lt=where.until)
    if where.advisors is not None:
        q = q.filter(advisor_userid__in=sorted(where.advisors))
    if where.category and without != "category":
        q = q.annotate(_in_category=_has_category(where.category)).filter(_in_category=True)
    return q


async def review_cases(
    *, where: ReviewFilter, offset: int = 0, limit: int = 50
) -> tuple[list[models.ReviewCase], int]:
    """One page of the queue, oldest first (the SLA runs from opening), and the total."""
    q = await _review_query(where)
    total = int(await q.count())
    rows = (
        await q.order_by("created_at", "id")
        .offset(offset)
        .limit(limit)
        .prefetch_related("message", "message__customer")
    )
    return list(rows), total


async def review_facets(*, where: ReviewFilter, categories: Iterable[str]) -> ReviewFacets:
    from tortoise.functions import Count

    async def grouped(column: str, facet: str) -> dict[str, int]:
        q = await _review_query(where, without=facet)
        rows = await q.annotate(n=Count("id")).group_by(column).values(column, "n")
        return {str(r[column]): int(r["n"]) for r in rows}

    by_category = {}
    for category in categories:
        q = await _review_query(replace(where, category=category))
        by_category[category] = int(await q.count())
    # Team counts: every advisor's cases under the team filter left out, summed by leader.
    q = await _review_query(where, without="team")
    rows = await q.annotate(n=Count("id")).group_by("advisor_userid").values("advisor_userid", "n")
    leaders = await advisors_by_userid(userids={str(r["advisor_userid"]) for r in rows})
    by_team: dict[str, int] = {}
    for r in rows:
        info = leaders.get(str(r["advisor_userid"]))
        if info is not None and info.manager_userid:
            by_team[info.manager_userid] = by_team.get(info.manager_userid, 0) + int(r["n"])
    return ReviewFacets(
        status=await grouped("status", "status"),
        severity=await grouped("severity", "severity"),
        category=by_category,
        advisor=await grouped("advisor_userid", "advisor"),
        team=by_team,
    )


async def advisors_by_userid(*, userids: Iterable[str]) -> dict[str, AdvisorInfo]:
    wanted = sorted(set(userids))
    if not wanted:
        return {}
    rows = await models.Advisor.filter(userid__in=wanted).values(
        "userid", "name", "department", "manager_userid"
    )
    return {
        str(r["userid"]): AdvisorInfo(
            userid=str(r["userid"]),
            name=str(r["name"] or ""),
            department=str(r["department"] or ""),
            manager_userid=str(r["manager_userid"] or ""),
        )
        for r in rows
    }


async def review_advisors(*, advisors: frozenset[str] | None = None) -> list[AdvisorInfo]:
    """Advisors with at least one case (the queue's advisor and team choices)."""
    q = models.ReviewCase.all()
    if advisors is not None:
        q = q.filter(advisor_userid__in=sorted(advisors))
    userids = await q.distinct().values_list("advisor_userid", flat=True)
    found = await advisors_by_userid(userids=[str(u) for u in userids])
    return sorted(
        (found.get(str(u)) or AdvisorInfo(str(u), "", "", "") for u in userids),
        key=lambda a: a.userid,
    )


async def team_advisors(*, leader_userid: str) -> frozenset[str]:
    """A team lead's reach: the advisors whose direct_leader they are, and themselves."""
    return frozenset([*await _team_members(leader_userid), leader_userid])


async def review_case(*, case_id: int) -> models.ReviewCase | None:
    return (
        await models.ReviewCase.filter(id=case_id)
        .prefetch_related("message", "message__customer", "message__advisor")
        .first()
    )


async def conversation_around(
    *, message: models.Message, before: int, after: int
) -> tuple[list[models.Message], list[models.Message]]:
    """Messages of the same conversation before and after ``message`` (both sides).

    A conversation is a group chat (roomid) or one advisor–customer pair, as the
    pipeline reads it when it gives an advisor line its context.
    """
    if message.roomid:
        same = Q(roomid=message.roomid)
    else:
        same = Q(
            roomid__isnull=True,
            advisor_id=message.advisor_id,  # type: ignore[attr-defined]
            customer_id=message.customer_id,  # type: ignore[attr-defined]
        )
    earlier = Q(msgtime__lt=message.msgtime) | Q(msgtime=message.msgtime, id__lt=message.id)
    later = Q(msgtime__gt=message.msgtime) | Q(msgtime=message.msgtime, id__gt=message.id)
    prior = await models.Message.filter(same & earlier).order_by("-msgtime", "-id").limit(before)
    following = await models.Message.filter(same & later).order_by("msgtime", "id").limit(after)
    return list(reversed(prior)), list(following)


@dataclass(frozen=True, slots=True)
class ConversationLine:
    """A message of a conversation as the case page draws it around the flagged one."""

    id: int
    sender_role: str
    sender_id: str
    msgtime: datetime
    msgtype: str
    masked_text: str


async def conversation_lines_around(
    *, message: models.Message, before: int, after: int
) -> tuple[list[ConversationLine], list[ConversationLine]]:
    """As ``conversation_around``, the columns a page draws only, written out as SQL: the
    same conditions and order (a test holds them to the same rows), without the ORM
    building two queries and a model per neighbour (a case page's fixed cost)."""
    conn = models.Message._meta.db
    postgres = conn.capabilities.dialect == "postgres"
    field = models.Message._meta.fields_map["msgtime"]
    at = field.to_db_value(message.msgtime, models.Message)

    async def side(earlier: bool, limit: int) -> list[ConversationLine]:
        if limit <= 0:
            return []
        params: list[Any] = []
        mark = _marker(params, postgres=postgres)
        if message.roomid:
            same = f'"roomid" = {mark(message.roomid)}'
        else:
            same = (
                f'"roomid" IS NULL AND "advisor_id" = {mark(message.advisor_id)} '  # type: ignore[attr-defined]
                f'AND "customer_id" = {mark(message.customer_id)}'  # type: ignore[attr-defined]
            )
        op, order = ("<", "DESC") if earlier else (">", "ASC")
        sql = (
            'SELECT "id", "sender_role", "sender_id", "msgtime", "msgtype", "masked_text" '  # noqa: S608 - identifiers and placeholders only
            f'FROM "bot_message" WHERE {same} AND ("msgtime" {op} {mark(at)} '
            f'OR ("msgtime" = {mark(at)} AND "id" {op} {mark(message.id)})) '
            f'ORDER BY "msgtime" {order}, "id" {order} LIMIT {mark(limit)}'
        )
        return [
            ConversationLine(
                id=int(r["id"]),
                sender_role=str(r["sender_role"]),
                sender_id=str(r["sender_id"]),
                msgtime=field.to_python_value(r["msgtime"]),
                msgtype=str(r["msgtype"]),
                masked_text=str(r["masked_text"] or ""),
            )
            for r in await conn.execute_query_dict(sql, params)
        ]

    prior = await side(True, before)
    return list(reversed(prior)), await side(False, after)


async def advisor_cases(
    *, advisor_userid: str, exclude_id: int, limit: int = 10
) -> list[models.ReviewCase]:
    """The advisor's other cases, newest first (a pattern matters to a reviewer)."""
    return list(
        await models.ReviewCase.filter(advisor_userid=advisor_userid)
        .exclude(id=exclude_id)
        .order_by("-created_at", "-id")
        .limit(limit)
    )


async def undecided_case_ids(*, conn: BaseDBAsyncClient, case_ids: Sequence[int]) -> list[int]:
    """Of ``case_ids``, those still open or escalated, locked for the decision (PostgreSQL)."""
    q = models.ReviewCase.filter(id__in=list(case_ids), status__in=REVIEW_UNDECIDED).using_db(conn)
    if conn.capabilities.dialect == "postgres":
        q = q.select_for_update()
    rows = await q.order_by("id").values_list("id", flat=True)
    return [int(str(i)) for i in rows]


async def assign_review_case(
    *, conn: BaseDBAsyncClient, case_id: int, assignee_id: int, assignee_name: str
) -> int:
    return int(
        await models.ReviewCase.filter(id=case_id)
        .using_db(conn)
        .update(assignee_id=assignee_id, assignee_name=assignee_name[:128], updated_at=now())
    )


async def decide_review_cases(
    *,
    conn: BaseDBAsyncClient,
    case_ids: Sequence[int],
    status: str,
    comment: str,
    decided_by: str,
    at: datetime,
) -> int:
    """Record a decision on undecided cases; a final one is never overwritten."""
    if status not in REVIEW_DECISIONS:
        raise ValueError(f"not a decision: {status!r}")
    return int(
        await models.ReviewCase.filter(id__in=list(case_ids), status__in=REVIEW_UNDECIDED)
        .using_db(conn)
        .update(
            status=status,
            decision_comment=comment,
            decided_by=decided_by[:128],
            decided_at=at,
            updated_at=at,
        )
    )


async def correct_review_case(
    *,
    conn: BaseDBAsyncClient,
    case_id: int,
    categories: Sequence[str],
    comment: str,
    corrected_by: str,
    at: datetime,
) -> int:
    """Record a confirmed case's corrected categories; only a confirmed case changes."""
    for category in categories:
        if not _CATEGORY_NAME.match(category):
            raise ValueError(f"not a category name: {category!r}")
    return int(
        await models.ReviewCase.filter(id=case_id, status="confirmed")
        .using_db(conn)
        .update(
            corrected_categories=list(categories),
            correction_comment=comment,
            corrected_by=corrected_by[:128],
            corrected_at=at,
            updated_at=at,
        )
    )


async def decided_cases(
    *, since: datetime, until: datetime | None, after_id: int = 0, limit: int = 500
) -> list[models.ReviewCase]:
    """Cases decided final — or their category corrected — in [since, until), by id
    (keyset pages for the label export: a correction re-exports the case's line)."""
    decided = Q(decided_at__gte=since)
    corrected = Q(corrected_at__gte=since)
    if until is not None:
        decided &= Q(decided_at__lt=until)
        corrected &= Q(corrected_at__lt=until)
    q = models.ReviewCase.filter(
        decided | corrected, id__gt=after_id, status__in=("confirmed", "false_positive")
    )
    return list(await q.order_by("id").limit(limit).prefetch_related("message"))


async def merge_customer_attributes(
    *,
    conn: BaseDBAsyncClient,
    customer_id: int,
    attributes: Mapping[str, Any],
    drop: Sequence[str] = (),
) -> bool:
    """Merge imported institution attributes into the customer's; True when any changed.

    Called by tagging's attribute import (already validated against its schema).  The
    row is locked first on PostgreSQL, so two imports touching one customer do not
    lose each other's fields; re-importing the same values changes nothing.  ``drop``
    removes keys (a sensitive value tagging has sealed elsewhere leaves the clear copy).
    """
    q = models.Customer.filter(id=customer_id).using_db(conn)
    if conn.capabilities.dialect == "postgres":
        q = q.select_for_update()
    customer = await q.first()
    if customer is None:
        return False
    current = dict(customer.attributes or {})
    merged = {**current, **attributes}
    for name in drop:
        merged.pop(name, None)
    if merged == current:
        return False
    customer.attributes = merged
    await customer.save(using_db=conn, update_fields=["attributes", "updated_at"])
    return True


# ------------------------------------------------------------------ the chat sidebar


async def group_chat_in_reach(*, chat_id: str, advisor_userid: str) -> models.GroupChat | None:
    """A customer group the advisor owns or has spoken in; None otherwise (same answer)."""
    chat = await models.GroupChat.get_or_none(chat_id=chat_id)
    if chat is None:
        return None
    if chat.owner_userid == advisor_userid:
        return chat
    spoke = await models.Message.filter(roomid=chat_id, sender_id=advisor_userid).exists()
    return chat if spoke else None


async def room_messages(*, roomid: str, limit: int) -> list[models.Message]:
    """A group chat's latest messages, newest first."""
    return list(await models.Message.filter(roomid=roomid).order_by("-msgtime", "-id").limit(limit))


async def message_id_by_key(*, source: str, msgid: str) -> int | None:
    found = await stored_message_query(source, [msgid]).values_list("id", flat=True)
    return int(found[0]) if found else None


async def case_of_message(*, conn: BaseDBAsyncClient, message_id: int) -> models.ReviewCase | None:
    return await models.ReviewCase.get_or_none(message_id=message_id, using_db=conn)
