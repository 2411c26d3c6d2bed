"""The dashboard's numbers: daily rollups kept as messages are stored, read per window.

Counting at page time would scan ``bot_message`` (millions of rows at a bank), so the
admin domain's ``on_messages`` hook adds each read's stored messages to per-day counters
in the transaction that stores them: when the store rolls back, so does the count, and a
redelivery counts once (``bot.hooks``).  ``rebuild`` recomputes the same counters
from the stored rows for a database that had messages before the hook existed, or
after a repair; running it twice gives the same rows.

A day is a calendar day in Asia/Shanghai (the bank's and the regulator's day).
Alerts are counted from ``bot_alert`` at page time, over the window only, per day and
kind by the database (its (created_at, kind) index): the hook is not handed them
(``bot.flows._store_together`` writes them itself) and they are few.  The review
backlog is read from the open cases through the (status, created_at) index.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from admin.dashboard_models import DashCustomerDay, DashDaily
from bot import models as bot_models
from bot import service as bot_service
from bot.hooks import StoredMessage
from bot.schemas import Source

SHANGHAI = ZoneInfo("Asia/Shanghai")

MESSAGES = "messages"
CUSTOMERS = "customers"
VIOLATION_CATEGORY = "violation_category"
VIOLATION_ADVISOR = "violation_advisor"
INTENT = "intent"
METRICS = (MESSAGES, CUSTOMERS, VIOLATION_CATEGORY, VIOLATION_ADVISOR, INTENT)

# What the pipeline stores, and so what its hook counts: callbacks and the archive.  A
# sidebar override (source "sidebar") records an advisor's decision to send a flagged
# line — the line itself arrives later through the archive and is counted then — so
# the rebuild leaves it out as the hook never sees it.
PIPELINE_SOURCES = tuple(s.value for s in Source)

# Rows per rebuild read: bounded memory on a million-message table.
_REBUILD_BATCH = 2000
_DIM_MAX = 64
# Rows per upsert: 4 × 200 parameters stay below SQLite's oldest bound (999).
_ROWS_PER_STATEMENT = 200
# INSERT … RETURNING came with SQLite 3.35 (2021): an older library records row by row.
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def day_of(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).date().isoformat()


def customer_digest(external_userid: str) -> str:
    return hashlib.sha256(external_userid.encode("utf-8")).hexdigest()


def message_counters(
    *,
    intent: str | None,
    categories: Iterable[str],
    has_violation: bool,
    advisor: str | None,
) -> list[tuple[str, str]]:
    """The (metric, dim) counters one stored message adds to, besides its customer."""
    out = [(MESSAGES, "")]
    out += [(VIOLATION_CATEGORY, c[:_DIM_MAX]) for c in sorted(set(categories))]
    if has_violation and advisor:
        out.append((VIOLATION_ADVISOR, advisor[:_DIM_MAX]))
    if intent:
        out.append((INTENT, intent[:_DIM_MAX]))
    return out


def _params(conn: BaseDBAsyncClient, n: int) -> list[str]:
    if conn.capabilities.dialect == "postgres":
        return [f"${i + 1}" for i in range(n)]
    return ["?"] * n


def _values(conn: BaseDBAsyncClient, rows: int, width: int) -> str:
    """``(?, ?), (?, ?)`` (``($1, $2), ($3, $4)`` on PostgreSQL) for a multi-row VALUES."""
    ps = _params(conn, rows * width)
    return ", ".join("(" + ", ".join(ps[i * width : (i + 1) * width]) + ")" for i in range(rows))


async def _bump(conn: BaseDBAsyncClient, counts: Mapping[tuple[str, str, str], int]) -> None:
    """Add ``counts`` ((day, metric, dim) → n) to the counters: one upsert per chunk.

    In key order, so two workers storing at once take the rows' locks in the same
    order and never wait on each other in a cycle (PostgreSQL); and each key once,
    as one statement may not update a row twice.
    """
    rows = sorted((k, n) for k, n in counts.items() if n)
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        params: list[Any] = []
        for (day, metric, dim), n in chunk:
            params += [day, metric, dim, n]
        # SQLite ≥ 3.24 and PostgreSQL share this syntax.
        sql = (
            'INSERT INTO "admin_dash_daily" ("day", "metric", "dim", "n") VALUES '  # noqa: S608 - placeholders only
            + _values(conn, len(chunk), 4)
            + ' ON CONFLICT ("day", "metric", "dim") DO UPDATE'
            + ' SET "n" = "admin_dash_daily"."n" + excluded."n"'
        )
        await conn.execute_query(sql, params)


async def _first_sights(conn: BaseDBAsyncClient, pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Record each (day, customer digest); the days of the pairs not recorded before.

    One INSERT … ON CONFLICT DO NOTHING RETURNING per chunk: the rows it returns are
    the customers' first messages of those days (SQLite before 3.35 has no RETURNING
    and records them one by one, telling each by its row count).
    """
    todo = sorted(set(pairs))
    head = 'INSERT INTO "admin_dash_customer_day" ("day", "customer") VALUES '
    tail = ' ON CONFLICT ("day", "customer") DO NOTHING'
    postgres = conn.capabilities.dialect == "postgres"
    if not postgres and not _SQLITE_RETURNING:
        first = []
        for day, digest in todo:
            changed, _ = await conn.execute_query(head + "(?, ?)" + tail, [day, digest])
            if changed:
                first.append(day)
        return first
    days: list[str] = []
    for start in range(0, len(todo), _ROWS_PER_STATEMENT):
        chunk = todo[start : start + _ROWS_PER_STATEMENT]
        rows = await conn.execute_query_dict(
            head + _values(conn, len(chunk), 2) + tail + ' RETURNING "day"',
            [v for pair in chunk for v in pair],
        )
        days += [str(r["day"]) for r in rows]
    return days


