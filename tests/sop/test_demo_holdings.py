"""`siyu demo`'s holdings feed: the seeded customers' holdings go in through tagging's
attribute import (amounts sealed, maturity dates in the clear, audited), today's date
triggers enrol whoever matures a week from today in the demo's 理财到期提醒, and the
engine turns their reminders into digests the advisors receive from the sandbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import time_machine
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from bot.jobs import OutboxDispatcher
from bot.keys import METRICS, OUTBOX_POLICIES, WECOM_CLIENT
from bot.models import RelationStatus
from core.models import AuditEntry
from siyu.demo import MATURITY_IN_DAYS, _import_holdings, demo_holdings
from sop import campaigns
from sop.engine import runtime
from sop.engine.timing import SHANGHAI
from sop.models import Campaign, Enrolment, Touch
from tagging import attributes
from tagging.models import AttributeImport, SealedAttribute
from tests.bot.harness import Edge
from tests.sop.seed import OPS, REVIEWER

ADVISOR = "zhangwei"


def test_the_feed_rows_pass_the_import_checks() -> None:
    today = date(2026, 9, 14)
    rows = demo_holdings([f"wm{i:03d}" for i in range(30)], today)
    schema = attributes.BUILTIN
    checked = [attributes.check_row(i + 1, r, schema) for i, r in enumerate(rows)]
    # Amounts are sealed; the clear copy keeps what audiences and triggers read.
    assert all("holdings" in c.sealed and "amount" not in str(c.attributes) for c in checked)
    days = sorted(
        {(date.fromisoformat(c.attributes["maturity_date"]) - today).days for c in checked}
    )
    assert days == sorted(set(MATURITY_IN_DAYS))
    week = [c for c in checked if c.attributes["maturity_date"] == "2026-09-21"]
    assert len(week) == 14 and sum(c.attributes["risk_level"] == "C1" for c in week) == 1


async def _follow(ext: str, name: str) -> None:
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        await bot_models.Customer.filter(id=customer.id).using_db(conn).update(name=name)
        customer = await bot_models.Customer.get(id=customer.id).using_db(conn)
        advisor = await bot_service.upsert_advisor(conn=conn, userid=ADVISOR)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=datetime.now(UTC),
        )


async def _drain(edge: Edge) -> None:
    """Scheduler ticks and outbox rounds until neither has work."""
    for _ in range(20):
        ticked = await runtime.current().tick()
        d = OutboxDispatcher(
            client=edge.app[WECOM_CLIENT],
            settings=edge.settings.outbox,
            metrics=edge.app[METRICS],
            policies=edge.app[OUTBOX_POLICIES],
        )
        n = await d.dispatch_due(limit=500) + await d.notify_settled()
        if not ticked and not n:
            return


async def test_the_demo_enrols_next_weeks_maturities_and_advisors_get_digests(
    edge: Edge, analyzer: Any
) -> None:
    # A Monday, 09:00 in Beijing: inside the send window.
    with time_machine.travel(datetime(2026, 9, 14, 9, 0, tzinfo=SHANGHAI), tick=False):
        await campaigns.seed_demo_campaign(author=OPS, approver=REVIEWER, analyzer=analyzer)
        customers = [f"wmDemoHold{i:03d}" for i in range(30)]
        # Customers siyu knows (WeCom told it); one more the feed names is not known yet.
        for i, ext in enumerate(customers[:-1]):
            await _follow(ext, f"客户{i:02d}")
        stop = asyncio.Event()
        task = asyncio.create_task(_import_holdings(edge.app, customers, stop))
        await asyncio.sleep(0.5)
        assert not task.done()  # still waiting for the last customer
        await _follow(customers[-1], "客户29")
        await asyncio.wait_for(task, timeout=30)

        imports = await AttributeImport.all().order_by("id")
        assert [(i.source, i.actor) for i in imports] == [("demo", "system:demo")] * 2
        audited = await AuditEntry.filter(action="tagging.attributes.import").count()
        assert audited == 2
        row = await bot_models.Customer.get(external_userid=customers[0])
        assert row.attributes["maturity_date"] == "2026-09-21"
        assert row.attributes["holdings"] == [
            {"product_code": "WM-365", "risk_level": "R2", "maturity_date": "2026-09-21"}
        ]
        assert await SealedAttribute.filter(name="holdings").count() == 30

        maturity = await Campaign.get(name="理财到期提醒")
        week = {
            r["external_userid"]
            for r in demo_holdings(customers, date(2026, 9, 14))
            if r["attributes"]["maturity_date"] == "2026-09-21"
        }
        enrolled = await Enrolment.filter(campaign_id=maturity.id).values_list(
            "customer", flat=True
        )
        assert sorted(enrolled) == sorted(week) and len(week) == 14

        await _drain(edge)
        delivered = edge.state.delivered_app_messages(ADVISOR)
        digest = "\n".join(m.content["content"] for m in delivered)
        # The reminders are due now (the next week's mass sends are not); the C1
        # customer's is skipped, the rest reach the advisor digested, not one by one.
        touches = await Touch.filter(campaign_id=maturity.id).order_by("id")
        reminders = [t for t in touches if t.due_at <= datetime.now(UTC)]
        assert sorted(t.state for t in reminders) == ["sent"] * 13 + ["skipped"]
        assert 1 <= len(delivered) < 13
        assert all(len(m.content["content"].encode()) <= 2048 for m in delivered)
        (unsuitable,) = [t for t in reminders if t.state == "skipped"]
        assert unsuitable.reason == "unsuitable"
        names = {r.external_userid: r.name for r in await bot_models.Customer.all()}
        for t in reminders:
            assert (names[t.customer] in digest) == (t.state == "sent")
        assert "稳享理财 365 天" in digest and "2026-09-21" in digest
