"""What sop draws on other pages: the customer page's journeys (within the viewer's
reach), the chat sidebar's touches due for the customer (content filled in, ready to
check and send), and the dashboard's funnel of every running campaign (with its CSV)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from admin.models import Operator
from bot import models as bot_models
from core.domain import DashboardChart, Domain
from core.server import start_site
from core.settings import Settings
from siyu.app import create_app
from siyu.domains import DOMAINS
from sop import campaigns, panels, stats
from sop.engine.timing import SHANGHAI
from sop.models import (
    Campaign,
    CampaignStep,
    CampaignVersion,
    Enrolment,
    EnrolmentState,
    Touch,
    TouchState,
)
from tests.admin import review_seed
from tests.admin.console import Console, make_operator, signed_in_client
from tests.admin.sidebar_support import ADVISOR, CUSTOMER, SidebarWorld, start_world
from tests.sop.seed import OPS, REVIEWER, maturity_spec


async def running_campaign(analyzer: Any, **overrides: Any) -> tuple[Campaign, CampaignVersion]:
    """A campaign built, approved by another person and activated, as marketing does it."""
    overrides.setdefault("audience", None)  # the seed's audience names tags not made here
    saved = await campaigns.do_create_campaign(
        spec=maturity_spec(**overrides), actor=OPS, analyzer=analyzer
    )
    cid = saved.campaign.id
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
    await campaigns.do_approve(campaign_id=cid, version=1, comment="", actor=REVIEWER)
    await campaigns.do_activate(campaign_id=cid, actor=OPS)
    return await Campaign.get(id=cid), saved.version


class Rows:
    """Enrolments and touches as the engine writes them."""

    def __init__(self, campaign: Campaign, version: CampaignVersion) -> None:
        self.c, self.v = campaign, version

    async def steps(self) -> list[CampaignStep]:
        return list(await CampaignStep.filter(version_id=self.v.id).order_by("position"))

    async def enrol(self, customer: str, advisor: str, at: datetime, **kw: Any) -> Enrolment:
        return await Enrolment.create(
            campaign_id=self.c.id,
            version_id=self.v.id,
            customer=customer,
            advisor=advisor,
            entered_at=at,
            trigger_ref=f"test:{customer}:{at.isoformat()}",
            **kw,
        )

    async def touch(
        self, e: Enrolment, step: CampaignStep, due: datetime, state: TouchState, **kw: Any
    ) -> Touch:
        return await Touch.create(
            enrolment=e,
            step=step,
            version_id=self.v.id,
            campaign_id=self.c.id,
            customer=e.customer,
            advisor=e.advisor,
            due_at=due,
            state=state,
            **kw,
        )


# ------------------------------------------------------------------ the customer page


async def _signed_in(console: Console, role: str, name: str, wecom_userid: str = "") -> Any:
    op = await make_operator(role, name=name)
    if wecom_userid:
        await Operator.filter(id=op.id).update(wecom_userid=wecom_userid)
    client, _ = await signed_in_client(console, name)
    return client


def _panel(html: str, key: str) -> str:
    m = re.search(
        rf'<section class="panel domain-panel" id="panel-{key}">(.*?)</section>', html, re.S
    )
    assert m, f"no panel {key}"
    return m.group(1)


async def test_the_customer_page_shows_journeys_and_touches_within_reach(
    console: Console, analyzer: Any
) -> None:
    zhao = await review_seed.advisor("adv-zhao", "赵经理")
    li = await review_seed.advisor("adv-li", "李经理")
    zhou = await review_seed.customer("wmPanel0001", "周先生")
    for adv in (zhao, li):
        await bot_models.FollowRelation.create(customer=zhou, advisor=adv, status="active")
    c, v = await running_campaign(analyzer)
    rows = Rows(c, v)
    s1, s2 = await rows.steps()
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    mine = await rows.enrol("wmPanel0001", "adv-zhao", t0)
    await rows.touch(mine, s1, t0 + timedelta(hours=1), TouchState.SENT, reminded_at=t0)
    await rows.touch(mine, s2, t0 + timedelta(days=6), TouchState.PLANNED)
    theirs = await rows.enrol(
        "wmPanel0001",
        "adv-li",
        t0 - timedelta(days=30),
        state=EnrolmentState.EXITED,
        exit_reason="replied",
        exited_at=t0 - timedelta(days=29),
    )
    await rows.touch(theirs, s1, t0 - timedelta(days=30), TouchState.SENT, reminded_at=t0)
    await rows.touch(
        theirs, s2, t0 - timedelta(days=24), TouchState.SKIPPED, reason="exited:replied"
    )
    # Another customer's journey never shows on this page.
    await rows.enrol("wmPanel0002", "adv-zhao", t0)

    url = console.url(f"/customers/{zhou.id}")
    async with await _signed_in(console, "advisor", "zhao", "adv-zhao") as client:
        async with client.get(url) as r:
            html = await r.text()
            assert r.status == 200
    box = _panel(html, "sop-journeys")
    assert "SOP 旅程" in box and "到期提醒" in box
    # Their own journey only: step by step, the reminder as a reminder reached them.
    assert box.count('class="sop-journey"') == 1 and "赵经理" in box and "李经理" not in box
    assert "第 1 步 · 提醒客户经理" in box and "已提醒客户经理" in box
    assert "第 2 步 · 到期前一天群发" in box and "已计划" in box
    assert "03-02 09:00" in box  # the due time in Beijing
    # An advisor has no campaign pages: the name is not a link.
    assert f'href="/campaigns/{c.id}"' not in box
    # The sidebar's own panel is not drawn on the console.
    assert 'id="panel-sop-due"' not in html

    async with await _signed_in(console, "compliance", "zhou-hg") as client:
        async with client.get(url) as r:
            box = _panel(await r.text(), "sop-journeys")
    assert box.count('class="sop-journey"') == 2
    first, second = box.split('class="sop-journey"')[1:]
    assert "进行中" in first and "已退出" in second  # newest first
    assert "退出：" in second and "客户回复" in second
    assert "原因：客户已退出旅程（客户回复）" in second
    assert f'href="/campaigns/{c.id}"' in box  # compliance reads campaigns

    # A customer in no journey: the box says so.
    wu = await review_seed.customer("wmPanel0003", "吴女士")
    async with await _signed_in(console, "marketing", "ops-panel") as client:
        async with client.get(console.url(f"/customers/{wu.id}")) as r:
            assert "未参加 SOP 旅程" in _panel(await r.text(), "sop-journeys")


# ------------------------------------------------------------------ the sidebar


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


def _today_at(hour: int, minute: int = 0, days: int = 0) -> datetime:
    local = datetime.now(UTC).astimezone(SHANGHAI)
    day = local.replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(days=days)
    return day.astimezone(UTC)


async def test_the_sidebar_lists_what_is_due_for_this_customer_filled_in(
    world: SidebarWorld, analyzer: Any
) -> None:
    customer = world.customer
    customer.attributes = {**customer.attributes, "maturity_date": "2026-12-10"}
    await customer.save()
    c, v = await running_campaign(analyzer)
    rows = Rows(c, v)
    s1, s2 = await rows.steps()
    now = datetime.now(UTC)
    e = await rows.enrol(CUSTOMER, ADVISOR, now - timedelta(hours=1))
    reminder = await rows.touch(e, s1, _today_at(10), TouchState.SENT, reminded_at=now)
    mass = await rows.touch(e, s2, _today_at(10, days=2), TouchState.PLANNED)
    # Not shown: too far ahead, already final, another advisor's, an ended journey.
    later = await rows.enrol(CUSTOMER, ADVISOR, now - timedelta(days=1))
    far = await rows.touch(later, s2, _today_at(10, days=9), TouchState.PLANNED)
    skipped = await rows.touch(later, s1, _today_at(9), TouchState.SKIPPED, reason="late")
    other = await rows.enrol(CUSTOMER, "wangfang", now)
    others = await rows.touch(other, s1, _today_at(11), TouchState.PLANNED)
    ended = await rows.enrol(
        CUSTOMER, ADVISOR, now - timedelta(days=2), state=EnrolmentState.EXITED, exit_reason="goal"
    )
    gone = await rows.touch(ended, s1, _today_at(12), TouchState.PLANNED)

    async with world.client() as client:
        await world.sign_in(client)
        async with client.get(
            world.console.url(f"/sidebar/customer?external_userid={CUSTOMER}")
        ) as r:
            assert r.status == 200
            html = await r.text()
    m = re.search(
        r'<section class="sb-block sb-panel" id="panel-sop-due">(.*?)</section>', html, re.S
    )
    assert m, "no due panel in the sidebar"
    box = m.group(1)
    assert "待跟进的 SOP 触达" in box
    assert f'id="sop-touch-{reminder.id}"' in box and f'id="sop-touch-{mass.id}"' in box
    for hidden in (far, skipped, others, gone):
        assert f'id="sop-touch-{hidden.id}"' not in box
    # The reminder's text is filled in for this customer and offered to the send box.
    filled = "周大福您好，您持有的稳享理财 365 天将于2026-12-10到期，如需了解续作安排可随时联系我。"
    assert filled in box
    assert f'data-sb-compose="{filled}"' in box
    assert "今天 10:00" in box and "已提醒客户经理" in box
    # The mass-send goes as WeCom's task: no send button, a note instead.
    item = box.split(f'id="sop-touch-{mass.id}"', 1)[1]
    assert "群发助手" in item and "data-sb-compose" not in item.split("sop-due-item", 1)[0]
    # The full journeys box is the console's, not the sidebar's.
    assert 'id="panel-sop-journeys"' not in html


async def test_due_touches_render_a_link_card_as_the_sidebar_sends_it(
    db: None, analyzer: Any
) -> None:
    await review_seed.advisor("adv-card", "卡片经理")
    spec_steps = maturity_spec().model_dump(mode="json")["steps"]
    spec_steps[1]["delivery"] = "reminder"  # the link card, for the advisor to send
    c, v = await running_campaign(analyzer, steps=spec_steps)
    rows = Rows(c, v)
    _s1, s2 = await rows.steps()
    now = datetime.now(UTC)
    e = await rows.enrol("wmCard0001", "adv-card", now)
    await rows.touch(e, s2, now + timedelta(hours=2), TouchState.PLANNED)
    (due,) = await panels.due_touches(
        external_userid="wmCard0001", customer_name="", attrs={}, reach=None, now=now
    )
    assert due.kind == "link" and due.delivery == "reminder"
    # No name imported: the engine's neutral word, as the dispatcher would send it.
    assert due.text == "您您好，产品明天到期，资金将按合同约定划回。"
    assert due.chat_message == {
        "msgtype": "news",
        "enterChat": True,
        "news": {
            "link": "https://bank.example.com/maturity",
            "title": "到期资金安排说明",
            "desc": "到期资金将按合同约定划回您的账户。",
            "imgUrl": "",
        },
    }
    # Outside the reach given: nothing.
    assert (
        await panels.due_touches(
            external_userid="wmCard0001",
            customer_name="",
            attrs={},
            reach=frozenset({"x"}),
            now=now,
        )
        == []
    )


# ------------------------------------------------------------------ the dashboard


async def test_the_dashboard_draws_each_running_campaigns_funnel_with_a_csv(
    console: Console, analyzer: Any
) -> None:
    c, v = await running_campaign(analyzer)
    rows = Rows(c, v)
    s1, s2 = await rows.steps()
    now = datetime.now(UTC)
    # Three customers in the window, one long before it.
    a = await rows.enrol("wmF1", "adv", now - timedelta(days=2), goal_reached_at=now)
    await rows.touch(a, s1, now, TouchState.SENT, reminded_at=now, sent_at=now)
    await rows.touch(
        a, s2, now, TouchState.CONFIRMED, sent_at=now, replied_at=now + timedelta(hours=5)
    )
    b = await rows.enrol("wmF2", "adv", now - timedelta(days=3))
    await rows.touch(b, s1, now, TouchState.SENT, reminded_at=now, sent_at=now)
    await rows.touch(b, s2, now, TouchState.SKIPPED, reason="unsuitable")
    d = await rows.enrol("wmF3", "adv", now - timedelta(days=1))
    await rows.touch(d, s1, now + timedelta(days=1), TouchState.PLANNED)
    old = await rows.enrol("wmF0", "adv", now - timedelta(days=60))
    await rows.touch(old, s1, now - timedelta(days=60), TouchState.SENT, reminded_at=now)
    # A second running campaign nobody entered yet; a paused one is left out.
    quiet, _ = await running_campaign(analyzer, name="生日关怀")
    paused, _ = await running_campaign(analyzer, name="已暂停的活动")
    await campaigns.do_pause(campaign_id=paused.id, actor=OPS)

    funnels = await stats.active_funnels(since=now - timedelta(days=7))
    assert [f.name for f in funnels] == ["到期提醒", "生日关怀"]
    assert funnels[0].stages == {
        "enrolled": 3,
        "planned": 3,
        "reminded": 2,
        "sent": 2,
        "replied": 1,
        "goal": 1,
    }
    assert funnels[1].stages == dict.fromkeys(funnels[1].stages, 0)
    wider = await stats.active_funnels(since=now - timedelta(days=90))
    assert (wider[0].stages["enrolled"], wider[0].stages["reminded"]) == (4, 3)

    client, _ = await signed_in_client(console, (await make_operator("marketing")).name)
    async with client:
        async with client.get(console.url("/dashboard?days=7")) as r:
            html = await r.text()
            assert r.status == 200
        assert 'id="chart-sop-funnel"' in html and 'data-kind="funnel"' in html
        assert "SOP 活动转化漏斗" in html
        assert 'href="/dashboard/sop-funnel.csv?days=7"' in html
        async with client.get(console.url("/dashboard/sop-funnel.csv?days=7")) as r:
            assert r.status == 200
            assert (
                r.headers["Content-Disposition"] == 'attachment; filename="siyu-sop-funnel-7d.csv"'
            )
            body = (await r.read()).decode("utf-8-sig")
    table = list(csv.reader(io.StringIO(body)))
    assert table[0] == ["阶段", "到期提醒", "生日关怀"]
    assert table[1:] == [
        ["入组客户", "3", "0"],
        ["已计划触达", "3", "0"],
        ["已提醒客户经理", "2", "0"],
        ["已发送 / 确认", "2", "0"],
        ["3 天内回复", "1", "0"],
        ["达成目标", "1", "0"],
    ]
    assert quiet.id != paused.id


def _stub_charts() -> Domain:
    async def secret(days: int, now: datetime) -> dict[str, Any]:
        return {
            "x": ["甲", "乙"],
            "x_label": "类别",
            "series": [{"name": "天数", "data": [days, 1]}],
        }

    async def broken(days: int, now: datetime) -> dict[str, Any]:
        raise RuntimeError("the chart's own failure")

    return Domain(
        name="stubcharts",
        dashboard_charts=(
            DashboardChart(
                "stubcharts.secret",
                "审批人看的图",
                "bar",
                "",
                secret,
                permission="campaigns:approve",
            ),
            DashboardChart("stubcharts.broken", "坏掉的图", "bar", "", broken, order=1),
        ),
    )


@pytest.fixture
async def chart_console(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[Console]:
    app = create_app(
        console_settings,
        ("admin",),
        domains=(*DOMAINS, _stub_charts()),
        auto_migrate=True,
        analyzer=analyzer,
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        yield Console(settings=console_settings, app=app, base=f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def test_a_domains_chart_is_drawn_by_its_permission_and_a_failing_one_says_so(
    chart_console: Console,
) -> None:
    console = chart_console
    await make_operator("compliance", name="hg-charts")
    await make_operator("marketing", name="ops-charts")
    client, _ = await signed_in_client(console, "hg-charts")
    async with client:
        async with client.get(console.url("/dashboard?days=30")) as r:
            html = await r.text()
            assert r.status == 200
        titles = re.findall(r'<h2 id="chart-stubcharts-[a-z]+-title">([^<]+)</h2>', html)
        assert titles == ["坏掉的图", "审批人看的图"]  # by order, after the dashboard's own
        assert html.index("每日消息与沟通客户") < html.index("坏掉的图")
        broken = html.split('id="chart-stubcharts-broken-title"', 1)[1].split("</section>")[0]
        assert "暂时无法显示" in broken
        async with client.get(console.url("/dashboard/stubcharts-secret.csv?days=7")) as r:
            assert r.status == 200
            rows = list(csv.reader(io.StringIO((await r.read()).decode("utf-8-sig"))))
        assert rows == [["类别", "天数"], ["甲", "7"], ["乙", "1"]]
    client, _ = await signed_in_client(console, "ops-charts")
    async with client:
        async with client.get(console.url("/dashboard")) as r:
            html = await r.text()
        assert "坏掉的图" in html and "审批人看的图" not in html
        async with client.get(console.url("/dashboard/stubcharts-secret.csv")) as r:
            assert r.status == 403


def test_a_chart_key_names_its_domain() -> None:
    async def data(days: int, now: datetime) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="must start with 'tagging.'"):
        Domain(name="tagging", dashboard_charts=(DashboardChart("sop.x", "x", "bar", "", data),))
