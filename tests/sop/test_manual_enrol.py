"""Manual enrolment into a running `manual` campaign: a list, or a snapshot of the
audience — through the API and the console, once per customer, audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from bot.models import RelationStatus
from core.models import AuditEntry
from sop import campaigns
from sop.models import Enrolment, Touch
from tests.admin.console import Console, make_operator, signed_in_client
from tests.sop.seed import CUSTOMERS, OPS, REVIEWER, maturity_spec, seed_customers
from tests.sop.test_api import _call, _key


async def _follows() -> None:
    """Every seeded customer but the last is followed by adv-li."""
    async with in_transaction() as conn:
        advisor = await bot_service.upsert_advisor(conn=conn, userid="adv-li")
        for ext, *_ in CUSTOMERS[:-1]:
            customer = await bot_models.Customer.get(external_userid=ext)
            await bot_service.upsert_follow(
                conn=conn,
                customer=customer,
                advisor=advisor,
                status=RelationStatus.ACTIVE,
                at=datetime.now(UTC),
            )


async def _manual_campaign(analyzer: Any) -> int:
    spec = maturity_spec(trigger={"kind": "manual"}, audience='tag:"高净值"')
    saved = await campaigns.do_create_campaign(spec=spec, actor=OPS, analyzer=analyzer)
    cid = saved.campaign.id
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
    await campaigns.do_approve(campaign_id=cid, version=1, comment="", actor=REVIEWER)
    return cid


async def test_a_list_and_a_snapshot_enrol_each_customer_once(
    console: Console, analyzer: Any
) -> None:
    await seed_customers()
    await _follows()
    cid = await _manual_campaign(analyzer)
    write = await _key("campaigns:write")
    # Not running yet: refused, nothing enrolled.
    status, body = await _call(console, "POST", f"/api/v1/campaigns/{cid}/enrol", write, {})
    assert status == 409 and body["error"]["code"] == "not_active"
    await campaigns.do_activate(campaign_id=cid, actor=OPS)

    # A list: the unfollowed customer (…0004) and an unknown id are left out.
    listed = ["wmSOP00000000000000003", "wmSOP00000000000000004", "wmUNKNOWN000000000001"]
    status, body = await _call(
        console, "POST", f"/api/v1/campaigns/{cid}/enrol", write, {"customers": listed}
    )
    assert status == 200 and body["enrolled"] == 1
    # The audience snapshot (高净值: …0001 and …0002), from the console.
    await make_operator("marketing", name="ops-manual")
    client, token = await signed_in_client(console, "ops-manual")
    async with client:
        async with client.get(console.url(f"/campaigns/{cid}")) as r:
            assert 'id="enrol-panel"' in await r.text()
        async with client.post(
            console.url(f"/campaigns/{cid}/enrol"),
            data={"_csrf": token, "mode": "audience"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and "done=enrolled" in r.headers["Location"]
    enrolled = sorted(await Enrolment.filter(campaign_id=cid).values_list("customer", flat=True))
    assert enrolled == [
        "wmSOP00000000000000001",
        "wmSOP00000000000000002",
        "wmSOP00000000000000003",
    ]
    # Each enrolment has its two steps planned.
    assert await Touch.filter(campaign_id=cid).count() == 6
    details = [
        e.detail for e in await AuditEntry.filter(action="sop.campaign.enrol").order_by("seq")
    ]
    assert '"enrolled":1' in details[0] and '"kind":"list"' in details[0]
    assert '"enrolled":2' in details[1] and '"kind":"audience_snapshot"' in details[1]

    # Bad lists are refused by field.
    status, body = await _call(
        console, "POST", f"/api/v1/campaigns/{cid}/enrol", write, {"customers": ["  "]}
    )
    assert status == 400 and body["error"]["field"] == "customers"


async def test_only_manual_campaigns_take_manual_enrolment(db: None, analyzer: Any) -> None:
    await seed_customers()
    c = await campaigns.seed_demo_campaign(author=OPS, approver=REVIEWER, analyzer=analyzer)
    assert c is not None
    with pytest.raises(campaigns.StateConflict) as info:
        await campaigns.do_enrol_manual(campaign_id=c.id, customers=["wmX"], actor=OPS)
    assert info.value.code == "not_manual"
    assert await Enrolment.filter(campaign_id=c.id).count() == 0
