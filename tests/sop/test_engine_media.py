"""Steps with an image, a file, a link card or a mini-program, end to end against the
sandbox: media fetched from the step's address and uploaded through ``media/upload``
when sent, ids reused until shortly before WeCom forgets them (3 days) and uploaded
again after; variables a customer has no value for; the version's time zone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
import time_machine
from aiohttp import web

from bot.models import OutboxItem, OutboxState
from bot.outbox import PendingWrite
from bot.sandbox.fake_api.media import check_media
from core.settings import Settings
from sop import campaigns
from sop.engine import enrol, planner, runtime, store
from sop.engine.timing import SHANGHAI
from sop.models import CampaignVersion, Touch
from sop.schemas import CampaignIn
from tests.bot.harness import Edge
from tests.conftest import make_settings
from tests.sop.test_engine_flow import (
    add_relation,
    contact_event,
    dispatcher,
    drain,
    make_campaign,
    sh,
)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    # The content server of these tests runs on loopback: allowed here by name, as an
    # institution lists its own file server (the default allows no media source).
    return make_settings(
        tmp_path, database_url=database_url, redis_url=redis_url, sop={"media_hosts": ["127.0.0.1"]}
    )


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.4\n" + b"0" * 4000


class Files:
    """A plain web server standing in for the institution's content host."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.gets: list[str] = []

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    served = {
        "cover.png": (PNG, "image/png"),
        "guide.pdf": (PDF, "application/pdf"),
        "big.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 + 1), "image/png"),
        "not-an-image.png": (b"GIF89a" + b"\0" * 100, "image/gif"),
    }
    box: list[Files] = []

    async def get(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        box[0].gets.append(name)
        if name not in served:
            raise web.HTTPNotFound()
        body, ctype = served[name]
        return web.Response(body=body, content_type=ctype)

    app = web.Application()
    app.router.add_get("/{name}", get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.append(Files(f"http://127.0.0.1:{runner.addresses[0][1]}"))
    yield box[0]
    await runner.cleanup()


async def _customers(edge: Edge, n: int, advisor: str, *, skip: int = 0, **attrs: Any) -> list[str]:
    """The sandbox's contacts of ``advisor`` (WeCom delivers mass sends to them only)."""
    out = []
    for i, ext in enumerate(list(edge.state.follows[advisor])[skip : skip + n]):
        await add_relation(advisor, ext, name=f"客户{i + skip}", attributes=dict(attrs))
        out.append(ext)
    return out


async def _plan(campaign_id: int) -> planner.VersionPlan:
    version = await CampaignVersion.get(campaign_id=campaign_id)
    return await planner.load_plan(store.conn(), version_id=version.id)


def _media_ids(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("media_id", "pic_media_id") and isinstance(v, str):
                found.append(v)
            else:
                found += _media_ids(v)
    elif isinstance(node, list):
        for v in node:
            found += _media_ids(v)
    return found


async def test_mass_send_images_are_uploaded_when_sent_and_again_after_expiry(
    edge: Edge, files: Files
) -> None:
    with time_machine.travel(sh(2026, 9, 14, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {
                    "delivery": "mass_send",
                    "at_time": "10:00",
                    "content": {
                        "kind": "image",
                        "text": "{customer_name}您好，本周市场观察请查收",
                        "media": {"url": files.url("cover.png"), "name": "周报.png"},
                    },
                },
                {
                    "delivery": "mass_send",
                    "anchor": "previous",
                    "offset_days": 1,
                    "at_time": "10:00",
                    "content": {
                        "kind": "miniprogram",
                        "miniprogram": {
                            "title": "{customer_name}的专属权益",
                            "appid": "wx0123456789abcdef",
                            "page": "pages/index.html",
                            "pic_url": files.url("cover.png"),
                        },
                    },
                },
                {
                    "delivery": "mass_send",
                    "anchor": "previous",
                    "offset_days": 3,
                    "at_time": "10:00",
                    "content": {"kind": "file", "media": {"url": files.url("cover.png")}},
                },
            ],
        )
        customers = await _customers(edge, 2, "zhangwei")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        assert files.gets == []  # nothing fetched or uploaded when planned

        clock.move_to(sh(2026, 9, 14, 10, 0, 5))
        await drain(edge)
        tasks = list(edge.state.mass_sends.values())
        assert len(tasks) == 2  # one per customer: the text names each
        ids = {i for task in tasks for i in _media_ids(task.attachments)}
        assert len(ids) == 1  # one upload, shared
        first_id = ids.pop()
        assert check_media(edge.state, first_id, kind="image").sha256
        assert files.gets == ["cover.png"]
        states = [(str(t.state), t.reason) for t in await Touch.all().order_by("due_at", "id")]
        assert states[:2] == [("sent", None), ("sent", None)], states

        # A day later the cover is still fresh: the same id, nothing fetched again.
        clock.move_to(sh(2026, 9, 15, 10, 0, 5))
        await drain(edge)
        minis = [t for t in edge.state.mass_sends.values() if t not in tasks]
        assert len(minis) == 2
        (mini,) = {m.attachments[0]["miniprogram"]["pic_media_id"] for m in minis}
        assert mini == first_id
        assert {m.attachments[0]["miniprogram"]["title"] for m in minis} == {
            "客户0的专属权益",
            "客户1的专属权益",
        }
        assert files.gets == ["cover.png"]

        # Three days on WeCom has forgotten it: uploaded again (as a file this time),
        # and WeCom (the sandbox) takes the new id.
        clock.move_to(sh(2026, 9, 18, 10, 0, 5))
        await drain(edge)
        last = [t for t in edge.state.mass_sends.values() if t not in tasks and t not in minis]
        (new_id,) = {i for t in last for i in _media_ids(t.attachments)}
        assert new_id != first_id
        assert check_media(edge.state, new_id, kind="file")
        assert files.gets == ["cover.png", "cover.png"]
        assert {t.state for t in await Touch.all()} == {"sent"}


async def test_welcome_with_a_file_and_reminders_forward_the_content(
    edge: Edge, files: Files
) -> None:
    with time_machine.travel(sh(2026, 9, 15, 10, 0), tick=False) as clock:
        await make_campaign(
            trigger={"kind": "customer_added"},
            steps=[
                {
                    "delivery": "welcome",
                    "content": {
                        "kind": "file",
                        "text": "{customer_name}您好，附上开户指南",
                        "media": {"url": files.url("guide.pdf"), "name": "开户指南.pdf"},
                    },
                },
                {
                    "delivery": "reminder",
                    "offset_minutes": 30,
                    "content": {
                        "kind": "image",
                        "text": "请把本周市场观察转发给{customer_name}",
                        "media": {"url": files.url("cover.png"), "name": "周报.png"},
                    },
                },
            ],
        )
        userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
        code = edge.state.issue_welcome_code(userid=userid, external_userid=ext)
        await edge.post_callback(
            contact_event("add_external_contact", userid, ext, WelcomeCode=code)
        )
        clock.shift(2)
        await edge.process_all()
        clock.shift(2)
        await dispatcher(edge).dispatch_due()
        await dispatcher(edge).notify_settled()
        (welcome,) = edge.state.welcome_messages
        assert welcome["sent_at"] - edge.state.welcome_codes[code].issued_at <= 20
        (attachment,) = welcome["attachments"]
        assert attachment["msgtype"] == "file"
        record = check_media(edge.state, attachment["file"]["media_id"], kind="file")
        assert unquote(record.filename) == "开户指南.pdf"  # aiohttp quotes the form's name

        clock.shift(30 * 60 + 5)
        await drain(edge)
        got = edge.state.delivered_app_messages(userid)
        digest = next(m for m in got if m.msgtype == "text" and "SOP" in m.content["content"])
        assert "［附图片「周报.png」" in digest.content["content"]
        (image,) = [m for m in got if m.msgtype == "image"]
        assert check_media(edge.state, image.content["media_id"], kind="image")
        assert [t.state for t in await Touch.filter(customer=ext).order_by("due_at")] == [
            "sent",
            "sent",
        ]


def _forward_campaign(files: Files, **timing: Any) -> dict[str, Any]:
    return {
        "delivery": "reminder",
        "at_time": "10:00",
        **timing,
        "content": {
            "kind": "image",
            "text": "请把本周市场观察转发给{customer_name}",
            "media": {"url": files.url("cover.png"), "name": "周报.png"},
        },
    }


async def _fill_member_cap(edge: Edge, userid: str, at: datetime, *, hour: bool = False) -> None:
    """Other app messages took the member's room (compliance alerts, another digest)."""
    quota = runtime.current().quotas.member
    n = edge.settings.sop.member_hour_cap if hour else edge.settings.sop.member_minute_cap
    # The hour's: spread over its last 41 minutes, under the minute cap all along.
    step = 3.1 if hour else 0.0
    for i in range(n):
        ok = await quota.take(userid, ref=f"other:{i}", now=at.timestamp() - (n - 1 - i) * step)
        assert ok.ok


async def test_a_forward_refused_for_a_full_cap_goes_at_the_next_free_slot(
    edge: Edge, files: Files
) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(trigger={"kind": "manual"}, steps=[_forward_campaign(files)])
        customers = await _customers(edge, 1, "zhangwei")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        # The digest and its attachment are queued with room under the cap; by the time
        # they go, the member's minute is full.
        assert await runtime.current().tick()
        await _fill_member_cap(edge, "zhangwei", sh(2026, 9, 15, 10, 0, 1))
        await drain(edge)
        assert edge.state.delivered_app_messages("zhangwei") == []
        first, retry = await OutboxItem.filter(origin__startswith="sop.forward:").order_by("id")
        assert (first.state, retry.state) == (OutboxState.CANCELLED, OutboxState.PENDING)
        assert retry.next_attempt_at == sh(2026, 9, 15, 10, 1, 1)
        # The refused row checked again (a check cut short) never goes itself: it queues
        # the same retry, once.
        again = PendingWrite(first.id, first.idem_key, first.origin, first.api, first.payload, 1)
        assert await runtime.current().before_send(again) == "member_quota"
        assert await OutboxItem.filter(origin__startswith="sop.forward:").count() == 2
        clock.move_to(sh(2026, 9, 15, 10, 1, 5))
        await drain(edge)
        got = edge.state.delivered_app_messages("zhangwei")
        assert sorted(m.msgtype for m in got) == ["image", "text"]
        assert edge.state.dropped_app_messages("zhangwei") == []
        # Later rounds find nothing more to send: one image, not one per try.
        clock.move_to(sh(2026, 9, 15, 10, 30))
        await drain(edge)
        assert len(edge.state.delivered_app_messages("zhangwei")) == 2


async def test_a_forward_whose_cap_frees_after_the_window_is_dropped_for_the_day(
    edge: Edge, files: Files
) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[_forward_campaign(files, window_start="09:00", window_end="10:10")],
        )
        customers = await _customers(edge, 1, "zhangwei")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 1))
        assert await runtime.current().tick()
        # The hour is full until 10:18, past the window's end: the attachment is not
        # moved out of the window (nor to another day: a day's digest carries its own).
        await _fill_member_cap(edge, "zhangwei", sh(2026, 9, 15, 10, 0, 1), hour=True)
        await drain(edge)
        for minute in (11, 19, 59):
            clock.move_to(sh(2026, 9, 15, 10, minute))
            await drain(edge)
        assert edge.state.delivered_app_messages("zhangwei") == []
        forwards = await OutboxItem.filter(origin__startswith="sop.forward:")
        assert [f.state for f in forwards] == [OutboxState.CANCELLED]


