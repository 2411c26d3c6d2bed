"""The worker's per-batch queries on a million stored messages (PostgreSQL).

    .venv/bin/python bench/precheck_plan.py [--rows 1000000] [--pg postgres://postgres@127.0.0.1/postgres]

Seeds a scratch database (the project's own migrations) with ``--rows`` messages over
2,000 advisor–customer pairs and 30 days, then for the two queries a worker runs per
batch read prints the plan PostgreSQL chooses and the median time over 20 runs, beside
a baseline measured in the same run:

- the duplicate pre-check (``bot.service.stored_message_query``: 256 msgids of one
  source) against fetching the same 256 rows by primary key;
- the conversation context (``bot.service.conversation_turns``: 64 pairs, a 24-hour
  window) against the same window read for one pair by msgtime alone.

Nothing is asserted; the scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    import asyncpg
    from tortoise import Tortoise

    from bot import service as bot_service
    from core import db as core_db
    from core.settings import Settings
    from siyu.app import schema_of
    from siyu.domains import DOMAINS

    admin_dsn = args.pg.replace("postgres://", "postgresql://")
    name = f"siyu_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.pg.rsplit('/', 1)[0]}/{name}"
    try:
        schema = schema_of(DOMAINS)
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        await core_db.init_db(settings, schema)
        conn = Tortoise.get_connection("default")
        await core_db.migrate(conn, schema, "postgres")
        pg = await asyncpg.connect(url.replace("postgres://", "postgresql://"))
        t0 = time.perf_counter()
        from bot import models

        # Through the ORM, so every column's default applies; ids run 1.. in a new database.
        await models.Advisor.bulk_create(
            [models.Advisor(userid=f"adv{i}", name=f"顾问{i}") for i in range(1, 201)]
        )
        await models.Customer.bulk_create(
            [models.Customer(external_userid=f"wm{i}", name=f"客户{i}") for i in range(1, 2001)],
            batch_size=500,
        )
        await pg.execute(
            f"""
            INSERT INTO bot_message (created_at, updated_at, msgid, source, direction,
                sender_id, sender_role, receiver_ids, msgtime, msgtype, action,
                masked_text, has_violation, advisor_id, customer_id)
            SELECT now(), now(), 'm' || g, 'archive',
                   CASE WHEN g % 2 = 0 THEN 'advisor_to_customer' ELSE 'customer_to_advisor' END,
                   'wm' || (g % 2000 + 1),
                   CASE WHEN g % 2 = 0 THEN 'advisor' ELSE 'customer' END,
                   '[]'::jsonb,
                   now() - (g % (30 * 24 * 60)) * interval '1 minute',
                   'text', 'send', '好的，明天下午三点见', false,
                   g % 2000 % 200 + 1, g % 2000 + 1
            FROM generate_series(1, {args.rows}) g
            """
        )
        await pg.execute("ANALYZE")
        print(f"seeded {args.rows:,} messages in {time.perf_counter() - t0:.0f} s")

        async def timed(sql: str, *params: object) -> float:
            runs = []
            for _ in range(20):
                start = time.perf_counter()
                await pg.fetch(sql, *params)
                runs.append(time.perf_counter() - start)
            return statistics.median(runs) * 1000

        msgids = [f"m{i}" for i in range(5000, 5000 + 256 * 37, 37)]
        pre_sql = bot_service.stored_message_query("archive", msgids).sql(params_inline=True)
        ids = [r["id"] for r in await pg.fetch(pre_sql)]
        base_sql = f"SELECT * FROM bot_message WHERE id IN ({','.join(map(str, ids))})"
        print("\nduplicate pre-check, 256 msgids:")
        for row in await pg.fetch("EXPLAIN " + pre_sql):
            print("   ", row[0])
        pre_ms, base_ms = await timed(pre_sql), await timed(base_sql)
        print(f"  {pre_ms:.2f} ms   baseline by primary key {base_ms:.2f} ms")
        print(f"  ratio {pre_ms / base_ms:.2f}x")

        until = datetime.now(UTC)
        since = until - timedelta(hours=24)
        pairs = {(f"adv{(k % 200) + 1}", f"wm{k + 1}") for k in range(0, 64 * 31, 31)}
        query = bot_service.conversation_turns_query(
            rooms=set(), pairs=pairs, since=since, until=until
        )
        ctx_sql = query.sql(params_inline=True)
        print("\nconversation context, 64 pairs, 24 h:")
        for row in await pg.fetch("EXPLAIN " + ctx_sql):
            print("   ", row[0])
        one_sql = (
            "SELECT masked_text FROM bot_message WHERE customer_id = "
            "(SELECT id FROM bot_customer WHERE external_userid = 'wm1') "
            f"AND msgtime >= '{since.isoformat()}' AND msgtime < '{until.isoformat()}'"
        )
        ctx_ms, one_ms = await timed(ctx_sql), await timed(one_sql)
        print(f"  {ctx_ms:.2f} ms   baseline one pair by msgtime {one_ms:.2f} ms")
        await pg.close()
        await core_db.close_db()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
