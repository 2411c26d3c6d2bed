"""`siyu demo`'s example campaigns: built, approved by another person and running, once."""

from __future__ import annotations

from typing import Any

from core.models import AuditEntry
from sop import campaigns
from sop.models import Campaign, CampaignStatus, CampaignVersion, VersionStatus
from tests.sop.seed import OPS, REVIEWER


async def test_the_demo_campaign_runs_once_approved(db: None, analyzer: Any) -> None:
    c = await campaigns.seed_demo_campaign(author=OPS, approver=REVIEWER, analyzer=analyzer)
    assert c is not None
    c = await Campaign.get(id=c.id)
    assert (c.status, c.current_version, c.name) == (CampaignStatus.ACTIVE, 1, "理财到期提醒")
    v = await CampaignVersion.get(campaign_id=c.id, version=1)
    assert v.status == VersionStatus.ACTIVE and v.approved_by == REVIEWER.ref
    assert v.findings == []  # the example's content passes the shipped analyzer
    actions = [e.action for e in await AuditEntry.filter(target=f"campaign:{c.id}").order_by("seq")]
    assert actions == [
        "sop.campaign.create",
        "sop.campaign.submit",
        "sop.campaign.approve",
        "sop.campaign.activate",
    ]
    # A restart of the demo adds nothing.
    assert (
        await campaigns.seed_demo_campaign(author=OPS, approver=REVIEWER, analyzer=analyzer) is None
    )
    assert await Campaign.all().count() == 2
    welcome = await Campaign.get(name="新客户欢迎旅程")
    assert welcome.status == CampaignStatus.ACTIVE
    w = await CampaignVersion.get(campaign_id=welcome.id, version=1)
    assert w.trigger == {"kind": "customer_added"} and w.findings == []