async def test_a_file_gone_from_its_address_is_skipped_with_the_reason(
    edge: Edge, files: Files
) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {
                    "delivery": "mass_send",
                    "at_time": "10:00",
                    "content": {"kind": "image", "media": {"url": files.url("removed.png")}},
                }
            ],
        )
        customers = await _customers(edge, 1, "zhangwei")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 5))
        await drain(edge)
        assert edge.state.mass_sends == {}
        assert [(t.state, t.reason) for t in await Touch.all()] == [("skipped", "media_invalid")]


async def test_a_missing_value_skips_the_touch_rather_than_send_a_placeholder(
    edge: Edge,
) -> None:
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {
                    "delivery": "mass_send",
                    "at_time": "10:00",
                    "content": {
                        "kind": "link",
                        "text": "{customer_name}您好，您的理财将于{maturity_date}到期",
                        "link": {"title": "到期续投指引", "url": "https://example.com/r"},
                    },
                }
            ],
        )
        dated = await _customers(edge, 1, "zhangwei", maturity_date="2026-09-22")
        undated = await _customers(edge, 1, "zhangwei", skip=1)
        await enrol.enrol_list(await _plan(campaign.id), customers=dated + undated, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 5))
        await drain(edge)
        (task,) = edge.state.mass_sends.values()
        assert task.text == "客户0您好，您的理财将于2026-09-22到期"
        assert [r["external_userid"] for r in task.results] == dated
        skipped = await Touch.get(customer=undated[0])
        assert (skipped.state, skipped.reason) == ("skipped", "missing_variable")
        assert not any("{" in (t.text or "") for t in edge.state.mass_sends.values())


