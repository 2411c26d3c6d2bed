"""The SOP console pages over HTTP: who sees what, the builder's form round trip, the
inline check, the calendar, the approval view and the results (browser walk elsewhere)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from sop import campaigns
from sop.models import Campaign, CampaignStatus, CampaignVersion, VersionStatus
from tests.admin.console import Console, make_operator, signed_in_client
from tests.sop.seed import OPS, maturity_spec, seed_customers


def form_of(spec: Any) -> dict[str, str]:
    """A campaign as the builder's form posts it."""
    raw = spec.model_dump(mode="json", exclude_none=True)
    t = raw.get("trigger") or {}
    form = {
        "name": raw["name"],
        "segment": raw["segment"],
        "description": raw.get("description", ""),
        "trigger_kind": t.get("kind", ""),
        "trigger_attribute": t.get("attribute", ""),
        "trigger_days_before": str(t.get("days_before", "")),
        "audience": raw.get("audience") or "",
        "reentry": raw["reentry"],
        "goal_intent": (raw.get("goal") or {}).get("intent", ""),
        "product_code": (raw.get("product") or {}).get("code", ""),
        "product_name": (raw.get("product") or {}).get("name", ""),
        "product_risk_level": (raw.get("product") or {}).get("risk_level", ""),
        "step_count": str(len(raw["steps"])),
    }
    for e in raw["exit_conditions"]:
        form[f"exit_{e['kind']}"] = e.get("tag", "1")
    for i, s in enumerate(raw["steps"], 1):
        c = s["content"]
        form.update(
            {
                f"s{i}_name": s.get("name", ""),
                f"s{i}_delivery": s["delivery"],
                f"s{i}_anchor": s["anchor"],
                f"s{i}_offset_days": str(s["offset_days"]),
                f"s{i}_offset_minutes": str(s["offset_minutes"]),
                f"s{i}_at_time": s.get("at_time") or "",
                f"s{i}_window_start": s["window_start"],
                f"s{i}_window_end": s["window_end"],
                f"s{i}_kind": c["kind"],
                f"s{i}_text": c.get("text", ""),
            }
        )
        if s["skip_weekends"]:
            form[f"s{i}_skip_weekends"] = "1"
        if s["skip_holidays"]:
            form[f"s{i}_skip_holidays"] = "1"
        if c.get("link"):
            for k in ("title", "url", "desc", "picurl"):
                form[f"s{i}_link_{k}"] = c["link"].get(k, "")
    return form


async def _client(console: Console, role: str) -> tuple[aiohttp.ClientSession, str]:
    await make_operator(role, name=f"{role}-sop")
    return await signed_in_client(console, f"{role}-sop")


async def test_marketing_builds_through_the_form_and_the_list_shows_it(console: Console) -> None:
    await seed_customers()
    client, token = await _client(console, "marketing")
    async with client:
        async with client.get(console.url("/campaigns/new")) as r:
            html = await r.text()
            assert r.status == 200 and 'id="builder-form"' in html
        async with client.get(console.url("/")) as r:
            assert 'href="/campaigns"' in await r.text()  # "SOP 运营" in the sidebar
        form = {"_csrf": token, "op": "save", **form_of(maturity_spec())}
        async with client.post(
            console.url("/campaigns/new"), data=form, allow_redirects=False
        ) as r:
            assert r.status == 303, await r.text()
            where = r.headers["Location"]
        c = await Campaign.get(name="到期提醒")
        assert where.startswith(f"/campaigns/{c.id}?done=created")
        v = await CampaignVersion.get(campaign_id=c.id, version=1)
        assert v.trigger == {
            "kind": "attribute_date",
            "attribute": "maturity_date",
            "days_before": 7,
        }
        async with client.get(console.url(where)) as r:
            html = await r.text()
            assert r.status == 200 and "活动已保存为草稿" in html and "到期资金安排说明" in html
        async with client.get(console.url("/campaigns")) as r:
            html = await r.text()
            assert "到期提醒" in html and "草稿" in html
        # The edit form comes back with the stored values.
        async with client.get(console.url(f"/campaigns/{c.id}/edit")) as r:
            html = await r.text()
            assert 'value="到期提醒"' in html and "https://bank.example.com/maturity" in html
        # Adding a step re-renders the form without saving.
        form = {"_csrf": token, "op": "add_step", **form_of(maturity_spec())}
        async with client.post(console.url(f"/campaigns/{c.id}/edit"), data=form) as r:
            html = await r.text()
            assert r.status == 200 and 'id="step-3"' in html
        assert await CampaignVersion.filter(campaign_id=c.id).count() == 1


