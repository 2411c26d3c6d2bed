"""/api/v1/campaigns: the builder's API for systems and the console, guarded by scope."""

from __future__ import annotations

from typing import Any

import aiohttp

from admin import flows as admin_flows
from admin.permissions import load_table
from sop.models import Campaign, CampaignVersion, VersionStatus
from tests.admin.console import CLI, Console, make_operator, signed_in_client
from tests.sop.seed import maturity_spec, seed_customers

TABLE = load_table()


async def _key(*scopes: str) -> dict[str, str]:
    created = await admin_flows.do_create_api_key(
        actor=CLI,
        source="test",
        name=f"k-{'-'.join(scopes)}"[:60],
        scopes=list(scopes),
        table=TABLE,
    )
    return {"Authorization": f"Bearer {created.plaintext}"}


async def _call(
    console: Console, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    async with console.client() as client:
        async with client.request(method, console.url(path), headers=headers, json=body) as r:
            return r.status, await r.json()


def _body(**overrides: Any) -> dict[str, Any]:
    return maturity_spec(**overrides).model_dump(mode="json", exclude_none=True)


async def test_build_submit_approve_activate_and_read_results(console: Console) -> None:
    await seed_customers()
    write = await _key("campaigns:write")
    read = await _key("campaigns:read")
    status, created = await _call(console, "POST", "/api/v1/campaigns", write, _body())
    assert status == 201, created
    cid = created["id"]
    assert created["status"] == "draft" and created["version"]["version"] == 1
    assert created["audience_count"] == 3

    status, listed = await _call(console, "GET", "/api/v1/campaigns", read)
    assert status == 200 and [c["id"] for c in listed["campaigns"]] == [cid]
    assert listed["campaigns"][0]["latest_version_status"] == "draft"

    status, body = await _call(console, "POST", f"/api/v1/campaigns/{cid}/submit", write)
    assert status == 200 and body["status"] == "pending_approval"

    # An API key cannot approve: an approval names a person.
    every = await _key(*TABLE.scopes)
    status, body = await _call(
        console, "POST", f"/api/v1/campaigns/{cid}/approve", every, {"comment": "ok"}
    )
    assert status == 403

    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    async with client:
        async with client.post(
            console.url(f"/api/v1/campaigns/{cid}/approve"),
            json={"version": 1, "comment": "内容合规"},
            headers={"X-CSRF-Token": token},
        ) as r:
            body = await r.json()
            assert r.status == 200, body
    assert body["version"]["status"] == "approved"
    assert body["version"]["approved_by"].startswith("operator:")

    status, body = await _call(console, "POST", f"/api/v1/campaigns/{cid}/activate", write)
    assert status == 200 and body["status"] == "active" and body["current_version"] == 1

    status, stats = await _call(console, "GET", f"/api/v1/campaigns/{cid}/stats", read)
    assert status == 200
    assert [f["key"] for f in stats["funnel"]][:2] == ["enrolled", "planned"]
    assert [s["position"] for s in stats["versions"][0]["steps"]] == [1, 2]

    status, detail = await _call(console, "GET", f"/api/v1/campaigns/{cid}", read)
    assert status == 200 and detail["versions"][0]["steps"][1]["delivery"] == "mass_send"


async def test_bad_input_is_refused_by_field_and_changes_nothing(console: Console) -> None:
    await seed_customers()
    write = await _key("campaigns:write")
    status, body = await _call(console, "POST", "/api/v1/campaigns", write, {"name": ""})
    assert status == 400 and body["error"]["field"] == "name"

    bad = _body()
    bad["steps"][0]["content"]["text"] = "您好 {customer_nmae}"
    bad["steps"][1]["at_time"] = "23:00"
    status, body = await _call(console, "POST", "/api/v1/campaigns", write, bad)
    assert status == 400 and body["error"]["code"] == "invalid_campaign"
    fields = {p["field"] for p in body["error"]["problems"]}
    assert {"steps[1].content.text", "steps[2].at_time"} <= fields
    assert await Campaign.all().count() == 0

    async with console.client() as client:
        async with client.post(
            console.url("/api/v1/campaigns"), data=b"{not json", headers=write
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"

    status, body = await _call(
        console, "GET", "/api/v1/campaigns/424242", await _key("campaigns:read")
    )
    assert status == 404 and body["error"]["code"] == "not_found"

    # The dry-run check answers without saving.
    status, body = await _call(console, "POST", "/api/v1/campaigns/check", write, bad)
    assert status == 200 and not body["ok"] and len(body["problems"]) >= 2
    assert await Campaign.all().count() == 0


async def test_a_violating_version_cannot_be_submitted(console: Console) -> None:
    await seed_customers()
    write = await _key("campaigns:write")
    body = _body()
    body["steps"][0]["content"]["text"] = "这款产品保本保收益，稳赚不赔。"
    status, created = await _call(console, "POST", "/api/v1/campaigns", write, body)
    assert status == 201
    finding = created["version"]["findings"][0]
    assert finding["severity"] == "violation" and finding["basis"]
    status, refused = await _call(
        console, "POST", f"/api/v1/campaigns/{created['id']}/submit", write
    )
    assert status == 400 and refused["error"]["code"] == "compliance_violation"
    assert refused["error"]["field"] == "steps[1].content.text"
    v = await CampaignVersion.get(campaign_id=created["id"], version=1)
    assert v.status == VersionStatus.DRAFT
    status, refused = await _call(
        console, "POST", f"/api/v1/campaigns/{created['id']}/activate", write
    )
    assert status == 409 and refused["error"]["code"] == "not_approved"


async def test_reading_needs_the_read_scope(console: Console) -> None:
    status, _ = await _call(console, "GET", "/api/v1/campaigns", await _key("tags:write"))
    assert status == 403
    async with aiohttp.ClientSession() as client:
        async with client.get(console.url("/api/v1/campaigns")) as r:
            assert r.status == 401