async def test_step_timing_and_quiet_hours_follow_the_versions_time_zone(edge: Edge) -> None:
    london = ZoneInfo("Europe/London")
    # 09:00 in London is 16:00 in Beijing (summer time: UTC+1).
    with time_machine.travel(datetime(2026, 9, 15, 9, 0, tzinfo=london), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {"delivery": "reminder", "at_time": "10:00", "content": {"text": "伦敦上午"}},
                {
                    "delivery": "reminder",
                    "anchor": "previous",
                    "offset_minutes": 11 * 60 + 30,  # 21:30 London: quiet hours there
                    "content": {"text": "伦敦晚间"},
                },
            ],
        )
        await CampaignVersion.filter(campaign_id=campaign.id).update(timezone="Europe/London")
        customers = await _customers(edge, 1, "lina")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        first, second = await Touch.filter(customer=customers[0]).order_by("due_at")
        assert first.due_at.astimezone(london) == datetime(2026, 9, 15, 10, 0, tzinfo=london)
        # 21:30 falls in London's quiet hours: the next morning's window, 08:00 London.
        assert second.due_at.astimezone(london) == datetime(2026, 9, 16, 8, 0, tzinfo=london)
        # 10:00 London is 17:00 Beijing; sent then, not at 10:00 Beijing.
        clock.move_to(datetime(2026, 9, 15, 9, 59, tzinfo=london))
        await drain(edge)
        assert edge.state.delivered_app_messages("lina") == []
        clock.move_to(datetime(2026, 9, 15, 10, 0, 5, tzinfo=london))
        await drain(edge)
        assert len(edge.state.delivered_app_messages("lina")) == 1
        # A touch behind schedule into London's night waits for its morning (08:00 London
        # is 15:00 in Beijing, well inside Beijing's window).
        await Touch.filter(id=second.id).update(
            due_at=datetime(2026, 9, 15, 20, 30, tzinfo=london).astimezone(UTC)
        )
        clock.move_to(datetime(2026, 9, 15, 21, 30, tzinfo=london))
        await drain(edge)
        moved = await Touch.get(id=second.id)
        assert moved.state == "planned"
        assert moved.due_at.astimezone(london) == datetime(2026, 9, 16, 8, 0, tzinfo=london)
        assert moved.due_at.astimezone(SHANGHAI).hour == 15


