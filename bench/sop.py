"""The SOP engine at scale: enrol and plan from an audience, then dispatch a day of touches.

    .venv/bin/python bench/sop.py [--customers 1000000] [--advisors 500]
                                  [--day-touches 30000] [--api-limit 1200]
                                  [--pg-server postgres://postgres@127.0.0.1:5432/postgres]
                                  [--data-dir var/bench-sop] [--keep]

1. **Enrol and plan**: seeds customers (attributes, one advisor each) in bulk, then
   enrols all of them from an audience expression into a two-step campaign through
   ``sop.engine.enrol.enrol_audience`` — streamed in keyset pages with a progress bar,
   re-entry and opt-outs checked, touches timed per step — and, in the same run,
   inserts the same rows (enrolments and touches, into a second campaign) with a plain
   bulk insert.  Prints rows/s of each and the ratio (target >= 0.5).
2. **Dispatch a day**: ``--day-touches`` reminder touches due now, spread over the
   advisors, go through the real path — the scheduler's batches and digests, the
   outbox dispatcher, the before-send re-check (compliance_nlp included), the WeCom
   client — against the sandbox, whose ``message/send`` limit is ``--api-limit`` calls
   a minute (45009 past it).  Prints calls a minute as a fraction of that limit
   (target >= 0.9), the largest count in any sliding minute (never above the limit),
   45009s seen, drops by the per-member caps, and peak memory.

Figures are printed, never asserted.  SQLite always; PostgreSQL as well with
``--pg-server`` (a throwaway database, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from bench._common import pg_admin  # noqa: E402 - after the path fix above

BATCH = 5_000
CALM = "{customer_name}您好，近期市场有波动，如有疑问可以随时联系我"


def _ph(dialect: str, k: int) -> str:
    if dialect == "postgres":
        return ", ".join(f"${i}" for i in range(1, k + 1))
    return ", ".join("?" * k)


async def _seed(conn: Any, dialect: str, n: int, advisors: int, rng: random.Random) -> None:
    from tqdm import tqdm

    now = datetime.now(UTC)
    await conn.execute_many(
        'INSERT INTO bot_advisor ("created_at", "updated_at", "userid", "name", "department", '
        f'"status") VALUES ({_ph(dialect, 6)})',
        [(now, now, f"adv{a:05d}", f"顾问{a}", "", "active") for a in range(advisors)],
    )
    customer_sql = (
        'INSERT INTO bot_customer ("created_at", "updated_at", "external_userid", "name", '
        '"contact_type", "corp_name", "gender", "attributes", "needs_sync") '
        f"VALUES ({_ph(dialect, 9)})"
    )
    follow_sql = (
        'INSERT INTO bot_follow_relation ("created_at", "updated_at", "remark", "description", '
        '"added_at", "state", "status", "advisor_id", "customer_id") '
        f"VALUES ({_ph(dialect, 9)})"
    )
    with tqdm(total=n, unit=" customers", desc=f"seed {dialect}", file=sys.stderr) as bar:
        for start in range(0, n, BATCH):
            rows, follows = [], []
            for i in range(start, min(n, start + BATCH)):
                attrs = {
                    "risk_level": f"C{rng.randint(1, 5)}",
                    "maturity_date": "2026-12-31",
                }
                rows.append(
                    (now, now, f"wmSOP{i:015d}", f"客户{i}", 1, "", 0, json.dumps(attrs), False)
                )
                follows.append((now, now, "", "", now, "", "active", i % advisors + 1, i + 1))
            await conn.execute_many(customer_sql, rows)
            await conn.execute_many(follow_sql, follows)
            bar.update(len(rows))
    if dialect == "postgres":
        await conn.execute_script("ANALYZE")


async def _campaign(name: str, steps: list[dict[str, Any]]) -> Any:
    from sop.engine import planner, store
    from sop.models import Campaign, CampaignStep, CampaignVersion

    campaign = await Campaign.create(name=name, owner="bench", status="active", current_version=1)
    version = await CampaignVersion.create(
        campaign=campaign,
        version=1,
        status="active",
        trigger={"kind": "manual"},
        audience="attr.risk_level >= C1",
    )
    for i, step in enumerate(steps, 1):
        await CampaignStep.create(version=version, position=i, **step)
    return await planner.load_plan(store.conn(), version_id=version.id)


STEPS = [
    {"delivery": "reminder", "at_time": "10:00", "content": {"kind": "text", "text": CALM}},
    {
        "delivery": "mass_send",
        "anchor": "previous",
        "offset_days": 3,
        "at_time": "10:00",
        "skip_weekends": True,
        "content": {"kind": "text", "text": CALM},
    },
]


async def _enrol_vs_bulk(conn: Any, dialect: str, n: int) -> None:
    from tqdm import tqdm

    from sop.engine import enrol, planner, store
    from sop.models import Enrolment, Touch

    at = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)  # a Monday, 09:00 Beijing
    plan = await _campaign("bench-enrol", STEPS)
    # Memory is sampled (RSS), not traced: tracing allocations would slow the timed run
    # and not the baseline's.
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    with tqdm(total=n, unit=" customers", desc=f"enrol+plan {dialect}", file=sys.stderr) as bar:
        enrolled = await enrol.enrol_audience(
            plan, ref="manual:bench", at=at, batch=BATCH, progress=bar.update
        )
    ours_s = time.perf_counter() - t0
    ours_rss = await sampler.stop()
    touches = await Touch.filter(campaign_id=plan.campaign_id).count()
    rows = enrolled + touches

    # The same rows, plainly: one campaign more, ids assigned here, no checks, no reads.
    base_plan = await _campaign("bench-bulk", STEPS)
    dues = planner.plan_dues(base_plan, at)
    pairs = await conn.execute_query_dict(
        "SELECT customer, advisor FROM sop_enrolment WHERE campaign_id = "
        + ("$1" if dialect == "postgres" else "?")
        + " ORDER BY id",
        [plan.campaign_id],
    )
    max_e = (await conn.execute_query_dict("SELECT MAX(id) AS m FROM sop_enrolment"))[0]["m"] or 0
    e_fields = Enrolment._meta.fields_map
    t_fields = Touch._meta.fields_map
    enrol_sql = (
        'INSERT INTO sop_enrolment ("id", "campaign_id", "version_id", "customer", "advisor", '
        '"entered_at", "trigger_ref", "state", "updated_at") '
        f"VALUES ({_ph(dialect, 9)})"
    )
    touch_sql = (
        'INSERT INTO sop_touch ("enrolment_id", "step_id", "version_id", "campaign_id", '
        '"customer", "advisor", "due_at", "state", "attempts", "updated_at") '
        f"VALUES ({_ph(dialect, 10)})"
    )
    from tortoise.transactions import in_transaction

    t0 = time.perf_counter()
    now = e_fields["updated_at"].to_db_value(datetime.now(UTC), Enrolment)
    entered = e_fields["entered_at"].to_db_value(at, Enrolment)
    due_values = [t_fields["due_at"].to_db_value(d, Touch) for d, _ in dues]
    with tqdm(total=len(pairs), unit=" customers", desc=f"bulk {dialect}", file=sys.stderr) as bar:
        for start in range(0, len(pairs), BATCH):
            chunk = pairs[start : start + BATCH]
            e_rows, t_rows = [], []
            for i, p in enumerate(chunk, start + max_e + 1):
                e_rows.append(
                    (
                        i,
                        base_plan.campaign_id,
                        base_plan.version_id,
                        p["customer"],
                        p["advisor"],
                        entered,
                        "manual:bench",
                        "active",
                        now,
                    )
                )
                for step, due in zip(base_plan.steps, due_values, strict=True):
                    t_rows.append(
                        (
                            i,
                            step.id,
                            base_plan.version_id,
                            base_plan.campaign_id,
                            p["customer"],
                            p["advisor"],
                            due,
                            "planned",
                            0,
                            now,
                        )
                    )
            async with in_transaction() as tx:
                await tx.execute_many(enrol_sql, e_rows)
                await tx.execute_many(touch_sql, t_rows)
            bar.update(len(chunk))
    base_s = time.perf_counter() - t0
    if dialect == "postgres":
        await conn.execute_script(
            "SELECT setval(pg_get_serial_sequence('sop_enrolment', 'id'), "
            "(SELECT MAX(id) FROM sop_enrolment))"
        )
    print(
        f"[{dialect}] enrol+plan {enrolled:,} enrolments + {touches:,} touches in {ours_s:.1f} s "
        f"= {rows / ours_s:,.0f} rows/s (streamed; process RSS at most {ours_rss:.0f} MiB "
        f"while it ran); plain bulk insert of the same rows "
        f"{rows / base_s:,.0f} rows/s; ratio {base_s / ours_s:.2f} (target >= 0.5)"
    )
    _ = store


async def _dispatch_day(
    settings: Any, dialect: str, day_touches: int, advisors: int, api_limit: int
) -> None:
    import aiohttp
    import redis.asyncio as aioredis

    from bot.jobs import OutboxDispatcher
    from bot.models import OutboxItem
    from bot.outbox import OutboxPolicies
    from bot.sandbox import SandboxState, start_fake_wecom
    from bot.sandbox.fake_api import Member
    from bot.wecom.client import WeComClient
    from core.metrics import Metrics
    from sop.engine import enrol, runtime, store
    from sop.engine.checks import ContentChecker
    from sop.engine.dispatch import Engine, EngineConfig
    from sop.engine.quotas import Quotas
    from sop.plugin import DOMAIN

    state = SandboxState(corp_id="wwbenchsop000001", default_rate_limit=None)
    state.rate_limits["message/send"] = (api_limit, 60.0)
    for a in range(advisors):
        state.add_member(Member(f"adv{a:05d}", f"顾问{a}", [1]))
    runner, base = await start_fake_wecom(state)
    redis = aioredis.Redis.from_url(settings.redis_url)
    ns = f"benchsop{uuid.uuid4().hex[:6]}"
    plan = await _campaign(
        "bench-day",
        [
            {
                "delivery": "reminder",
                "window_start": "00:00",
                "window_end": "23:59",
                "content": {"kind": "text", "text": CALM},
            }
        ],
    )
    customers = [f"wmSOP{i:015d}" for i in range(day_touches)]
    now = datetime.now(UTC) - timedelta(seconds=5)
    t0 = time.perf_counter()
    await enrol.enrol_list(plan, customers=customers, ref="manual:day", at=now)
    print(
        f"[{dialect}] {day_touches:,} touches of the day planned in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    quotas = Quotas.build(
        redis,
        namespace=ns,
        member_minute_cap=20,
        member_hour_cap=800,
        mass_send_per_day=1,
        # The engine plans a little under the limit; the client's bucket spreads calls.
        api_per_minute={"message/send": int(api_limit * 0.98)},
        api_default_per_minute=6000,
    )
    engine = Engine(
        config=EngineConfig(batch_size=1000, digest_max_items=15, agent_id=state.agent_id),
        quotas=quotas,
        checker=ContentChecker(),
    )
    runtime.bind(engine)
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        client = WeComClient(
            session=session,
            redis=redis,
            corp_id=state.corp_id,
            base_url=base,
            secrets=state.secrets,
            agent_id=state.agent_id,
            namespace=ns,
            # One token at a time, refilled at 98% of the limit: no burst can put more
            # than the limit into any sliding minute.
            rate_limits={"message/send": (1, api_limit * 0.98 / 60)},
            max_rate_wait_s=30.0,
        )
        dispatcher = OutboxDispatcher(
            client=client,
            settings=settings.outbox,
            metrics=metrics,
            policies=OutboxPolicies.from_domains([DOMAIN]),
        )
        sampler = _RssSampler()
        sampler.start()
        start = time.perf_counter()

        finished = asyncio.Event()

        async def schedule() -> None:
            # Until every touch of the day is settled (sent, skipped or failed).  Paced
            # as the sop-scheduler job is: again at once while a tick finds work, else
            # after SIYU_SOP__SCHEDULER_INTERVAL_S.
            while await _pending(plan.campaign_id):
                if not await engine.tick():
                    await asyncio.sleep(settings.sop.scheduler_interval_s)
            finished.set()

        async def send() -> None:
            while not finished.is_set():
                if not await dispatcher.tick():
                    await asyncio.sleep(0.5)

        await asyncio.gather(schedule(), send())
        elapsed = time.perf_counter() - start
        peak = await sampler.stop()
    await runner.cleanup()
    sends = sorted(m.sent_at for m in state.app_messages)
    limited = await OutboxItem.filter(last_errcode=45009).count()
    worst, j = 0, 0
    for i, t in enumerate(sends):
        while sends[j] <= t - 60:
            j += 1
        worst = max(worst, i - j + 1)
    span = (sends[-1] - sends[0]) if len(sends) > 1 else 1.0
    per_minute = (len(sends) - 1) / span * 60 if len(sends) > 1 else 0.0
    print(
        f"[{dialect}] dispatched {day_touches:,} touches as {len(sends):,} digests in "
        f"{elapsed:.0f} s: {per_minute:,.0f} calls/min of the configured {api_limit:,} = "
        f"{per_minute / api_limit:.2f} of the limit (target >= 0.9); busiest sliding minute "
        f"{worst:,} (limit {api_limit:,}); 45009 answers {limited}; dropped by member caps "
        f"{len(state.dropped_app_messages())}; process RSS at most {peak:.0f} MiB"
    )
    keys = [k async for k in redis.scan_iter(f"{ns}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    _ = store


class _RssSampler:
    """The process's resident memory, sampled every 0.2 s while a phase runs."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def start(self) -> None:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, self.rss_mib())
                await asyncio.sleep(0.2)

        self._task = asyncio.create_task(sample())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return max(self.peak, self.rss_mib())


