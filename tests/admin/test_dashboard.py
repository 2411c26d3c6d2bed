"""The dashboard: rollups kept by the pipeline's hook, the rebuild, the CSVs, who sees it.

Messages go through the real edge (ingest API → stream → worker → storing transaction),
so the counters are the ones the admin domain's ``on_message`` hook wrote; the rebuild
must arrive at the same rows from the stored messages alone.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from admin import dashboard, dashboard_pages
from admin.dashboard_models import DashCustomerDay, DashDaily
from bot import models
from tests.admin.console import Console, make_operator, signed_in_client
from tests.bot.harness import Edge

DAY_MS = 86_400_000


def record(msgid: str, sender: str, to: str, text: str, *, at_ms: int) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": at_ms,
        "msgtype": "text",
        "text": {"content": text},
    }


def relations(edge: Edge) -> list[tuple[str, str]]:
    return [(u, e) for u, fs in sorted(edge.state.follows.items()) for e in sorted(fs)]


async def snapshot() -> tuple[dict[tuple[str, str, str], int], set[tuple[str, str]]]:
    daily = {(r.day, r.metric, r.dim): r.n for r in await DashDaily.all()}
    seen = {(r.day, r.customer) for r in await DashCustomerDay.all()}
    return daily, seen


def day_ms(d: date, hour: int) -> int:
    at = datetime(d.year, d.month, d.day, hour, tzinfo=dashboard.SHANGHAI)
    return int(at.timestamp() * 1000)


async def store_two_days(edge: Edge) -> tuple[str, str]:
    """Two Shanghai days of traffic, one advisor violation, two customers on day two."""
    today = datetime.now(UTC).astimezone(dashboard.SHANGHAI).date()
    # Past days only: nothing stored is in the future, whatever the hour the test runs.
    d1, d2 = today - timedelta(days=2), today - timedelta(days=1)
    (u1, e1), (u2, e2) = relations(edge)[:2]
    records = [
        record("d1-a", e1, u1, "你们那款理财现在收益多少？", at_ms=day_ms(d1, 10)),
        record(
            "d1-b", u1, e1, "这个产品保本保收益，年化肯定不低于5%，放心买", at_ms=day_ms(d1, 11)
        ),
        # 00:30 in Shanghai is the previous day in UTC: the day is Shanghai's.
        record("d2-a", e1, u1, "我想把那个理财赎回了，最近要用钱", at_ms=day_ms(d2, 0) + 1_800_000),
        record("d2-b", e2, u2, "你们那款理财现在收益多少？", at_ms=day_ms(d2, 9)),
        record("d2-c", e1, u1, "好的谢谢", at_ms=day_ms(d2, 9) + 60_000),
    ]
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and body["accepted"] == len(records)
    await edge.process_all()
    return d1.isoformat(), d2.isoformat()


async def test_stored_messages_update_the_rollups_and_rebuild_agrees(edge: Edge) -> None:
    d1, d2 = await store_two_days(edge)
    (u1, _), _ = relations(edge)[:2]
    daily, seen = await snapshot()
    assert daily[(d1, "messages", "")] == 2 and daily[(d2, "messages", "")] == 3
    assert daily[(d1, "customers", "")] == 1 and daily[(d2, "customers", "")] == 2
    assert daily[(d1, "violation_category", "guaranteed_return")] == 1
    assert daily[(d1, "violation_advisor", u1)] == 1
    assert daily[(d1, "intent", "product_inquiry")] == 1
    assert daily[(d2, "intent", "redemption_intent")] == 1
    assert not any(k[0] == d2 and k[1].startswith("violation") for k in daily)
    # No external_userid in the clear in the rollups.
    assert all(len(c) == 64 for _, c in seen)

    # A redelivered batch is a duplicate: stored once, counted once.
    (ua, ea) = relations(edge)[0]
    again = [
        record(
            "d1-a", ea, ua, "你们那款理财现在收益多少？", at_ms=day_ms(date.fromisoformat(d1), 10)
        )
    ]
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=again)
    assert body["duplicate"] == 1
    await edge.process_all()
    assert await snapshot() == (daily, seen)

    # The rebuild from stored rows reaches the same rows, and a second run changes nothing.
    result = await dashboard.rebuild()
    assert result.messages == 5
    assert await snapshot() == (daily, seen)
    await dashboard.rebuild()
    assert await snapshot() == (daily, seen)
    # --since recomputes only from that day; the earlier days stay as they were.
    await DashDaily.filter(day=d2).update(n=999)
    await dashboard.rebuild(since=date.fromisoformat(d2))
    assert await snapshot() == (daily, seen)


async def test_rebuild_fills_a_database_that_predates_the_rollups(edge: Edge) -> None:
    await store_two_days(edge)
    incremental = await snapshot()
    await DashDaily.all().delete()
    await DashCustomerDay.all().delete()
    await dashboard.rebuild()
    assert await snapshot() == incremental


async def test_a_failed_store_counts_nothing(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook runs in the storing transaction: a rollback takes the counts with it."""
    from bot import flows

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the consequences could not be written")

    monkeypatch.setattr(flows._Consequences, "write", broken)
    u, e = relations(edge)[0]
    now = int(time.time() * 1000)
    await edge.api("POST", "/api/v1/archive/messages", json=[record("f1", e, u, "你好", at_ms=now)])
    await edge.process_all()
    assert await models.Message.filter(msgid="f1").count() == 0
    assert await DashDaily.all().count() == 0