# ---------------------------------------------------------------- at save


def _spec(content: dict[str, Any], **extra: Any) -> CampaignIn:
    return CampaignIn.model_validate(
        {
            "name": "素材校验",
            "trigger": {"kind": "customer_added"},
            "steps": [{"delivery": "mass_send", "content": content}],
            **extra,
        }
    )


async def test_save_refuses_media_wecom_would_refuse_with_clear_errors(
    edge: Edge, files: Files
) -> None:
    async def problems(content: dict[str, Any], **extra: Any) -> dict[str, str]:
        report = await campaigns.check_campaign(_spec(content, **extra))
        return {p.field: p.message for p in report.problems}

    ok = {"kind": "image", "media": {"url": files.url("cover.png")}}
    assert await problems(ok) == {}
    big = await problems({"kind": "image", "media": {"url": files.url("big.png")}})
    assert "10 MB" in big["steps[1].content.media.url"]
    gif = await problems({"kind": "image", "media": {"url": files.url("not-an-image.png")}})
    assert "JPG 或 PNG" in gif["steps[1].content.media.url"]
    gone = await problems({"kind": "file", "media": {"url": files.url("nothing.pdf")}})
    assert "HTTP 404" in gone["steps[1].content.media.url"]
    mini = await problems(
        {
            "kind": "miniprogram",
            "miniprogram": {"title": "权益", "appid": "notanappid", "page": "pages/a.html"},
        }
    )
    assert set(mini) == {
        "steps[1].content.miniprogram.appid",
        "steps[1].content.miniprogram.pic_url",
    }
    cover = await problems(
        {
            "kind": "miniprogram",
            "miniprogram": {
                "title": "权益",
                "appid": "wx0123456789abcdef",
                "page": "pages/a.html",
                "pic_url": files.url("big.png"),
            },
        }
    )
    assert "10 MB" in cover["steps[1].content.miniprogram.pic_url"]
    # Unknown variables — {maturity_date} is known, {maturity_day} is not.
    known = await problems({"kind": "text", "text": "您的理财将于{maturity_date}到期"})
    assert known == {}
    unknown = await problems({"kind": "text", "text": "您的理财将于{maturity_day}到期"})
    assert "未知变量 {maturity_day}" in unknown["steps[1].content.text"]
    link = await problems(
        {
            "kind": "link",
            "link": {"title": "长" * 50, "url": "https://example.com/", "desc": "说" * 200},
        }
    )
    assert set(link) == {"steps[1].content.link.title", "steps[1].content.link.desc"}
    # The time zone: an IANA name the zone database knows.
    zone = await problems({"kind": "text", "text": "您好"}, timezone="Mars/Olympus")
    assert "未知时区" in zone["timezone"]
    assert await problems({"kind": "text", "text": "您好"}, timezone="Asia/Hong_Kong") == {}


