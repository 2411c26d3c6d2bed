"""The engine inside the running application: the scheduler role's jobs, and several
schedulers claiming from one table."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import time_machine
from pydantic import SecretStr

from bot import models as bot_models
from bot.sandbox.fake_api import SandboxState, build_fake_wecom_app
from core.appkit import METRICS
from core.server import start_site
from core.settings import Settings
from sop.engine import enrol, runtime
from sop.engine.dispatch import Engine
from sop.models import Touch
from tests.bot.harness import Edge
from tests.sop.test_engine_flow import sh
from tests.sop.test_engine_reliability import reminder_campaign


async def test_scheduler_role_runs_the_engine_jobs(
    settings: Settings, redis_client: object, db: None
) -> None:
    from siyu.app import create_app

    state = SandboxState(corp_id=settings.wecom.corp_id)
    state.seed_demo(random.Random(3))
    fake, fake_port = await start_site(build_fake_wecom_app(state), "127.0.0.1", 0)
    settings.wecom.api_base_url = f"http://127.0.0.1:{fake_port}"
    settings.wecom.app_secret = SecretStr(state.secrets["app"])
    settings.wecom.agent_id = state.agent_id
    settings.sop.scheduler_interval_s = 0.05
    app = create_app(settings, ("scheduler",), auto_migrate=True)
    runner, _ = await start_site(app, "127.0.0.1", 0)
    try:
        runs = app[METRICS].job_runs
        for _ in range(200):
            seen = {
                name: sum(runs.labels(name, o)._value.get() for o in ("idle", "busy"))
                for name in ("sop-scheduler", "sop-triggers", "sop-results")
            }
            if all(seen.values()):
                break
            await asyncio.sleep(0.05)
        assert all(seen.values()), seen
        for name in seen:
            assert runs.labels(name, "error")._value.get() == 0
        assert isinstance(runtime.current(), Engine)
    finally:
        await runner.cleanup()
        await fake.cleanup()


async def test_two_schedulers_never_hand_a_touch_over_twice(edge: Edge) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        plans = [await reminder_campaign(60, advisor=a) for a in ("zhangwei", "lina")]
        for plan in plans:
            customers = [f"wmREL{plan.campaign_id}x{i:04d}" for i in range(60)]
            await enrol.enrol_list(plan, customers=customers, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        one = runtime.current()
        one.config = dataclasses.replace(one.config, batch_size=25)
        two = Engine(config=one.config, quotas=one.quotas, checker=one.checker)
        for _ in range(20):
            done = await asyncio.gather(one.tick(), two.tick())
            if not any(done):
                break
        touches = await Touch.all()
        assert {t.state for t in touches} == {"sending"}
        rows = await bot_models.OutboxItem.filter(origin__startswith="sop.")
        assert len({r.id for r in rows}) == len(rows)
        assert {t.outbox_id for t in touches} == {r.id for r in rows}
        # Every touch in exactly one digest: the digests' line counts add up to 120.
        listed = sum(r.payload["text"]["content"].count("/sidebar/?customer=") for r in rows)
        assert listed == 120


async def test_a_batch_takes_whole_advisors_so_digests_stay_full(edge: Edge) -> None:
    from sop.engine import store
    from sop.engine.planner import Target
    from sop.engine.planner import enrol as plan_enrol

    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        plan = await reminder_campaign(0)
        advisors = ("zhangwei", "lina", "chenjie")
        targets = []
        for i in range(60):  # interleaved: each advisor's touches spread over the table
            advisor = advisors[i % 3]
            ext = f"wmMIX{i:04d}"
            from tests.sop.test_engine_flow import add_relation

            await add_relation(advisor, ext, name=f"客户{i}", attributes={})
            targets.append(Target(ext, advisor, "m:1", sh(2026, 9, 15, 9, 0)))
        from tortoise.transactions import in_transaction

        async with in_transaction() as conn:
            await plan_enrol(conn, plan, targets)
        _ = store
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        engine = runtime.current()
        engine.config = dataclasses.replace(engine.config, batch_size=6)
        while await engine.tick():
            pass
        rows = await bot_models.OutboxItem.filter(origin__startswith="sop.")
        # Six touches of one advisor per batch: ten digests of six, not thirty of two.
        assert len(rows) <= 12
        assert {t.state for t in await Touch.all()} == {"sending"}


async def test_a_bad_holiday_file_stops_the_start_and_closes_what_started(
    settings: Settings, redis_client: object, db: None, tmp_path: object
) -> None:
    """The operator's calendar is checked when the engine starts: a bad file stops the
    process with the entry named (a configuration error), and the contexts started
    before it (database, Redis, the edge) are closed, not left for the loop to reap."""
    from pathlib import Path

    import pytest

    from core.settings import SettingsError
    from siyu.app import create_app
    from sop.engine import holidays

    bad = Path(str(tmp_path)) / "holidays.json"
    bad.write_text('{"2027": {"holidays": {"2027-01-01": "元旦"}, "workdays": ["2027-01-04"]}}')
    settings.sop.holiday_file = str(bad)
    settings.wecom.app_secret = SecretStr("x" * 43)
    settings.wecom.agent_id = 1000002
    app = create_app(settings, ("scheduler",), auto_migrate=True)
    closed: list[str] = []

    async def first(_app: object) -> object:
        yield
        closed.append("first")

    app.cleanup_ctx.insert(0, first)
    with pytest.raises(SettingsError) as err:
        await start_site(app, "127.0.0.1", 0)
    assert "2027.workdays: 2027-01-04 is a weekday" in str(err.value)
    assert closed == ["first"]
    assert holidays.year_sources().get(2027) is None