# ------------------------------------------------------------------ pages


async def _seed_rollups(today: date) -> None:
    rows = [
        (today.isoformat(), "messages", "", 12),
        (today.isoformat(), "customers", "", 4),
        ((today - timedelta(days=1)).isoformat(), "messages", "", 7),
        (today.isoformat(), "violation_category", "guaranteed_return", 2),
        (today.isoformat(), "violation_advisor", "adv-zhao", 2),
        (today.isoformat(), "intent", "complaint", 1),
        # Outside the 7-day window: not in the 7-day CSV.
        ((today - timedelta(days=20)).isoformat(), "messages", "", 100),
    ]
    await DashDaily.bulk_create([DashDaily(day=d, metric=m, dim=k, n=n) for d, m, k, n in rows])


async def test_csv_per_chart(console: Console) -> None:
    today = dashboard.today_in_shanghai()
    await _seed_rollups(today)
    await make_operator("marketing", name="ops")
    client, _ = await signed_in_client(console, "ops")
    async with client:
        async with client.get(console.url("/dashboard/activity.csv?days=7")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/csv"
            assert "siyu-activity-7d.csv" in resp.headers["Content-Disposition"]
            raw = await resp.read()
        assert raw.startswith("\ufeff".encode())
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        assert rows[0] == ["日期", "消息数", "沟通客户数"]
        assert len(rows) == 1 + 7
        assert rows[-1] == [today.isoformat(), "12", "4"]
        assert rows[-2] == [(today - timedelta(days=1)).isoformat(), "7", "0"]
        async with client.get(console.url("/dashboard/violations.csv?days=30")) as resp:
            rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
        assert rows[0] == ["日期", "承诺保本保收益"] and rows[-1] == [today.isoformat(), "2"]
        async with client.get(console.url("/dashboard/advisors.csv")) as resp:
            rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
        assert rows == [["项目", "违规消息"], ["adv-zhao", "2"]]
        async with client.get(console.url("/dashboard/teams.csv")) as resp:
            rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
        assert rows == [["项目", "违规消息"], ["未分部门", "2"]]
        # Every chart on the page has its CSV route, and each answers.
        for chart in dashboard_pages.CHARTS:
            async with client.get(console.url(f"/dashboard/{chart.name}.csv")) as resp:
                assert resp.status == 200, chart.name


async def test_advisors_are_named_and_summed_by_team(console: Console) -> None:
    from tests.admin import review_seed as seed

    today = dashboard.today_in_shanghai()
    await seed.advisor("adv-zhao", "赵经理", department="财富管理一部")
    await seed.advisor("adv-qian", "钱经理", department="财富管理一部")
    await seed.advisor("adv-sun", "孙经理", department="财富管理二部")
    await DashDaily.bulk_create(
        [
            DashDaily(day=today.isoformat(), metric="violation_advisor", dim=a, n=n)
            for a, n in (("adv-zhao", 2), ("adv-qian", 3), ("adv-sun", 4), ("adv-gone", 1))
        ]
    )
    data = await dashboard_pages.chart_data(7, now=datetime.now(UTC))
    assert data["advisors"]["x"] == [
        "孙经理（adv-sun）",
        "钱经理（adv-qian）",
        "赵经理（adv-zhao）",
        "adv-gone",
    ]
    assert data["teams"]["x"] == ["财富管理一部", "财富管理二部", "未分部门"]
    assert data["teams"]["series"][0]["data"] == [5, 4, 1]


async def test_backlog_counts_open_cases_by_age(console: Console) -> None:
    from core.appkit import KEYRING
    from tests.admin import review_seed as seed

    now = datetime.now(UTC)
    zhao = await seed.advisor("adv-zhao", "赵经理")
    cust = await seed.customer("wmCust0001", "周先生")
    for i, age in enumerate((timedelta(hours=2), timedelta(days=2), timedelta(days=10))):
        await seed.conversation(
            keyring=console.app[KEYRING],
            advisor_row=zhao,
            customer_row=cust,
            turns=[("advisor", "您放心，这个产品保本保收益，年化5%稳赚")],
            start=now - age,
            msgid_prefix=f"b{i}",
        )
        await models.ReviewCase.filter(message__msgid__startswith=f"b{i}").update(
            created_at=now - age
        )
    backlog = await dashboard.review_backlog(now=now)
    assert backlog.open == await models.ReviewCase.filter(status="open").count() == 3
    assert [n for _, n in backlog.buckets] == [1, 1, 0, 1]
    assert backlog.oldest_at is not None and now - backlog.oldest_at >= timedelta(days=10)


async def test_alerts_are_counted_per_shanghai_day_and_kind(console: Console) -> None:
    """The alerts chart counts in the database, by Beijing day: 00:30 there is the
    previous day in UTC, 23:59:59.9996 is still the same day (SQLite rounds a time's
    fraction to milliseconds); an alert before the window is not counted."""
    today = dashboard.today_in_shanghai()
    window = dashboard.window_days(days=7, today=today)

    def at(d: date, hour: int, minute: int = 0) -> datetime:
        return datetime(d.year, d.month, d.day, hour, minute, tzinfo=dashboard.SHANGHAI)

    y, before = today - timedelta(days=1), today - timedelta(days=7)
    raised = [
        ("churn", at(y, 0, 30)),  # 16:30 UTC the day before: Beijing's day counts
        ("churn", at(y, 23, 59) + timedelta(seconds=59, microseconds=999_600)),
        ("complaint", at(y, 12)),
        ("complaint", at(today, 0, 5)),
        ("churn", at(before, 23, 59)),  # the day before the window's first
    ]
    for i, (kind, when) in enumerate(raised):
        alert = await models.Alert.create(
            idem_key=f"{kind}:t{i}", kind=kind, recipient_userid="adv-zhao", detail={}
        )
        await models.Alert.filter(id=alert.id).update(created_at=when.astimezone(UTC))
    series = await dashboard.alerts_series(days=window)
    assert series.dims == ["churn", "complaint"]
    assert series.values["churn"] == [0, 0, 0, 0, 0, 2, 0]
    assert series.values["complaint"] == [0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize(
    ("role", "sees"),
    [
        ("marketing", True),
        ("compliance", True),
        ("admin", True),
        ("advisor", False),
        ("team_lead", False),
    ],
)
async def test_who_sees_the_dashboard(console: Console, role: str, sees: bool) -> None:
    await make_operator(role, name=f"{role}-x")
    client, _ = await signed_in_client(console, f"{role}-x")
    async with client:
        async with client.get(console.url("/dashboard"), allow_redirects=False) as resp:
            assert (resp.status == 200) is sees
            body = await resp.text()
        async with client.get(console.url("/"), allow_redirects=False) as home:
            assert ('href="/dashboard"' in await home.text()) is sees
    if sees:
        assert 'type="application/json" id="dashboard-data"' in body
        assert "<script>" not in body  # the CSP allows no inline script


def test_cli_rebuild(
    tmp_path: Any, fresh_database_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``siyu dashboard rebuild``: counts from stored rows; a bad --since changes nothing."""
    import asyncio

    from core import db as core_db
    from core.crypto import load_keyring
    from core.domain import CliContext
    from siyu import cli as siyu_cli
    from tests.admin import review_seed as seed
    from tests.conftest import SCHEMA, make_settings

    settings = make_settings(tmp_path, database_url=fresh_database_url, redis_url=redis_url)
    ctx = CliContext(settings_factory=lambda: settings, schema=SCHEMA)
    assert siyu_cli.main(["migrate"], ctx=ctx) == 0

    async def prepare() -> None:
        async with core_db.db_lifespan(settings, SCHEMA):
            await seed.conversation(
                keyring=load_keyring(settings),
                advisor_row=await seed.advisor("adv-zhao", "赵经理"),
                customer_row=await seed.customer("wmCust0001", "周先生"),
                turns=[("customer", "收益有保证吗"), ("advisor", "这个产品保本保收益，放心买")],
            )

    async def read() -> dict[tuple[str, str, str], int]:
        async with core_db.db_lifespan(settings, SCHEMA):
            return (await snapshot())[0]

    asyncio.run(prepare())
    capsys.readouterr()
    with pytest.raises(SystemExit):
        siyu_cli.main(["dashboard", "rebuild", "--since", "2026-13-01"], ctx=ctx)
    assert asyncio.run(read()) == {}
    assert siyu_cli.main(["dashboard", "rebuild"], ctx=ctx) == 0
    assert "2 messages over 1 days" in capsys.readouterr().out
    first = asyncio.run(read())
    day = seed.T0.astimezone(dashboard.SHANGHAI).date().isoformat()
    assert first[(day, "messages", "")] == 2 and first[(day, "customers", "")] == 1
    assert first[(day, "violation_advisor", "adv-zhao")] == 1
    assert siyu_cli.main(["dashboard", "rebuild", "--since", day], ctx=ctx) == 0
    assert asyncio.run(read()) == first
