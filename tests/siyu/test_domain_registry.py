"""A new domain plugs in through the registry alone (tests/stubdomain: no edit to bot or core)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot import models as bot_models
from bot.hooks import Hooks
from bot.jobs import OutboxDispatcher
from bot.keys import HOOKS, METRICS, OUTBOX_POLICIES, WECOM_CLIENT
from core.domain import Domain
from core.settings import Settings
from siyu.app import create_app
from siyu.domains import DOMAINS
from tests.bot.harness import start_edge
from tests.bot.test_edge import text_msg
from tests.stubdomain import DOMAIN as STUB
from tests.stubdomain import TICKED, TICKS

WITH_STUB = (*DOMAINS, STUB)


async def test_stub_domain_hook_route_outbox_check_and_settled_callback(
    settings: Settings, analyzer: Any, redis_client: Any, db: None
) -> None:
    from tests.stubdomain.models import StubNote

    edge, closers = await start_edge(settings, analyzer=analyzer, domains=WITH_STUB)
    try:
        # The stub's hook runs after those of the root's domains (tagging's rules).
        root_hooks = Hooks.from_domains(DOMAINS).names["on_message"]
        assert edge.app[HOOKS].names["on_message"] == [*root_hooks, "stub.on_message"]
        await edge.post_callback(text_msg("8300000000000000001", "请帮我查一下 13812345678"))
        await edge.post_callback(text_msg("8300000000000000002", "刚才那条撤回"))
        await edge.process_all()

        # The hook ran inside the storing transaction and saw the masked text only.
        notes = await StubNote.all().order_by("message_id")
        assert len(notes) == 2
        assert "13812345678" not in notes[0].text_masked
        stored = await bot_models.Message.get(msgid="8300000000000000001")
        assert notes[0].message_id == stored.id

        # Its route is mounted behind the API's authentication.
        status, _ = await edge.api("GET", "/api/v1/stub/notes", headers={"Authorization": "x"})
        assert status == 401
        status, body = await edge.api("GET", "/api/v1/stub/notes")
        assert status == 200 and len(body["notes"]) == 2

        # Its outbox rows: the before-send check cancels one, the other is sent;
        # the on-settled callback learns both outcomes (and WeCom's answer).
        rows = await bot_models.OutboxItem.filter(origin__startswith="stub.note:").order_by("id")
        assert len(rows) == 2
        dispatcher = OutboxDispatcher(
            client=edge.app[WECOM_CLIENT],
            settings=settings.outbox,
            metrics=edge.app[METRICS],
            policies=edge.app[OUTBOX_POLICIES],
        )
        assert await dispatcher.tick() >= 2
        sent, cancelled = await StubNote.all().order_by("message_id")
        assert sent.outcome == "sent" and "invaliduser" in sent.wecom_answer
        assert cancelled.outcome == "cancelled"
        assert cancelled.wecom_answer == {"reason": "备注含「撤回」，不再发送"}
        states = [
            r.state
            for r in await bot_models.OutboxItem.filter(origin__startswith="stub.note:").order_by(
                "id"
            )
        ]
        assert states == ["done", "cancelled"]
        assert not await bot_models.OutboxItem.filter(notify_pending=True).exists()
    finally:
        for close in closers:
            await close()


async def test_failing_settled_callback_is_retried_until_it_succeeds(
    settings: Settings, analyzer: Any, redis_client: Any, db: None
) -> None:
    from tests.stubdomain import on_settled
    from tests.stubdomain.models import StubNote

    # Once with the outcome (rolled back together), once on its own right after.
    calls = {"fail": 2}

    async def flaky_settled(settled: Any, conn: Any) -> None:
        if calls["fail"]:
            calls["fail"] -= 1
            raise RuntimeError("stub store hiccup")
        await on_settled(settled, conn)

    flaky = Domain(
        name="stub",
        model_modules=STUB.model_modules,
        migrations=STUB.migrations,
        hooks=STUB.hooks,
        outbox_settled={"stub.note": flaky_settled},
    )
    edge, closers = await start_edge(settings, analyzer=analyzer, domains=(*DOMAINS, flaky))
    try:
        await edge.post_callback(text_msg("8300000000000000011", "你好"))
        await edge.process_all()
        dispatcher = OutboxDispatcher(
            client=edge.app[WECOM_CLIENT],
            settings=settings.outbox,
            metrics=edge.app[METRICS],
            policies=edge.app[OUTBOX_POLICIES],
        )
        await dispatcher.dispatch_due()
        # Sent, and the outcome is recorded even though the callback failed ...
        row = await bot_models.OutboxItem.get(origin__startswith="stub.note:")
        assert row.state == "done" and row.notify_pending
        assert (await StubNote.get()).outcome == ""
        # ... and the next tick delivers it, once.
        assert await dispatcher.notify_settled() == 1
        assert await dispatcher.notify_settled() == 0
        assert (await StubNote.get()).outcome == "sent"
    finally:
        for close in closers:
            await close()


async def test_stub_domain_job_runs_in_its_role(
    settings: Settings, redis_client: Any, analyzer: Any, db: None
) -> None:
    from core.server import start_site

    app = create_app(settings, ("admin",), domains=WITH_STUB, auto_migrate=True, analyzer=analyzer)
    runner, _port = await start_site(app, "127.0.0.1", 0)
    try:
        await asyncio.wait_for(app[TICKED].wait(), timeout=30)
        assert app[TICKS][0] == 1
        metrics = app[METRICS].registry.get_sample_value(
            "siyu_job_runs_total", {"job": "stub-tick", "outcome": "idle"}
        )
        assert metrics and metrics >= 1
    finally:
        await runner.cleanup()
    # Stopped with the app: no tick after cleanup.
    n = len(app[TICKS])
    await asyncio.sleep(0.2)
    assert len(app[TICKS]) == n


def test_stub_domain_cli_command_is_listed_and_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.domain import CliContext
    from siyu import cli as siyu_cli
    from siyu.app import schema_of

    ctx = CliContext(settings_factory=lambda: settings, schema=schema_of(WITH_STUB))
    parser = siyu_cli.build_parser(ctx, domains=WITH_STUB)
    assert "stub" in parser.format_help()
    assert siyu_cli.main(["migrate"], ctx=ctx, domains=WITH_STUB) == 0
    capsys.readouterr()
    assert siyu_cli.main(["stub", "count"], ctx=ctx, domains=WITH_STUB) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"notes": 0}


def test_domain_record_refuses_foreign_origins_and_unknown_hook_points() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Domain(name="stub", outbox_checks={"sop.touch": STUB.outbox_checks["stub.note"]})
    with pytest.raises(ValueError, match="unknown hook points"):
        Domain(name="stub", hooks={"before_store": STUB.hooks["on_message"]})  # type: ignore[dict-item]


async def test_every_domains_customer_export_names_only_that_customer(edge: Any) -> None:
    """The record's export function: what a PIPL access request returns, per domain."""
    from tortoise.transactions import in_transaction

    from tests.bot.test_edge import contact_event

    await edge.post_callback(contact_event("add_external_contact", "zhangwei", "wmEXPORT01"))
    await edge.post_callback(contact_event("add_external_contact", "zhangwei", "wmOTHER002"))
    await edge.process_all()
    exports = {}
    async with in_transaction() as conn:
        for d in DOMAINS:
            if d.export_customer is not None:
                exports[d.name] = await d.export_customer(conn=conn, external_userid="wmEXPORT01")
    assert exports["bot"]["customer"][0]["external_userid"] == "wmEXPORT01"
    assert [f["advisor"] for f in exports["bot"]["follow_relations"]] == ["zhangwei"]
    assert "wmOTHER002" not in json.dumps(exports, ensure_ascii=False)
