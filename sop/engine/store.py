"""The engine's queries: bulk inserts of its own rows, and read-only lookups of the edge's.

The engine writes only sop's tables (enrolments, touches, opt-outs).  It reads a few
columns of the edge's customers, advisors and follow relations in bulk — millions of
rows for an audience snapshot — with plain SQL, as tagging's audience compiler does;
it never writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

__all__ = [
    "advisor_names",
    "conn",
    "customer_facts",
    "db_time",
    "dialect",
    "insert_rows",
    "placeholders",
    "primary_advisors",
    "relations_active",
]

_MAX_BIND_PARAMETERS = 30_000


def conn() -> BaseDBAsyncClient:
    return Tortoise.get_connection("default")


def dialect(c: BaseDBAsyncClient) -> str:
    return "postgres" if c.capabilities.dialect == "postgres" else "sqlite"


def placeholders(c: BaseDBAsyncClient, n: int, *, start: int = 0) -> str:
    if dialect(c) == "postgres":
        return ", ".join(f"${start + i + 1}" for i in range(n))
    return ", ".join("?" * n)


def _quoted(name: str) -> str:
    return f'"{name}"'


def db_time(model: type[Model], field: str, value: datetime) -> Any:
    """``value`` as the ORM stores ``model.field``, for raw statements comparing with it."""
    return model._meta.fields_map[field].to_db_value(value.astimezone(UTC), model)


async def insert_rows(
    c: BaseDBAsyncClient,
    model: type[Model],
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
    returning: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Multi-row ``INSERT … ON CONFLICT (conflict) DO NOTHING [RETURNING …]``.

    Values go through the model's fields (defaults, auto timestamps, conversions) as
    ``Model.create`` would send them, without building model instances — at a million
    rows the instances would cost more than the insert.  Rows are inserted in the order
    given; callers sort them by the unique key so concurrent inserts lock in one order.
    """
    if not rows:
        return []
    meta = model._meta
    present = {k for row in rows for k in row}
    fields = []
    for name in c.executor_class(model=model, db=c).regular_columns:
        field = meta.fields_map[name]
        auto = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        # Columns no row sets and whose default is NULL are left to the table's default:
        # fewer bound values per row (a touch has seven such columns when planned).
        if name in present or auto or field.default is not None:
            fields.append(name)
    columns = [meta.fields_db_projection[f] for f in fields]
    now = datetime.now(UTC)
    converters = []
    for name in fields:
        field = meta.fields_map[name]
        auto = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        converters.append((name, field, auto))
    # A batch repeats a few datetimes (one entry time, one due time per step): each is
    # converted once.
    seen: dict[tuple[str, datetime], Any] = {}

    def values_of(row: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, field, auto in converters:
            if name in row and not (auto and row[name] is None):
                value = row[name]
            elif auto:
                value = now
            else:
                value = field.default() if callable(field.default) else field.default
            if isinstance(value, datetime):
                key = (name, value)
                if key not in seen:
                    seen[key] = field.to_db_value(value, model)
                out.append(seen[key])
            else:
                out.append(field.to_db_value(value, model))
        return out

    table = _quoted(meta.db_table)
    names = ", ".join(map(_quoted, columns))
    keys = ", ".join(_quoted(meta.fields_db_projection.get(k, k)) for k in conflict)
    n = len(columns)
    if not returning:
        # One prepared statement, many rows: the drivers' executemany is the fastest
        # plain insert both on SQLite and on PostgreSQL.
        sql = (
            f"INSERT INTO {table} ({names}) VALUES ({placeholders(c, n)}) "  # noqa: S608 - model identifiers
            f"ON CONFLICT ({keys}) DO NOTHING"
        )
        await c.execute_many(sql, [values_of(row) for row in rows])
        return []
    back = f" RETURNING {', '.join(map(_quoted, returning))}"
    per_statement = max(1, _MAX_BIND_PARAMETERS // n)
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params: list[Any] = []
        for row in chunk:
            params += values_of(row)
        if dialect(c) == "postgres":
            groups = ", ".join(
                "(" + ", ".join(f"${i * n + j + 1}" for j in range(n)) + ")"
                for i in range(len(chunk))
            )
        else:
            one = "(" + ", ".join("?" * n) + ")"
            groups = ", ".join(one for _ in chunk)
        # Identifiers come from the model, never from input; every value is bound.
        sql = (
            f"INSERT INTO {table} ({names}) VALUES {groups} "  # noqa: S608 - see above
            f"ON CONFLICT ({keys}) DO NOTHING{back}"
        )
        out += await c.execute_query_dict(sql, params)
    return out


async def insert_plain(
    c: BaseDBAsyncClient,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
) -> None:
    """``executemany`` of rows already in the database's form, skipping existing keys.

    For the bulk paths (an audience snapshot's enrolments and touches), whose callers
    convert each distinct value once (:class:`DbValues`) instead of once per row.
    """
    if not rows:
        return
    sql = (
        f"INSERT INTO {_quoted(table)} ({', '.join(map(_quoted, columns))}) "  # noqa: S608 - identifiers from the caller's constants
        f"VALUES ({placeholders(c, len(columns))}) "
        f"ON CONFLICT ({', '.join(map(_quoted, conflict))}) DO NOTHING"
    )
    await c.execute_many(sql, [list(r) for r in rows])


class DbValues:
    """Values of one model as the ORM stores them, each distinct value converted once."""

    def __init__(self, model: type[Model]) -> None:
        self._model = model
        self._cache: dict[tuple[str, Any], Any] = {}

    def __call__(self, field: str, value: Any) -> Any:
        key = (field, value)
        got = self._cache.get(key)
        if got is None and key not in self._cache:
            got = self._model._meta.fields_map[field].to_db_value(value, self._model)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = got
        return got


def _chunks(items: Sequence[str], size: int = 900) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def primary_advisors(c: BaseDBAsyncClient, *, customers: Sequence[str]) -> dict[str, str]:
    """Each customer's advisor: the most recently added active follow relation."""
    out: dict[str, str] = {}
    for part in _chunks(list(dict.fromkeys(customers))):
        rows = await c.execute_query_dict(
            "SELECT cu.external_userid AS customer, a.userid AS advisor, f.added_at, f.id "  # noqa: S608 - placeholders only
            "FROM bot_follow_relation f "
            "JOIN bot_customer cu ON cu.id = f.customer_id "
            "JOIN bot_advisor a ON a.id = f.advisor_id "
            f"WHERE f.status = 'active' AND cu.external_userid IN ({placeholders(c, len(part))}) "
            "ORDER BY f.id",
            list(part),
        )
        for r in rows:
            out[str(r["customer"])] = str(r["advisor"])  # the newest relation wins
    return out


async def relations_active(
    c: BaseDBAsyncClient, *, pairs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (customer, advisor) pairs still have an active follow relation."""
    found: set[tuple[str, str]] = set()
    customers = sorted({p[0] for p in pairs})
    for part in _chunks(customers):
        rows = await c.execute_query_dict(
            "SELECT cu.external_userid AS customer, a.userid AS advisor "  # noqa: S608 - placeholders only
            "FROM bot_follow_relation f "
            "JOIN bot_customer cu ON cu.id = f.customer_id "
            "JOIN bot_advisor a ON a.id = f.advisor_id "
            f"WHERE f.status = 'active' AND cu.external_userid IN ({placeholders(c, len(part))})",
            list(part),
        )
        found |= {(str(r["customer"]), str(r["advisor"])) for r in rows}
    return {p for p in pairs if p in found}


async def customer_facts(
    c: BaseDBAsyncClient, *, customers: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{external_userid: (name, attributes)}``: what rendering and suitability read."""
    import json

    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for part in _chunks(list(dict.fromkeys(customers))):
        rows = await c.execute_query_dict(
            "SELECT external_userid, name, attributes FROM bot_customer "  # noqa: S608 - placeholders only
            f"WHERE external_userid IN ({placeholders(c, len(part))})",
            list(part),
        )
        for r in rows:
            attrs = r["attributes"]
            if isinstance(attrs, str | bytes):
                attrs = json.loads(attrs or "{}")
            out[str(r["external_userid"])] = (str(r["name"] or ""), dict(attrs or {}))
    return out


async def advisor_names(c: BaseDBAsyncClient, *, userids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _chunks(list(dict.fromkeys(userids))):
        rows = await c.execute_query_dict(
            f"SELECT userid, name FROM bot_advisor WHERE userid IN ({placeholders(c, len(part))})",  # noqa: S608 - placeholders only
            list(part),
        )
        out.update({str(r["userid"]): str(r["name"] or "") for r in rows})
    return out
