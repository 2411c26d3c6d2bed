"""Audience expressions against hand-written SQL, and the schedule-rule job, on real data.

    .venv/bin/python bench/audience.py [--customers 1000000]
                                       [--pg-server postgres://postgres@127.0.0.1:5432/postgres]
                                       [--data-dir var/bench-audience] [--keep]

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
    now = datetime.now(UTC)
    customer_sql = (
        'INSERT INTO bot_customer ("created_at", "updated_at", "external_userid", "name", '
        '"contact_type", "corp_name", "gender", "attributes", "needs_sync") '
        f"VALUES ({ph(9)})"
    )
    tag_sql = (
        'INSERT INTO tagging_customer_tag ("created_at", "updated_at", "customer_id", "tag_id", '
        f'"source", "applied_by", "applied_at", "reason") VALUES ({ph(8)})'
    )
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
            await conn.execute_many(customer_sql, rows)
            await conn.execute_many(tag_sql, links)
            bar.update(len(rows))
    if dialect == "postgres":
        await conn.execute_script("ANALYZE")
    return ids


async def _timed(fn: Callable[[], Awaitable[Any]], runs: int = 3) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


async def _timed_pair(
    ours: Callable[[], Awaitable[Any]], hand: Callable[[], Awaitable[Any]], runs: int = 15
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
    for _ in range(runs):
        for fn, into in ((ours, a), (hand, b)):
            t0 = time.perf_counter()
            await fn()
            into.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


async def _run(url: str, data_dir: Path, n: int) -> None:
    from tortoise import Tortoise

    from bot.outbox import mask_external_userid
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
            node = audience.parse(expr)
            ours_s, count = await _timed(lambda node=node: audience.count(node, today=TODAY))
            hand_s, hand_rows = await _timed(
                lambda where=where: conn.execute_query(
                    f"SELECT COUNT(*) AS n FROM bot_customer c WHERE {where}"
                )
            )
            assert int(hand_rows[1][0]["n"]) == count, (label, count, hand_rows)
            # The same rows and columns a preview returns (masked there, in Python).
            shown = await audience.preview(node, limit=20, today=TODAY)
            _, by_hand = await conn.execute_query(
                "SELECT c.external_userid, c.name FROM bot_customer c "
                f"WHERE {where} ORDER BY c.id LIMIT 20"
            )
            assert [r.external_userid for r in shown] == [
                mask_external_userid(r["external_userid"]) for r in by_hand
            ], label
            ours_p, hand_p = await _timed_pair(
                lambda node=node: audience.preview(node, limit=20, today=TODAY),
                lambda where=where: conn.execute_query(
                    "SELECT c.external_userid, c.name FROM bot_customer c "
                    f"WHERE {where} ORDER BY c.id LIMIT 20"
                ),
            )
            print(
                f"[{dialect}] {label:<24} {count:>9,} {ours_s * 1000:>9.1f} {hand_s * 1000:>9.1f}"
                f" {ours_s / hand_s:>5.2f}x {ours_p * 1000:>10.1f} {hand_p * 1000:>8.1f}"
                f" {ours_p / hand_p:>5.2f}x"
            )
        rule = await TagRule.create(
            name="bench",
            trigger="schedule",
            spec={"when": {"audience": "attr.risk_level >= C4"}, "then": {"add": [ids["新客"]]}},
            enabled=True,
        )
        tracemalloc.start()
        t0 = time.perf_counter()
        applied = await rules.run_schedule_rule(rule)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        matched = await audience.count(audience.parse("attr.risk_level >= C4"))
        print(
            f"[{dialect}] schedule rule over {matched:,} matching customers: {applied:,} tagged "
            f"in {elapsed:.1f} s ({matched / elapsed:,.0f} rows/s), peak Python memory "
            f"{peak / 1e6:.1f} MB"
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
    args = parser.parse_args()
    data_dir: Path = args.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
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
