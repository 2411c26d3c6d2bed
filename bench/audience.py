"""Audience expressions against hand-written SQL, and the schedule-rule job, on real data.

    .venv/bin/python bench/audience.py [--customers 1000000]
                                       [--pg-server postgres://postgres@127.0.0.1:5432/postgres]
                                       [--data-dir var/bench-audience] [--keep] [--no-sqlite]

Seeds customers with ~8 tags each and attributes (risk level, age, a maturity date,
holdings) in bulk, streamed in batches with a progress bar; then, for 5 representative
expressions, times ``tagging.audience`` count and preview against a hand-written SQL
query for each, in the same run, and prints the times and the ratios (target <= 1.5x);
then times the schedule-rule job over the whole table (rows/s, peak Python memory).
SQLite always; PostgreSQL too when ``--pg-server`` names a server: the run creates a
database of its own there and drops it afterwards.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import shutil
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

TAGS = [f"兴趣{i}" for i in range(12)] + ["高净值", "关注养老", "已退订", "新客", "活跃", "沉睡"]
TODAY = date(2026, 12, 6)
BATCH = 5_000

# (label, expression, hand-written WHERE on bot_customer c; {tag} is replaced by the id)
CASES: list[tuple[str, str, str]] = [
    (
        "one tag",
        'tag:"高净值"',
        "EXISTS (SELECT 1 FROM tagging_customer_tag t "
        "WHERE t.customer_id = c.id AND t.tag_id = {高净值})",
    ),
    (
        "tag and not tag",
        'tag:"高净值" AND NOT tag:"已退订"',
        "EXISTS (SELECT 1 FROM tagging_customer_tag t WHERE t.customer_id = c.id "
        "AND t.tag_id = {高净值}) AND NOT EXISTS (SELECT 1 FROM tagging_customer_tag t "
        "WHERE t.customer_id = c.id AND t.tag_id = {已退订})",
    ),
    (
        "the issue's example",
        'tag:"高净值" AND (tag:"关注养老" OR attr.risk_level >= C3) AND NOT tag:"已退订"',
        "EXISTS (SELECT 1 FROM tagging_customer_tag t WHERE t.customer_id = c.id "
        "AND t.tag_id = {高净值}) AND (EXISTS (SELECT 1 FROM tagging_customer_tag t "
        "WHERE t.customer_id = c.id AND t.tag_id = {关注养老}) OR {risk} IN ('C3','C4','C5')) "
        "AND NOT EXISTS (SELECT 1 FROM tagging_customer_tag t WHERE t.customer_id = c.id "
        "AND t.tag_id = {已退订})",
    ),
    (
        "attribute range",
        "attr.age >= 60 AND attr.risk_level <= C2",
        "CAST({age} AS {num}) >= 60 AND {risk} IN ('C1','C2')",
    ),
    (
        "maturity within 7 days",
        'attr.maturity_date WITHIN 7d AND tag:"活跃"',
        "{maturity} BETWEEN '2026-12-06' AND '2026-12-13' AND EXISTS (SELECT 1 FROM "
        "tagging_customer_tag t WHERE t.customer_id = c.id AND t.tag_id = {活跃})",
    ),
]


CUSTOMER_COLUMNS = [
    "created_at",
    "updated_at",
    "external_userid",
    "name",
    "contact_type",
    "corp_name",
    "gender",
    "attributes",
    "needs_sync",
]
LINK_COLUMNS = [
    "created_at",
    "updated_at",
    "customer_id",
    "tag_id",
    "source",
    "applied_by",
    "applied_at",
    "reason",
]


EXISTS_TAG = re.compile(
    r"EXISTS \(SELECT 1 FROM tagging_customer_tag t WHERE t\.customer_id = c\.id "
    r"AND t\.tag_id = (\d+)\)"
)
IN_TAG = r"c.id IN (SELECT t.customer_id FROM tagging_customer_tag t WHERE t.tag_id = \1)"


def _attr(dialect: str, name: str) -> str:
    if dialect == "postgres":
        return f"(c.attributes ->> '{name}')"
    return f"json_extract(c.attributes, '$.{name}')"


async def _seed(conn: Any, dialect: str, n: int, rng: random.Random) -> dict[str, int]:
    from tqdm import tqdm

    from core.audit import Actor
    from tagging import flows
    from tagging.schemas import GroupIn, TagIn

    actor = Actor("system", "bench", "bench")
    group = await flows.do_create_group(spec=GroupIn(name="画像"), actor=actor)
    ids = {
        name: (await flows.do_create_tag(spec=TagIn(group_id=group.id, name=name), actor=actor)).id
        for name in TAGS
    }
    ph = (
        (lambda k: ", ".join(f"${i}" for i in range(1, k + 1)))
        if dialect == "postgres"
        else (lambda k: ", ".join("?" * k))
    )
    now: Any = datetime.now(UTC)
    if dialect == "sqlite":
        # As sqlite3's default adapter writes a datetime (and Tortoise reads it back),
        # formatted once rather than three times a row.
        now = str(now)
    customer_sql = f"INSERT INTO bot_customer ({', '.join(CUSTOMER_COLUMNS)}) VALUES ({ph(9)})"
    tag_sql = f"INSERT INTO tagging_customer_tag ({', '.join(LINK_COLUMNS)}) VALUES ({ph(8)})"
    tag_ids = list(ids.values())
    with tqdm(total=n, unit=" customers", desc=f"seed {dialect}", file=sys.stderr) as bar:
        next_id = 1
        for start in range(0, n, BATCH):
            rows = []
            links = []
            for i in range(start, min(n, start + BATCH)):
                attrs = {
                    "risk_level": f"C{rng.randint(1, 5)}",
                    "age": rng.randint(20, 85),
                    "maturity_date": (TODAY + timedelta(days=rng.randint(-30, 365))).isoformat(),
                    "holdings": [{"product_code": f"F{rng.randint(1, 500)}", "risk_level": "R3"}],
                }
                rows.append(
                    (now, now, f"wmBENCH{i:015d}", "客户", 1, "", 0, json.dumps(attrs), False)
                )
                for tag_id in rng.sample(tag_ids, 8):
                    links.append((now, now, next_id, tag_id, "import", "import:bench", now, "{}"))
                next_id += 1
            if dialect == "postgres":
                # COPY: a batch is one stream, not a statement per row (10x and more).
                # The rows are consistent by construction: the foreign-key triggers
                # (one check per tag row) are off for the copy (superuser only).
                async with conn.acquire_connection() as raw:
                    await raw.execute("SET session_replication_role = replica")
                    try:
                        await raw.copy_records_to_table(
                            "bot_customer", records=rows, columns=CUSTOMER_COLUMNS
                        )
                        await raw.copy_records_to_table(
                            "tagging_customer_tag", records=links, columns=LINK_COLUMNS
                        )
                    finally:
                        await raw.execute("SET session_replication_role = DEFAULT")
            else:
                await conn.execute_many(customer_sql, rows)
                await conn.execute_many(tag_sql, links)
            bar.update(len(rows))
    if dialect == "postgres":
        # As a live database is after autovacuum: statistics and the visibility map.
        await conn.execute_script("VACUUM ANALYZE")
    return ids


async def _timed_count(
    ours: Callable[[], Awaitable[int]],
    hands: list[Callable[[], Awaitable[Any]]],
    runs: int = 5,
) -> tuple[float, float, int, int]:
    """Medians of a count and of its hand-written forms, run in turns after one untimed
    run of each, the order reversed every other round (a full scan pays for the one
    before it on a loaded machine); the baseline is the fastest hand-written form."""
    n = await ours()
    hand_n = [int((await h())[0][0]) for h in hands]
    assert len(set(hand_n)) == 1, hand_n
    a: list[float] = []
    b: list[list[float]] = [[] for _ in hands]
    turns: list[tuple[Callable[[], Awaitable[Any]], list[float]]] = [
        (ours, a),
        *zip(hands, b, strict=True),
    ]
    for i in range(runs):
        for fn, into in turns if i % 2 == 0 else turns[::-1]:
            t0 = time.perf_counter()
            await fn()
            into.append(time.perf_counter() - t0)
    return statistics.median(a), min(statistics.median(x) for x in b), n, hand_n[0]


async def _timed_pair(
    ours: Callable[[], Awaitable[Any]], hand: Callable[[], Awaitable[Any]], runs: int = 41
) -> tuple[float, float]:
    """Medians of two fast queries run in turn, after one untimed run of each.

    A preview answers in a fraction of a millisecond: three runs of one and then three
    of the other measure the machine's moment as much as the query (and the first run
    pays for preparing the statement), so they alternate, and more of them.
    """
    await ours()
    await hand()
    a: list[float] = []
    b: list[float] = []
    turns = ((ours, a), (hand, b))
    for i in range(runs):
        for fn, into in turns if i % 2 == 0 else turns[::-1]:
            t0 = time.perf_counter()
            await fn()
            into.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


async def _run(url: str, data_dir: Path, n: int) -> None:
    from tortoise import Tortoise

    from core import db as core_db
    from core.settings import Settings
    from siyu.app import schema_of
    from siyu.domains import DOMAINS
    from tagging import audience, rules
    from tagging.models import TagRule

    dialect = core_db.dialect_of(url)
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url)  # type: ignore[call-arg]
    schema = schema_of(DOMAINS)
    await core_db.init_db(settings, schema)
    try:
        conn = Tortoise.get_connection("default")
        await core_db.migrate(conn, schema, dialect)
        t0 = time.perf_counter()
        ids = await _seed(conn, dialect, n, random.Random(7))
        print(
            f"[{dialect}] seeded {n:,} customers, ~8 tags each, in {time.perf_counter() - t0:.0f} s"
        )
        num = "NUMERIC" if dialect == "postgres" else "REAL"
        print(
            f"[{dialect}] {'expression':<24} {'count':>9} {'ours ms':>9} {'hand ms':>9}"
            f" {'ratio':>6} {'preview ms':>10} {'hand ms':>8} {'ratio':>6}"
        )
        for label, expr, hand in CASES:
            where = hand.format(
                risk=_attr(dialect, "risk_level"),
                age=_attr(dialect, "age"),
                maturity=_attr(dialect, "maturity_date"),
                num=num,
                **{k: v for k, v in ids.items()},
            )
            # Both sides through the same driver call (``audience.fetch``: tuples).  The
            # endpoint gets the expression as text, so ours is timed from the text.
            count_sql = [f"SELECT COUNT(*) FROM bot_customer c WHERE {where}"]
            listed = EXISTS_TAG.sub(IN_TAG, where)
            if dialect == "sqlite" and listed != where:
                # SQLite counts a tag faster as a list than as an EXISTS per customer
                # (ours does): the faster hand-written form is the baseline.  (Without
                # a tag the forms are one query: timed once, not the better of two.)
                count_sql.append(f"SELECT COUNT(*) FROM bot_customer c WHERE {listed}")
            ours_s, hand_s, count, hand_n = await _timed_count(
                lambda expr=expr: audience.count(expr, today=TODAY),
                [lambda q=q: audience.fetch(conn, q, ()) for q in count_sql],
            )
            assert hand_n == count, (label, count, hand_n)
            # The same rows and columns a preview returns: masked, by the database.
            preview_sql = (
                f"SELECT {audience.MASKED_COLUMNS} FROM bot_customer c "
                f"WHERE {where} ORDER BY c.id LIMIT 20"
            )
            # The first preview looks its tags up and compiles (the count parsed it);
            # both sides prepare their statement then.
            t0 = time.perf_counter()
            shown = await audience.preview(expr, limit=20, today=TODAY)
            t1 = time.perf_counter()
            by_hand = await audience.fetch(conn, preview_sql, ())
            first = (t1 - t0, time.perf_counter() - t1)
            assert [tuple(r) for r in shown] == [tuple(r) for r in by_hand], label
            ours_p, hand_p = await _timed_pair(
                lambda expr=expr: audience.preview(expr, limit=20, today=TODAY),
                lambda q=preview_sql: audience.fetch(conn, q, ()),
            )
            print(
                f"[{dialect}] {label:<24} {count:>9,} {ours_s * 1000:>9.1f} {hand_s * 1000:>9.1f}"
                f" {ours_s / hand_s:>5.2f}x {ours_p * 1000:>10.2f} {hand_p * 1000:>8.2f}"
                f" {ours_p / hand_p:>5.2f}x  (first preview {first[0] * 1000:.2f}"
                f" vs {first[1] * 1000:.2f} ms)",
                flush=True,
            )
        # The schedule-rule job over the whole table: timed as it runs (no tracing),
        # then a second rule of the same shape under tracemalloc for its peak memory.
        for label, expr, tag, traced in (
            ("timed", "attr.risk_level >= C4", "新客", False),
            ("traced", "attr.risk_level <= C2", "沉睡", True),
        ):
            rule = await TagRule.create(
                name=f"bench {label}",
                trigger="schedule",
                spec={"when": {"audience": expr}, "then": {"add": [ids[tag]]}},
                enabled=True,
            )
            matched = await audience.count(expr)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if traced:
                tracemalloc.start()
            t0 = time.perf_counter()
            applied = await rules.run_schedule_rule(rule)
            elapsed = time.perf_counter() - t0
            memory = ""
            if traced:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                memory = f", peak Python memory {peak / 1e6:.1f} MB (tracemalloc)"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"[{dialect}] schedule rule ({label}) `{expr}`: {matched:,} matching "
                f"customers, {applied:,} tagged, in {elapsed:.1f} s "
                f"({matched / elapsed:,.0f} customers/s, {applied / elapsed:,.0f} tagged/s)"
                f"{memory}; process peak RSS {rss / 1024:.0f} MB "
                f"(+{(rss - rss0) / 1024:.0f} MB during the job)",
                flush=True,
            )
    finally:
        await core_db.close_db()


async def _admin(server: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--pg-server",
        default="",
        help="a PostgreSQL server (admin URL) to run on as well, in a throwaway database",
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-audience")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    parser.add_argument(
        "--no-sqlite", action="store_true", help="PostgreSQL only (with --pg-server)"
    )
    args = parser.parse_args()
    data_dir: Path = args.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    if not args.no_sqlite:
        asyncio.run(_run(f"sqlite://{data_dir / 'audience.sqlite3'}", data_dir, args.customers))
    if args.pg_server:
        name = f"siyu_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin(args.pg_server, f'CREATE DATABASE "{name}"'))
        try:
            url = f"{args.pg_server.rsplit('/', 1)[0]}/{name}"
            asyncio.run(_run(url, data_dir, args.customers))
        finally:
            asyncio.run(_admin(args.pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