def _read_counts(records: Iterable[StoredMessage]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for record in records:
        day = day_of(record.msgtime)
        counts.update(
            (day, metric, dim)
            for metric, dim in message_counters(
                intent=record.intent,
                categories=record.violation_categories,
                has_violation=record.has_violation,
                advisor=record.advisor,
            )
        )
    return counts


async def on_messages(records: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
    """The pipeline hook: count a read's stored messages on their days, in its transaction.

    No network and no reads: one statement records the customers seen on each day (and
    tells which were seen for the first time), one adds the read's counts — two
    statements per read, where counting message by message cost one or two each.  The
    counts are the sums of each message's own, so a read stored again message by
    message (``bot.flows.do_store_messages``) counts the same.
    """
    counts = _read_counts(records)
    sights = {(day_of(r.msgtime), customer_digest(r.customer)) for r in records if r.customer}
    # Customer days first, then the counters: the order ``rebuild`` locks them in.
    for day in await _first_sights(conn, sights):
        counts[(day, CUSTOMERS, "")] += 1
    await _bump(conn, counts)


def _categories(analysis: Any) -> list[str]:
    if not isinstance(analysis, dict):
        return []
    return [
        str(v["category"])
        for v in analysis.get("violations") or ()
        if isinstance(v, dict) and v.get("category")
    ]


@dataclass(frozen=True)
class RebuildResult:
    messages: int
    days: int


async def rebuild(*, since: date | None = None) -> RebuildResult:
    """Recompute every counter from ``since`` (a Shanghai day; None = all) from stored rows.

    The messages the pipeline stored (``PIPELINE_SOURCES``), as the hook counted them.

    One transaction: the old counters of those days go and the recomputed ones come in
    together, so a page never sees half a rebuild, and a second run writes the same rows.
    """
    # In UTC: SQLite compares the stored text, so the bound must be in the stored zone.
    start = (
        datetime(since.year, since.month, since.day, tzinfo=SHANGHAI).astimezone(UTC)
        if since
        else None
    )
    first_day = since.isoformat() if since else ""
    counts: dict[str, Counter[tuple[str, str]]] = {}
    customers: dict[str, set[str]] = {}
    seen = 0
    async with in_transaction() as conn:
        if conn.capabilities.dialect == "postgres":
            # Stores running meanwhile wait at their hook until this commits, so none
            # is counted by its hook and then wiped by the delete below. The hook's
            # order (customer day, then counters), so neither waits on the other in a
            # cycle.  SQLite has one writer at a time already.
            await conn.execute_script(
                'LOCK TABLE "admin_dash_customer_day", "admin_dash_daily" IN EXCLUSIVE MODE'
            )
        last_id = 0
        while True:
            q = bot_models.Message.filter(id__gt=last_id, source__in=list(PIPELINE_SOURCES))
            if start is not None:
                q = q.filter(msgtime__gte=start)
            rows = (
                await q.order_by("id")
                .limit(_REBUILD_BATCH)
                .using_db(conn)
                .values(
                    "id",
                    "msgtime",
                    "intent",
                    "has_violation",
                    "analysis",
                    "customer__external_userid",
                    "advisor__userid",
                )
            )
            if not rows:
                break
            for row in rows:
                day = day_of(row["msgtime"])
                counts.setdefault(day, Counter()).update(
                    message_counters(
                        intent=row["intent"],
                        categories=_categories(row["analysis"]),
                        has_violation=bool(row["has_violation"]),
                        advisor=row["advisor__userid"],
                    )
                )
                if ext := row["customer__external_userid"]:
                    customers.setdefault(day, set()).add(customer_digest(ext))
            seen += len(rows)
            last_id = rows[-1]["id"]
        await DashDaily.filter(day__gte=first_day).using_db(conn).delete()
        await DashCustomerDay.filter(day__gte=first_day).using_db(conn).delete()
        for day, digests in customers.items():
            counts.setdefault(day, Counter())[(CUSTOMERS, "")] = len(digests)
        await DashCustomerDay.bulk_create(
            [DashCustomerDay(day=d, customer=c) for d, cs in customers.items() for c in sorted(cs)],
            batch_size=500,
            using_db=conn,
        )
        await DashDaily.bulk_create(
            [
                DashDaily(day=d, metric=m, dim=dim, n=n)
                for d, c in sorted(counts.items())
                for (m, dim), n in sorted(c.items())
            ],
            batch_size=500,
            using_db=conn,
        )
    return RebuildResult(messages=seen, days=len(counts))


# ------------------------------------------------------------------ reading


def window_days(*, days: int, today: date) -> list[str]:
    return [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


@dataclass(frozen=True)
class Series:
    """One chart's data: a value per (dim, day); dims in a stable order."""

    days: list[str]
    dims: list[str]
    values: dict[str, list[int]]

    def total(self, dim: str) -> int:
        return sum(self.values.get(dim, ()))


async def daily_series(*, metrics: Iterable[str], days: list[str]) -> dict[str, Series]:
    """Each metric's counters over ``days``: reads the rollup only, in one pass."""
    wanted = list(metrics)
    rows = await DashDaily.filter(
        metric__in=wanted, day__gte=days[0], day__lte=days[-1]
    ).values_list("day", "metric", "dim", "n")
    index = {d: i for i, d in enumerate(days)}
    values: dict[str, dict[str, list[int]]] = {m: {} for m in wanted}
    for day, metric, dim, n in rows:
        at = index.get(day)
        if at is not None and metric in values:
            values[metric].setdefault(dim, [0] * len(days))[at] += int(n)
    out: dict[str, Series] = {}
    for metric, found in values.items():
        dims = sorted(found, key=lambda k: (-sum(found[k]), k))
        out[metric] = Series(days=days, dims=dims, values=found)
    return out


async def alerts_series(*, days: list[str]) -> Series:
    """Alerts per day and kind over ``days``, counted by the database."""
    start = datetime.fromisoformat(days[0]).replace(tzinfo=SHANGHAI).astimezone(UTC)
    index = {d: i for i, d in enumerate(days)}
    values: dict[str, list[int]] = {}
    for day, kind, n in await bot_service.alerts_per_day(since=start):
        at = index.get(day)
        if at is not None:
            values.setdefault(kind, [0] * len(days))[at] += n
    dims = sorted(values, key=lambda k: (-sum(values[k]), k))
    return Series(days=days, dims=dims, values=values)


@dataclass(frozen=True)
class AdvisorInfo:
    name: str
    team: str


async def advisors(userids: Iterable[str]) -> dict[str, AdvisorInfo]:
    """Name and team (WeCom department) of the advisors a chart names: a unique-key read."""
    ids = sorted(set(userids))
    if not ids:
        return {}
    rows = await bot_models.Advisor.filter(userid__in=ids).values("userid", "name", "department")
    return {r["userid"]: AdvisorInfo(name=r["name"], team=r["department"]) for r in rows}


# Open cases by how long they have waited; the last bucket has no upper bound.
BACKLOG_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("1 天内", timedelta(days=1)),
    ("1–3 天", timedelta(days=3)),
    ("3–7 天", timedelta(days=7)),
    ("7 天以上", None),
)


@dataclass(frozen=True)
class Backlog:
    open: int
    oldest_at: datetime | None
    buckets: list[tuple[str, int]]


async def review_backlog(*, now: datetime) -> Backlog:
    """Open cases and their age, through the (status, created_at) index."""
    cases = bot_models.ReviewCase.filter(status="open")
    buckets: list[tuple[str, int]] = []
    lower: timedelta | None = timedelta(0)
    for label, upper in BACKLOG_BUCKETS:
        q = cases
        if upper is not None:
            q = q.filter(created_at__gt=now - upper)
        if lower:
            q = q.filter(created_at__lte=now - lower)
        buckets.append((label, await q.count()))
        lower = upper
    oldest = await cases.order_by("created_at").first().values_list("created_at", flat=True)
    return Backlog(
        open=sum(n for _, n in buckets),
        oldest_at=oldest if isinstance(oldest, datetime) else None,
        buckets=buckets,
    )


def today_in_shanghai() -> date:
    return datetime.now(UTC).astimezone(SHANGHAI).date()