async def test_a_bad_form_is_shown_again_with_errors_by_field(console: Console) -> None:
    await seed_customers()
    client, token = await _client(console, "marketing")
    form = {"_csrf": token, "op": "save", **form_of(maturity_spec())}
    form["s1_text"] = "您好 {customer_nmae}，这款产品保本保收益"
    form["s2_at_time"] = "23:00"
    form["s2_offset_days"] = "abc"
    async with client:
        async with client.post(console.url("/campaigns/new"), data=form) as r:
            html = await r.text()
    assert r.status == 400
    assert "未保存" in html
    assert 'data-error-for="steps[2].offset_days"' in html
    # The values typed are kept.
    assert "{customer_nmae}" in html
    assert await Campaign.all().count() == 0


async def test_inline_check_highlights_a_violation(console: Console) -> None:
    client, token = await _client(console, "marketing")
    async with client:
        async with client.post(
            console.url("/campaigns/builder/check-step"),
            data={
                "_csrf": token,
                "step": "2",
                "s2_kind": "text",
                "s2_text": "这款产品保本保收益，放心买",
            },
            headers={"X-CSRF-Token": token},
        ) as r:
            html = await r.text()
    assert r.status == 200
    assert 'data-check-result="violation"' in html
    assert re.search(r'<mark class="hl-violation"[^>]*>保本保收益</mark>', html), html
    assert "资管新规" in html or "指导意见" in html  # the basis is shown


async def test_calendar_and_audience_count(console: Console) -> None:
    await seed_customers()
    client, token = await _client(console, "marketing")
    async with client:
        async with client.get(
            console.url("/campaigns/builder/audience-count"),
            params={"audience": 'tag:"高净值"', "trigger_kind": ""},
        ) as r:
            html = await r.text()
            assert "<strong>2</strong> / 4" in html
        async with client.get(
            console.url("/campaigns/builder/audience-count"),
            params={"audience": 'tag:"高净值" AND (', "trigger_kind": ""},
        ) as r:
            assert 'id="audience-error"' in await r.text()
        spec = maturity_spec(trigger=None, audience='tag:"高净值"')
        data = {"_csrf": token, **form_of(spec)}
        async with client.post(
            console.url("/campaigns/builder/calendar"), data=data, headers={"X-CSRF-Token": token}
        ) as r:
            html = await r.text()
    assert r.status == 200
    # Two customers entering today, two steps each: four touches in the window.
    assert "共 <strong>4</strong> 次触达" in html
    totals = [int(n) for n in re.findall(r'data-total="(\d+)"', html)]
    assert len(totals) == 30 and sum(totals) == 4


async def test_compliance_reviews_and_decides_in_the_console(
    console: Console, analyzer: Any
) -> None:
    await seed_customers()
    saved = await campaigns.do_create_campaign(spec=maturity_spec(), actor=OPS, analyzer=analyzer)
    await campaigns.do_submit(campaign_id=saved.campaign.id, actor=OPS, analyzer=analyzer)
    cid = saved.campaign.id
    marketing, _ = await _client(console, "marketing")
    async with marketing:
        async with marketing.get(console.url(f"/campaigns/{cid}/review")) as r:
            assert r.status == 403
    client, token = await _client(console, "compliance")
    async with client:
        async with client.get(console.url("/campaigns/approvals")) as r:
            assert "到期提醒" in await r.text()
        async with client.get(console.url(f"/campaigns/{cid}/review")) as r:
            html = await r.text()
            assert r.status == 200 and 'id="decision-form"' in html
        async with client.post(
            console.url(f"/campaigns/{cid}/reject"),
            data={"_csrf": token, "version": "1", "comment": ""},
        ) as r:
            assert r.status == 400 and "驳回须填写意见" in await r.text()
        async with client.post(
            console.url(f"/campaigns/{cid}/approve"),
            data={"_csrf": token, "version": "1", "comment": "同意"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
    v = await CampaignVersion.get(campaign_id=cid, version=1)
    assert v.status == VersionStatus.APPROVED and v.approval_comment == "同意"
    marketing, token = await signed_in_client(console, "marketing-sop")
    async with marketing:
        async with marketing.post(
            console.url(f"/campaigns/{cid}/activate"), data={"_csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 303
        async with marketing.get(console.url(f"/campaigns/{cid}/results")) as r:
            html = await r.text()
            assert r.status == 200 and 'data-sop-chart="funnel"' in html
        async with marketing.get(console.url(f"/campaigns/{cid}/results.csv")) as r:
            body = (await r.read()).decode("utf-8-sig")
            assert body.splitlines()[0].startswith("version,step,step_name")
    assert (await Campaign.get(id=cid)).status == CampaignStatus.ACTIVE


async def test_advisors_see_no_campaigns(console: Console) -> None:
    client, _ = await _client(console, "advisor")
    async with client:
        async with client.get(console.url("/campaigns")) as r:
            assert r.status == 403
        async with client.get(console.url("/")) as r:
            assert 'href="/campaigns"' not in await r.text()