async def _pending(campaign_id: int) -> int:
    from sop.models import Touch

    return await Touch.filter(
        campaign_id=campaign_id, state__in=("planned", "due", "sending")
    ).count()


async def _run(url: str, data_dir: Path, args: argparse.Namespace, redis_url: str) -> None:
    from tortoise import Tortoise

    from core import db as core_db
    from core.settings import Settings
    from siyu.app import schema_of
    from siyu.domains import DOMAINS

    dialect = core_db.dialect_of(url)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, database_url=url, redis_url=redis_url
    )
    schema = schema_of(DOMAINS)
    await core_db.init_db(settings, schema)
    try:
        conn = Tortoise.get_connection("default")
        await core_db.migrate(conn, schema, dialect)
        t0 = time.perf_counter()
        await _seed(conn, dialect, args.customers, args.advisors, random.Random(7))
        print(
            f"[{dialect}] seeded {args.customers:,} customers in {time.perf_counter() - t0:.0f} s"
        )
        await _enrol_vs_bulk(conn, dialect, args.customers)
        if args.day_touches:
            await _dispatch_day(
                settings,
                dialect,
                min(args.day_touches, args.customers),
                args.advisors,
                args.api_limit,
            )
    finally:
        await core_db.close_db()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--advisors", type=int, default=500)
    parser.add_argument("--day-touches", type=int, default=30_000)
    parser.add_argument("--api-limit", type=int, default=1200, help="message/send calls a minute")
    parser.add_argument("--redis-url", default="", help="default: an embedded Redis")
    parser.add_argument("--pg-server", default="")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-sop")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    data_dir: Path = args.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        from core.redis import start_embedded

        embedded = start_embedded(data_dir / "redis", fsync="everysec")
        redis_url = embedded.url
    try:
        if not args.no_sqlite:
            asyncio.run(_run(f"sqlite://{data_dir / 'sop.sqlite3'}", data_dir, args, redis_url))
        if args.pg_server:
            name = f"siyu_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(pg_admin(args.pg_server, f'CREATE DATABASE "{name}"'))
            try:
                url = f"{args.pg_server.rsplit('/', 1)[0]}/{name}"
                asyncio.run(_run(url, data_dir, args, redis_url))
            finally:
                asyncio.run(
                    pg_admin(args.pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
    finally:
        if embedded is not None:
            embedded.shutdown()
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
