"""The chat sidebar over HTTP: WeCom OAuth through the sandbox, the short advisor session
and what it reaches (and what it does not), the agentConfig signature, the customer in
the advisor's reach, and the override that opens a review case."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from admin import dashboard
from admin import flows as admin_flows
from admin import service as admin_service
from admin.dashboard_models import DashDaily
from admin.models import Operator
from bot import models as bot_models
from core import audit
from core.settings import Settings
from tests.admin.console import CLI, make_operator, signed_in_client
from tests.admin.sidebar_support import (
    ADVISOR,
    CUSTOMER,
    OTHER_CUSTOMER,
    SidebarWorld,
    start_world,
)

VIOLATING = "这款理财保本保息，年化收益至少4.5%，闭着眼睛买都不会亏。"
CLEAN = "本产品不保证本金和收益，过往业绩不代表未来表现，请您谨慎投资。"


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


async def _entries(action: str) -> list[audit.AuditRecord]:
    return list(await audit.entries(where=audit.AuditFilter(action=action), limit=50))


# ------------------------------------------------------------------ signing in


async def test_oauth_through_the_sandbox_gives_a_short_advisor_session(world: SidebarWorld) -> None:
    async with world.client() as client:
        # Step by step, as the WeCom client goes: the sidebar → WeCom → back with a code.
        async with client.get(world.console.url("/sidebar/"), allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"].startswith("/sidebar/oauth/start?next=")
        async with client.get(world.console.url(r.headers["Location"]), allow_redirects=False) as r:
            assert r.status == 302
            authorize = r.headers["Location"]
        assert authorize.startswith(world.sandbox_url + "/connect/oauth2/authorize?")
        assert authorize.endswith("#wechat_redirect")
        query = parse_qs(urlsplit(authorize).query)
        assert query["appid"] == [world.sandbox.corp_id]
        assert query["agentid"] == [str(world.sandbox.agent_id)]
        assert query["scope"] == ["snsapi_base"]
        assert query["redirect_uri"][0] == world.console.url("/sidebar/oauth/callback")
        world.sandbox.oauth_member = ADVISOR
        async with client.get(authorize.split("#")[0], allow_redirects=False) as r:
            assert r.status == 302
            callback = r.headers["Location"]
        async with client.get(callback, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/sidebar/"
            cookie = r.cookies["siyu_sidebar"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with client.get(world.console.url("/sidebar/")) as r:
            assert r.status == 200
            html = await r.text()
        assert 'data-corp-id="' + world.sandbox.corp_id + '"' in html
        # The code was spent: replaying the callback does not sign anyone in again.
        async with client.get(callback, allow_redirects=False) as r:
            assert r.status == 400
    # An advisor account was opened for the member, linked by their WeCom userid.
    ops = await admin_service.operators_by_wecom_userid(userid=ADVISOR)
    assert [(op.role, op.status) for op in ops] == [("advisor", "active")]
    assert ops[0].display_name == "张伟"
    created = await _entries("operator.create")
    assert created and created[0].detail_dict["wecom_userid"] == ADVISOR
    signed = [e for e in await _entries("auth.sign_in") if e.result == "ok"]
    assert signed and signed[0].detail_dict == {"via": "wecom_oauth", "surface": "sidebar"}
    assert signed[0].target == f"operator:{ops[0].id}"


async def test_a_state_from_elsewhere_is_refused(world: SidebarWorld) -> None:
    world.sandbox.oauth_member = ADVISOR
    code = world.sandbox.issue_oauth_code(ADVISOR)
    async with world.client() as client:
        async with client.get(
            world.console.url(f"/sidebar/oauth/callback?code={code}&state=forged"),
            allow_redirects=False,
        ) as r:
            assert r.status == 400
            assert "siyu_sidebar" not in r.cookies
    # The code was never spent on a forged round trip.
    assert world.sandbox.oauth_codes[code].used_at is None


async def test_people_outside_the_corp_and_disabled_accounts_are_refused(
    world: SidebarWorld,
) -> None:
    async with world.client() as client:
        world.sandbox.oauth_member = ""  # a WeChat user, not a member
        async with client.get(world.console.url("/sidebar/")) as r:
            assert r.status == 403 and "仅限本企业成员" in await r.text()
    op = await make_operator("advisor", name="li-na")
    await Operator.filter(id=op.id).update(wecom_userid="lina")
    await admin_flows.do_set_operator_status(
        actor=CLI, source="test", operator_id=op.id, active=False
    )
    async with world.client() as client:
        world.sandbox.oauth_member = "lina"
        async with client.get(world.console.url("/sidebar/")) as r:
            assert r.status == 403 and "已停用" in await r.text()
    refused = [e.result for e in await _entries("auth.sign_in")]
    assert "failure" in refused and "disabled" in refused


async def test_disabling_the_account_ends_the_sidebar_session(world: SidebarWorld) -> None:
    async with world.client() as client:
        await world.sign_in(client)
        op = (await admin_service.operators_by_wecom_userid(userid=ADVISOR))[0]
        await admin_flows.do_set_operator_status(
            actor=CLI, source="test", operator_id=op.id, active=False
        )
        async with client.get(world.console.url("/sidebar/"), allow_redirects=False) as r:
            assert r.status == 303 and "/sidebar/oauth/start" in r.headers["Location"]


# ------------------------------------------------------------------ what the session reaches


async def test_the_sidebar_session_opens_no_console_page_and_few_api_routes(
    world: SidebarWorld,
) -> None:
    async with world.client() as client:
        csrf = await world.sign_in(client)
        async with client.get(world.console.url("/"), allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        async with client.get(world.console.url("/api/v1/me")) as r:
            assert r.status == 401
        async with client.post(
            world.console.url("/api/v1/compliance/check"),
            json={"text": VIOLATING, "role": "advisor"},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 200
            assert "guaranteed_return" in {v["category"] for v in (await r.json())["violations"]}
        async with client.post(
            world.console.url("/api/v1/compliance/check"),
            json={"text": VIOLATING, "role": "advisor"},
        ) as r:
            assert r.status == 403  # no CSRF token


async def test_a_console_session_does_not_open_the_sidebar(world: SidebarWorld) -> None:
    await make_operator("advisor", name="adv-console")
    client, _token = await signed_in_client(world.console, "adv-console")
    async with client:
        async with client.get(world.console.url("/sidebar/"), allow_redirects=False) as r:
            assert r.status == 303 and "/sidebar/oauth/start" in r.headers["Location"]
        async with client.post(world.console.url("/sidebar/api/signature"), json={"url": "x"}) as r:
            assert r.status == 401


async def test_every_sidebar_route_refuses_the_anonymous(world: SidebarWorld) -> None:
    routes = [
        (r.method, r.resource.canonical)
        for r in world.console.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/sidebar/")
        and r.method != "HEAD"
        and "/oauth/" not in r.resource.canonical
    ]
    assert {p for _m, p in routes} >= {"/sidebar/", "/sidebar/customer", "/sidebar/override"}
    async with world.client() as client:
        for method, path in routes:
            async with client.request(method, world.console.url(path), allow_redirects=False) as r:
                assert r.status in (303, 401), (method, path, r.status)
                if r.status == 303:
                    assert r.headers["Location"].startswith("/sidebar/oauth/start")


# ------------------------------------------------------------------ agentConfig


async def test_the_signature_verifies_with_the_apps_ticket(world: SidebarWorld) -> None:
    async with world.client() as client:
        csrf = await world.sign_in(client)
        page = world.console.url("/sidebar/?from=toolbar")
        async with client.post(
            world.console.url("/sidebar/api/signature"),
            json={"url": page + "#section"},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 200
            signed: dict[str, Any] = await r.json()
        assert signed["corpId"] == world.sandbox.corp_id
        assert signed["agentId"] == world.sandbox.agent_id
        tickets = world.sandbox.valid_jsapi_tickets()
        assert len(tickets) == 1
        plain = (
            f"jsapi_ticket={tickets[0].ticket}&noncestr={signed['nonceStr']}"
            f"&timestamp={signed['timestamp']}&url={page}"
        )
        assert signed["signature"] == hashlib.sha1(plain.encode()).hexdigest()
        # A second page load reuses the cached ticket: WeCom's quota is not spent.
        async with client.post(
            world.console.url("/sidebar/api/signature"),
            json={"url": page},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 200
        assert world.sandbox.calls["ticket/get"] == 1
        # Another site's page gets no signature in the app's name.
        async with client.post(
            world.console.url("/sidebar/api/signature"),
            json={"url": "https://evil.example/sidebar/"},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["field"] == "url"


# ------------------------------------------------------------------ the customer


async def test_the_customer_card_shows_the_advisors_customer(world: SidebarWorld) -> None:
    async with world.client() as client:
        await world.sign_in(client)
        async with client.get(
            world.console.url(f"/sidebar/customer?external_userid={CUSTOMER}")
        ) as r:
            assert r.status == 200
            html = await r.text()
    assert "周大福" in html
    assert "13912345678" not in html and "139****5678" in html  # the remark, masked
    assert "风险 C3" in html
    assert "赎回意向" in html and "投诉" in html  # open alerts
    assert "金卡客户" in html and "年初资产达标" in html  # the tag and why
    intents = html.split('id="sb-intents"', 1)[1]
    assert "赎回意向" in intents and "投诉" in intents  # the customer's recent intents
    thread = json.loads(html.split('id="sb-thread">', 1)[1].split("</script>", 1)[0])
    assert [t["role"] for t in thread] == ["customer", "advisor", "customer"]


async def test_someone_elses_customer_is_not_shown(world: SidebarWorld) -> None:
    async with world.client() as client:
        await world.sign_in(client)
        for ext in (OTHER_CUSTOMER, "wmNobodyAtAll00000001"):
            async with client.get(
                world.console.url(f"/sidebar/customer?external_userid={ext}")
            ) as r:
                assert r.status == 200
                html = await r.text()
            assert "秘密客户" not in html and "尚未同步到 siyu，或不是你跟进的客户" in html


# ------------------------------------------------------------------ the override


async def test_an_override_opens_a_review_case_with_the_reason(world: SidebarWorld) -> None:
    key = str(uuid.uuid4())
    async with world.client() as client:
        csrf = await world.sign_in(client)
        body = {
            "text": VIOLATING + " 客户电话13912345678",
            "reason": "客户要求原话转述产品说明书",
            "key": key,
            "external_userid": CUSTOMER,
        }
        async with client.post(
            world.console.url("/sidebar/override"), json=body, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 201, await r.text()
            first = await r.json()
        async with client.post(
            world.console.url("/sidebar/override"), json=body, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 200  # the same attempt again: the same case, nothing new
            assert (await r.json())["case_id"] == first["case_id"]
        clean = {**body, "text": CLEAN, "key": str(uuid.uuid4())}
        async with client.post(
            world.console.url("/sidebar/override"), json=clean, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "text"
        short = {**body, "reason": "要", "key": str(uuid.uuid4())}
        async with client.post(
            world.console.url("/sidebar/override"), json=short, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "reason"
        other = {**body, "external_userid": OTHER_CUSTOMER, "key": str(uuid.uuid4())}
        async with client.post(
            world.console.url("/sidebar/override"), json=other, headers={"X-CSRF-Token": csrf}
        ) as r:
            assert r.status == 404
    case = await bot_models.ReviewCase.get(id=first["case_id"]).prefetch_related("message")
    assert case.advisor_userid == ADVISOR and case.status == "open"
    assert "guaranteed_return" in case.categories and case.severity == "violation"
    message = case.message
    assert message.source == "sidebar" and message.sender_role == "advisor"
    assert "13912345678" not in message.masked_text  # no personal number in clear
    assert await bot_models.ReviewCase.all().count() == 1
    entries = await _entries("sidebar.override")
    assert len(entries) == 1 and entries[0].target == f"review_case:{case.id}"
    assert entries[0].detail_dict["reason"] == "客户要求原话转述产品说明书"
    assert entries[0].actor_kind == "operator"

    # The original is sealed as the pipeline seals stored messages: a compliance
    # reviewer opens it on the case page with a reason, audited; nobody reads it in clear.
    assert message.original_sealed and "13912345678" not in message.original_sealed
    await make_operator("compliance", name="reviewer")
    reviewer, token = await signed_in_client(world.console, "reviewer")
    async with reviewer:
        unmask = world.console.url(f"/review/{case.id}/unmask")
        async with reviewer.post(unmask, data={"_csrf": token, "reason": "核实放行的原话"}) as r:
            html = await r.text()
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        assert VIOLATING + " 客户电话13912345678" in html
        async with reviewer.get(world.console.url(f"/review/{case.id}")) as r:
            assert "13912345678" not in await r.text()  # masked again on the next view
    opened = await _entries("review.unmask")
    assert [(e.target, e.result) for e in opened] == [(f"review_case:{case.id}", "ok")]
    assert opened[0].detail_dict["reason"] == "核实放行的原话"


async def _rollups() -> dict[tuple[str, str, str], int]:
    return {(r.day, r.metric, r.dim): r.n for r in await DashDaily.all()}


async def test_an_override_counts_on_the_dashboard_neither_live_nor_rebuilt(
    world: SidebarWorld,
) -> None:
    """The dashboard counts what the pipeline stored (its hook); an override is the record
    of a decision to send — the line arrives through the archive and is counted then —
    so ``siyu dashboard rebuild`` must leave it out as the live counts do."""
    await dashboard.rebuild()  # the seeded conversation (stored before any hook ran)
    before = await _rollups()
    assert sum(n for (_d, metric, _), n in before.items() if metric == "messages") == 3
    async with world.client() as client:
        csrf = await world.sign_in(client)
        async with client.post(
            world.console.url("/sidebar/override"),
            json={
                "text": VIOLATING,
                "reason": "客户要求原话转述产品说明书",
                "key": str(uuid.uuid4()),
                "external_userid": CUSTOMER,
            },
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 201, await r.text()
    assert await bot_models.Message.filter(source="sidebar").count() == 1
    assert await _rollups() == before  # live: nothing counted
    result = await dashboard.rebuild()
    assert result.messages == 3
    assert await _rollups() == before  # rebuilt: the same


async def test_a_customer_group_in_reach(world: SidebarWorld) -> None:
    await bot_models.GroupChat.create(
        chat_id="wrSidebarGroup0001", name="理财沙龙群", owner_userid=ADVISOR, member_count=12
    )
    await bot_models.GroupChat.create(
        chat_id="wrNotMine000000002", name="别人的群", owner_userid="x"
    )
    await bot_models.Message.create(
        msgid="grp-1",
        source="archive",
        direction="group",
        sender_id=CUSTOMER,
        sender_role="customer",
        roomid="wrSidebarGroup0001",
        msgtime=datetime.now(UTC),
        msgtype="text",
        masked_text="这只基金现在能赎回吗？",
        intent="redemption_intent",
        sentiment="neutral",
    )
    async with world.client() as client:
        csrf = await world.sign_in(client)
        async with client.get(world.console.url("/sidebar/group?chat_id=wrSidebarGroup0001")) as r:
            html = await r.text()
        assert "理财沙龙群" in html and "12 人" in html and "赎回意向" in html
        thread = json.loads(html.split('id="sb-thread">', 1)[1].split("</script>", 1)[0])
        assert thread == [{"role": "customer", "text": "这只基金现在能赎回吗？"}]
        async with client.get(world.console.url("/sidebar/group?chat_id=wrNotMine000000002")) as r:
            assert "别人的群" not in await r.text()
        async with client.post(
            world.console.url("/sidebar/override"),
            json={
                "text": VIOLATING,
                "reason": "群内统一口径说明",
                "key": str(uuid.uuid4()),
                "chat_id": "wrSidebarGroup0001",
            },
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 201
            case_id = (await r.json())["case_id"]
    case = await bot_models.ReviewCase.get(id=case_id).prefetch_related("message")
    assert case.message.roomid == "wrSidebarGroup0001" and case.message.direction == "group"