def test_a_timezone_survives_the_version_round_trip() -> None:
    spec = _spec({"kind": "text", "text": "您好"}, timezone="Asia/Hong_Kong")
    assert campaigns._version_fields(spec, [])["timezone"] == "Asia/Hong_Kong"


async def test_the_builders_calendar_counts_days_in_the_versions_zone() -> None:
    from datetime import date

    from sop.preview import calendar

    steps = [{"delivery": "reminder", "at_time": "10:00", "content": {"text": "您好"}}]
    # 14:00 UTC: 22:00 on the 15th in Beijing, 02:00 on the 16th in Auckland.
    at = datetime(2026, 9, 15, 14, 0, tzinfo=UTC)
    beijing = await calendar(
        CampaignIn.model_validate(
            {"name": "日历", "trigger": {"kind": "customer_added"}, "steps": steps}
        ),
        now=at,
    )
    auckland = await calendar(
        CampaignIn.model_validate(
            {
                "name": "日历",
                "trigger": {"kind": "customer_added"},
                "steps": steps,
                "timezone": "Pacific/Auckland",
            }
        ),
        now=at,
    )
    # Beijing: today is the 15th, the touch tomorrow at 10:00; Auckland: today is the
    # 16th and 10:00 is still ahead of its customers.
    assert [(d.day, sum(d.counts.values())) for d in beijing.days[:2]] == [
        (date(2026, 9, 15), 0),
        (date(2026, 9, 16), 1),
    ]
    assert [(d.day, sum(d.counts.values())) for d in auckland.days[:1]] == [(date(2026, 9, 16), 1)]


async def test_content_failing_compliance_now_skips_every_touch_of_the_step(edge: Edge) -> None:
    # Approved once, but the rules in force read it as a promise of returns: each of the
    # batch's touches is skipped (the step is analysed once for the batch).
    with time_machine.travel(sh(2026, 9, 15, 9, 0), tick=False) as clock:
        campaign = await make_campaign(
            trigger={"kind": "manual"},
            steps=[
                {
                    "delivery": "reminder",
                    "at_time": "10:00",
                    "content": {"text": "{customer_name}您好，这款产品保本保收益，稳赚不赔"},
                },
            ],
        )
        customers = await _customers(edge, 3, "zhangwei")
        await enrol.enrol_list(await _plan(campaign.id), customers=customers, ref="m:1")
        clock.move_to(sh(2026, 9, 15, 10, 0, 5))
        await drain(edge)
        assert [(t.state, t.reason) for t in await Touch.all()] == [("skipped", "compliance")] * 3
        assert not [
            m
            for m in edge.state.delivered_app_messages("zhangwei")
            if "SOP" in m.content.get("content", "")
        ]
