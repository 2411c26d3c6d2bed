"""An advisor's SOP touch in the chat sidebar: the digest's deep link opens it (through
WeCom sign-in), filled in for the customer and saying plainly when it is not to be sent;
a send from the sidebar is recorded on the touch once, audited, counted by the results,
and its 3-day reply window runs from that send.  Only the advisor's own touches: anyone
else's answers as a missing one; bad input changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from tortoise.transactions import in_transaction

from admin.models import Operator
from bot import models as bot_models
from bot.hooks import StoredMessage
from bot.schemas import Direction
from core import audit
from core.audit import Actor
from core.settings import Settings
from sop import stats, touches
from sop.campaigns import NotFound
from sop.engine import enrol
from sop.engine.timing import SHANGHAI
from sop.models import EnrolmentState, OptOut, OptOutSource, Touch, TouchState
from tests.admin import review_seed
from tests.admin.console import make_operator, signed_in_client
from tests.admin.sidebar_support import (
    ADVISOR,
    CUSTOMER,
    OTHER_CUSTOMER,
    SidebarWorld,
    start_world,
)
from tests.sop.test_panels import Rows, running_campaign

FILLED = "周大福您好，您持有的稳享理财 365 天将于2026-12-10到期，如需了解续作安排可随时联系我。"


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


def today_at(hour: int, days: int = 0) -> datetime:
    local = datetime.now(UTC).astimezone(SHANGHAI)
    day = local.replace(hour=hour, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return day.astimezone(UTC)


class Journey:
    """张伟's maturity journey for 周大福 (step 1 a reminder, step 2 a mass send), and
    touches of other kinds and owners around it."""

    def __init__(self, rows: Rows, steps: list[Any]) -> None:
        self.rows, (self.s1, self.s2) = rows, steps

    @classmethod
    async def build(cls, world: SidebarWorld, analyzer: Any) -> Journey:
        world.customer.attributes = {**world.customer.attributes, "maturity_date": "2026-12-10"}
        await world.customer.save()
        c, v = await running_campaign(analyzer)
        rows = Rows(c, v)
        return cls(rows, await rows.steps())

    async def reminder(self, state: TouchState = TouchState.SENT, **kw: Any) -> Touch:
        """A reminder whose digest reached the advisor this morning (by default)."""
        now = datetime.now(UTC)
        customer = kw.pop("customer", CUSTOMER)
        advisor = kw.pop("advisor", ADVISOR)
        e = await self.rows.enrol(customer, advisor, now - timedelta(days=1), **kw.pop("e", {}))
        if state == TouchState.SENT:
            kw.setdefault("reminded_at", today_at(9))
            kw.setdefault("sent_at", today_at(9))
        return await self.rows.touch(e, self.s1, kw.pop("due", today_at(9)), state, **kw)


async def _sidebar(world: SidebarWorld, client: aiohttp.ClientSession) -> str:
    return await world.sign_in(client)


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with client.get(url) as r:
        return r.status, await r.json()


async def _post(
    client: aiohttp.ClientSession, url: str, csrf: str, body: Any, *, raw: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    kw: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
    async with client.post(url, headers=headers, **kw) as r:
        return r.status, await r.json()


async def _sent_entries(touch_id: int) -> list[Any]:
    return list(
        await audit.entries(
            where=audit.AuditFilter(action="sop.touch.sent", target=f"touch:{touch_id}")
        )
    )


async def test_the_deep_link_survives_wecom_sign_in(world: SidebarWorld, analyzer: Any) -> None:
    """The digest's link, opened signed out, comes back from WeCom's OAuth as it was."""
    journey = await Journey.build(world, analyzer)
    t = await journey.reminder()
    link = f"/sidebar/?customer={CUSTOMER}&touch={t.id}"
    world.sandbox.oauth_member = ADVISOR
    async with world.client() as client:
        async with client.get(world.console.url(link), allow_redirects=True) as r:
            assert r.status == 200
            hops = [str(h.url) for h in r.history]
            final = urlsplit(str(r.url))
            html = await r.text()
    assert any("/sidebar/oauth/start" in h for h in hops)
    assert any("/sidebar/oauth/callback" in h for h in hops)
    assert f"{final.path}?{final.query}" == link
    assert 'data-touches-url="/api/v1/touches/"' in html and 'id="sb-touch"' in html


async def test_the_advisor_reads_their_touch_filled_in_or_why_not(
    world: SidebarWorld, analyzer: Any
) -> None:
    journey = await Journey.build(world, analyzer)
    mine = await journey.reminder()
    theirs = await journey.reminder(advisor="wangfang")
    other_customer = await journey.reminder(customer=OTHER_CUSTOMER)
    skipped = await journey.reminder(TouchState.SKIPPED, reason="unsuitable")
    expired = await journey.reminder(TouchState.SENT, due=today_at(9, days=-3))
    exited = await journey.reminder(
        TouchState.DUE, e={"state": EnrolmentState.EXITED, "exit_reason": "replied"}
    )
    e = await journey.rows.enrol(CUSTOMER, ADVISOR, datetime.now(UTC))
    mass = await journey.rows.touch(e, journey.s2, today_at(10), TouchState.PLANNED)
    api = world.console.url("/api/v1/touches/")
    async with world.client() as client:
        await _sidebar(world, client)
        status, body = await _get(client, f"{api}{mine.id}?customer={CUSTOMER}")
        assert status == 200
        assert body["text"] == FILLED and body["campaign"] == "到期提醒"
        assert body["step"] == {"position": 1, "name": "提醒客户经理"}
        assert body["due_label"].startswith("今天 09:00")
        assert body["state_label"] == "已提醒客户经理"
        assert body["sendable"] is True and body["problem"] is None and body["sent"] is None
        assert body["customer"] == CUSTOMER and body["delivery"] == "reminder"

        # Another advisor's touch answers exactly as one that does not exist.
        missing = await _get(client, f"{api}99999999?customer={CUSTOMER}")
        assert missing[0] == 404
        assert await _get(client, f"{api}{theirs.id}?customer={CUSTOMER}") == missing
        # The advisor's own touch of a customer they do not follow: the same.
        assert await _get(client, f"{api}{other_customer.id}") == missing
        assert (await _get(client, f"{api}abc"))[0] == 404

        async def problem(touch: Touch, customer: str = CUSTOMER) -> dict[str, str]:
            status, body = await _get(client, f"{api}{touch.id}?customer={customer}")
            assert status == 200 and body["sendable"] is False
            return dict(body["problem"])

        assert (await problem(mine, OTHER_CUSTOMER))["code"] == "other_customer"
        assert await problem(skipped) == {
            "code": "skipped",
            "message": "这条触达已跳过（适当性不匹配），不再发送。",
        }
        assert (await problem(expired))["code"] == "expired"
        assert "已过期" in (await problem(expired))["message"]
        assert (await problem(exited))["message"] == "客户已退出这个旅程（客户回复），不再发送。"
        assert (await problem(mass))["code"] == "mass_send"
        assert (await _get(client, f"{api}{mine.id}?customer="))[0] == 400

        await OptOut.create(customer=CUSTOMER, source=OptOutSource.OPERATOR, by="operator:1")
        assert (await problem(mine))["code"] == "opted_out"


async def test_a_customer_without_a_value_gets_no_fill_in_and_is_told_why(
    world: SidebarWorld, analyzer: Any
) -> None:
    """No maturity date imported: neither the touch nor the due panel offers text with a
    literal {maturity_date}; both say which value is missing."""
    journey = await Journey.build(world, analyzer)
    world.customer.attributes = {
        k: v for k, v in world.customer.attributes.items() if k != "maturity_date"
    }
    await world.customer.save()
    t = await journey.reminder()
    said = "无法为该客户填写：客户资料中没有「到期日」（{maturity_date}）"
    async with world.client() as client:
        await _sidebar(world, client)
        status, body = await _get(
            client, world.console.url(f"/api/v1/touches/{t.id}?customer={CUSTOMER}")
        )
        assert status == 200
        assert body["sendable"] is False and body["problem"]["code"] == "missing_variable"
        assert said in body["problem"]["message"]
        assert body["missing"] == ["maturity_date"] and body["text"] == ""
        assert body["chat_message"] is None
        async with client.get(
            world.console.url(f"/sidebar/customer?external_userid={CUSTOMER}")
        ) as r:
            assert r.status == 200
            html = await r.text()
        # Recording a send of it (a direct call, not the sidebar's button) is refused
        # the same way, and changes nothing.
        csrf = await _sidebar(world, client)
        status, body = await _post(
            client,
            world.console.url(f"/api/v1/touches/{t.id}/sent"),
            csrf,
            {"external_userid": CUSTOMER},
        )
        assert (status, body["error"]["code"]) == (409, "missing_variable")
        assert said in body["error"]["message"]
    item = html.split(f'id="sop-touch-{t.id}"', 1)[1].split("sop-due-item", 1)[0]
    assert said in item
    assert "data-sb-compose" not in item and "将于{maturity_date}" not in html
    fresh = await Touch.get(id=t.id)
    assert (fresh.sent_via, fresh.sent_at, fresh.state) == (None, t.sent_at, t.state)
    assert await _sent_entries(t.id) == []


async def test_a_send_from_the_sidebar_is_recorded_once_and_counted(
    world: SidebarWorld, analyzer: Any
) -> None:
    journey = await Journey.build(world, analyzer)
    reminded = await journey.reminder()  # the digest told the advisor this morning
    early = await journey.reminder(TouchState.PLANNED, due=today_at(10, days=1))
    theirs = await journey.reminder(advisor="wangfang")
    skipped = await journey.reminder(TouchState.SKIPPED, reason="late")
    before = (await stats.campaign_stats(journey.rows.c)).versions[0].steps[0]
    assert (before.sent, before.planned) == (2, 4)

    api = world.console.url("/api/v1/touches/")
    async with world.client() as client:
        csrf = await _sidebar(world, client)
        me = await Operator.get(wecom_userid=ADVISOR)

        # The send's own time, whatever the hour the suite runs at (before 09:00 in
        # Shanghai "now" is earlier than this morning's digest).
        tapped = datetime.now(UTC) - timedelta(seconds=1)
        status, body = await _post(
            client, f"{api}{reminded.id}/sent", csrf, {"external_userid": CUSTOMER}
        )
        assert status == 201, body
        assert body["recorded"] is True and body["state"] == "sent"
        assert body["sent"]["via"] == "sidebar" and body["sent"]["by"] == f"operator:{me.id}"
        row = await Touch.get(id=reminded.id)
        assert (row.state, row.sent_via, row.sent_by) == (
            TouchState.SENT,
            "sidebar",
            f"operator:{me.id}",
        )
        # the send, not the digest
        assert row.sent_at is not None and row.sent_at >= tapped
        assert row.sent_at != row.reminded_at
        assert row.reminded_at == today_at(9)
        (entry,) = await _sent_entries(reminded.id)
        assert entry.actor_id == str(me.id)
        assert entry.detail_dict == {"via": "sidebar", "campaign": journey.rows.c.id, "was": "sent"}

        # A second tap, a retry: the first record stands, nothing written again.
        again = await _post(client, f"{api}{reminded.id}/sent", csrf, {"external_userid": CUSTOMER})
        assert again[0] == 200 and again[1]["recorded"] is False
        assert again[1]["sent"] == body["sent"]
        assert len(await _sent_entries(reminded.id)) == 1
        assert (await Touch.get(id=reminded.id)).sent_at == row.sent_at
        # Read again, it says so plainly.
        status, shown = await _get(client, f"{api}{reminded.id}?customer={CUSTOMER}")
        assert shown["sent"]["via"] == "sidebar" and shown["problem"]["code"] == "sent"
        assert shown["state_label"] == "客户经理已发送"

        # Sent ahead of its digest: the touch is sent now and will not be digested.
        status, _ = await _post(
            client, f"{api}{early.id}/sent", csrf, {"external_userid": CUSTOMER}
        )
        assert status == 201
        row = await Touch.get(id=early.id)
        assert row.state == TouchState.SENT and row.reminded_at is not None

        # Refusals change nothing.
        async def unchanged(touch: Touch) -> None:
            fresh = await Touch.get(id=touch.id)
            assert (fresh.state, fresh.sent_via, fresh.sent_at) == (
                touch.state,
                touch.sent_via,
                touch.sent_at,
            )
            assert await _sent_entries(touch.id) == []

        # Someone else's touch: as a missing one.
        status, body = await _post(
            client, f"{api}{theirs.id}/sent", csrf, {"external_userid": CUSTOMER}
        )
        assert (status, body["error"]["code"]) == (404, "not_found")
        await unchanged(theirs)
        # Bad input: 400, field named.
        for bad, field in (
            ({}, "external_userid"),
            ({"external_userid": ""}, "external_userid"),
            ({"external_userid": "wm x<y>"}, "external_userid"),
            ({"external_userid": CUSTOMER, "extra": 1}, "extra"),
            (["wm"], "body"),
        ):
            status, body = await _post(client, f"{api}{skipped.id}/sent", csrf, bad)
            assert (status, body["error"]["field"]) == (400, field), bad
        status, body = await _post(client, f"{api}{skipped.id}/sent", csrf, None, raw="{not json")
        assert status == 400
        await unchanged(skipped)
        # Not this customer's, or a touch that was skipped: 409, said plainly.
        status, body = await _post(
            client, f"{api}{skipped.id}/sent", csrf, {"external_userid": OTHER_CUSTOMER}
        )
        assert (status, body["error"]["code"]) == (409, "other_customer")
        status, body = await _post(
            client, f"{api}{skipped.id}/sent", csrf, {"external_userid": CUSTOMER}
        )
        assert (status, body["error"]["code"]) == (409, "skipped")
        assert "已跳过" in body["error"]["message"]
        await unchanged(skipped)
        # Without the session's CSRF token: refused before anything is read.
        async with client.post(f"{api}{theirs.id}/sent", json={"external_userid": CUSTOMER}) as r:
            assert r.status == 403

    # The results count the early send like any sent touch; the re-recorded one once.
    after = (await stats.campaign_stats(journey.rows.c)).versions[0].steps[0]
    assert (after.sent, after.planned) == (3, 4)
    assert (await stats.campaign_counts([journey.rows.c.id]))[journey.rows.c.id]["sent"] == 3


async def test_the_reply_window_runs_from_the_sidebar_send(
    world: SidebarWorld, analyzer: Any
) -> None:
    """Digested 3½ days before the customer wrote back, sent from the sidebar 2½ days
    before: the engine's reply hook credits the send, as for its own sends, and the
    results count it; the same touch never sent from the sidebar is not credited."""
    journey = await Journey.build(world, analyzer)
    now = datetime.now(UTC)
    digest = now - timedelta(days=3, hours=12)
    sent = await journey.reminder(reminded_at=digest, sent_at=digest, due=digest)
    only_digest = await journey.reminder(reminded_at=digest, sent_at=digest, due=digest)
    # A customer line before the content went out is no reply to it.
    await Touch.filter(id=sent.id).update(replied_at=digest + timedelta(hours=2))
    recorded = await touches.do_record_sidebar_send(
        touch_id=sent.id,
        reach=frozenset({ADVISOR}),
        customer=CUSTOMER,
        actor=Actor("operator", "99", "张伟"),
        source="test",
        now=now - timedelta(days=2, hours=12),
    )
    assert recorded.created and recorded.touch.replied_at is None

    reply = StoredMessage(
        id=1,
        source="archive",
        msgid="reply-1",
        direction=Direction.CUSTOMER_TO_ADVISOR,
        sender_role="customer",
        customer=CUSTOMER,
        advisor=ADVISOR,
        roomid=None,
        msgtime=now,
        msgtype="text",
        text_masked="好的，我考虑一下续作。",
        intent=None,
        intent_score=None,
        sentiment="neutral",
        violation_categories=(),
        has_violation=False,
    )
    async with in_transaction() as conn:
        await enrol.on_messages([reply], conn)
    assert (await Touch.get(id=sent.id)).replied_at == now
    assert (await Touch.get(id=only_digest.id)).replied_at is None
    step = (await stats.campaign_stats(journey.rows.c)).versions[0].steps[0]
    assert (step.sent, step.replied) == (2, 1)


async def test_only_advisors_record_and_only_their_own(world: SidebarWorld, analyzer: Any) -> None:
    journey = await Journey.build(world, analyzer)
    t = await journey.reminder()
    url = world.console.url(f"/api/v1/touches/{t.id}/sent")
    # Console sessions: an advisor with this WeCom userid may; other roles may not.
    adv = await make_operator("advisor", name="zw-console")
    await Operator.filter(id=adv.id).update(wecom_userid=ADVISOR)
    for role in ("team_lead", "marketing", "compliance", "admin"):
        op = await make_operator(role, name=f"{role}-touch")
        client, csrf = await signed_in_client(world.console, op.name)
        async with client:
            status, _ = await _post(client, url, csrf, {"external_userid": CUSTOMER})
        assert status == 403, role
    assert await _sent_entries(t.id) == []

    # A compliance officer who also follows 周大福 opens the sidebar in WeCom: it acts
    # as an advisor — their own touches, not 张伟's (which their console role could read).
    lina = await review_seed.advisor("lina", "李娜")
    await bot_models.FollowRelation.create(customer=world.customer, advisor=lina, status="active")
    hg = await make_operator("compliance", name="hg-sidebar")
    await Operator.filter(id=hg.id).update(wecom_userid="lina")
    own = await journey.reminder(advisor="lina")
    async with world.client() as client:
        csrf = await world.sign_in(client, as_member="lina")
        status, _ = await _post(client, url, csrf, {"external_userid": CUSTOMER})
        assert status == 404
        async with client.get(
            world.console.url(f"/sidebar/customer?external_userid={CUSTOMER}")
        ) as r:
            html = await r.text()
        assert f'id="sop-touch-{own.id}"' in html and f'id="sop-touch-{t.id}"' not in html
        status, body = await _post(
            client,
            world.console.url(f"/api/v1/touches/{own.id}/sent"),
            csrf,
            {"external_userid": CUSTOMER},
        )
        assert status == 201 and body["sent"]["by"] == f"operator:{hg.id}"
    assert await _sent_entries(t.id) == []

    client, csrf = await signed_in_client(world.console, "zw-console")
    async with client:
        status, body = await _post(client, url, csrf, {"external_userid": CUSTOMER})
    assert status == 201 and body["sent"]["by"] == f"operator:{adv.id}"


def test_touch_ids_are_ascii_numbers() -> None:
    assert touches.parse_touch_id("12") == 12
    for raw in ("", "-1", "1e3", "9" * 19, "１２"):
        with pytest.raises(NotFound):
            touches.parse_touch_id(raw)
