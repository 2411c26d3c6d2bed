"""The domains' read hooks: a read stored together ends as if each message were stored alone.

The dashboard's rollups and sop's replies, opt-outs, goals and intent triggers run once
per storing transaction (``on_messages``), their reads and writes grouped for the whole
read.  What must not change is what they leave behind: a mixed read stored together —
several customers and days, a customer whose earlier line enrols them and whose later
line ends that journey, a 「退订」, a reply to a sent touch — leaves the same rollups,
enrolments, touches and opt-outs as the same messages stored one by one; and so does a
read one of whose messages fails (stored again message by message, the bad one alone).
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient

from admin import dashboard
from admin.dashboard_models import DashCustomerDay, DashDaily
from bot import models as bot_models
from bot.archive import record_to_draft
from bot.flows import MessageToStore, StoreDeps, do_store_messages
from bot.hooks import Hooks, StoredMessage
from bot.schemas import StoreResult
from core.crypto import Keyring
from core.domain import Domain
from core.settings import Settings
from siyu.domains import DOMAINS
from sop.engine import enrol, planner
from sop.models import Campaign, Enrolment, OptOut, Touch, TouchState
from tests.sop.test_engine_flow import add_relation, make_campaign, text

ADVISOR = "lina"
VIOLATION = "这个产品保本保收益，年化肯定不低于5%，放心买"
INQUIRY = "你们那款理财现在收益多少？"
REDEMPTION = "我想把那个理财赎回了，最近急用钱"
REFUSED = "拒绝这条"


def _keyring(settings: Settings) -> Keyring:
    keys = {k: base64.b64decode(v.get_secret_value()) for k, v in settings.crypto.keys.items()}
    return Keyring(keys=keys, active_key_id=settings.crypto.active_key_id)


def _deps(settings: Settings, *extra: Domain) -> StoreDeps:
    return StoreDeps(
        keyring=_keyring(settings),
        hooks=Hooks.from_domains((*DOMAINS, *extra)),
        agent_id=1000002,
    )


async def _refuse(message: StoredMessage, conn: BaseDBAsyncClient) -> None:
    if REFUSED in message.text_masked:
        raise RuntimeError("refused")


# A domain whose hook fails on one message: the read's transaction rolls back.
PICKY = Domain(name="picky", hooks={"on_message": _refuse})


def _line(msgid: str, sender: str, to: str, content: str, at: datetime) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(at.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": content},
    }


async def _read(analyzer: Any, records: Sequence[dict[str, Any]]) -> list[MessageToStore]:
    drafts = [record_to_draft(r) for r in records]
    analyses = await analyzer.analyze_many([(d.text, d.analysis_role) for d in drafts])
    return [
        MessageToStore(draft=d, analysis=a, original={"record": r})
        for d, a, r in zip(drafts, analyses, records, strict=True)
    ]


async def _campaigns() -> dict[str, Campaign]:
    step = {"delivery": "reminder", "offset_minutes": 30, "content": text("您好，有空聊聊吗")}
    return {
        # Enrols on a redemption intent; a reply ends it.
        "win_back": await make_campaign(
            name="赎回挽留",
            trigger={"kind": "intent", "intent": "redemption_intent"},
            exits=[{"kind": "replied"}],
            steps=[step],
        ),
        # An operator's list; a product inquiry is its goal and ends it.
        "care": await make_campaign(
            name="关怀",
            exits=[{"kind": "goal"}, {"kind": "opted_out"}],
            goal={"intent": "product_inquiry"},
            steps=[step],
        ),
    }


def _customers(run: str) -> dict[str, str]:
    return {k: f"wmREAD{run}{k}" for k in ("c1", "c2", "c3", "c4", "c5", "c6")}


async def _before(run: str, now: datetime, campaigns: dict[str, Campaign]) -> None:
    """c1 and c2 in the care journey since yesterday; c1's touch went out an hour ago."""
    cs = _customers(run)
    for ext in cs.values():
        await add_relation(ADVISOR, ext, name="客户", attributes={})
    plans = {p.campaign_id: p for p in await planner.active_plans()}
    care = plans[campaigns["care"].id]
    made = await enrol.enrol_list(
        care, customers=[cs["c1"], cs["c2"]], ref="list:1", at=now - timedelta(days=1)
    )
    assert made == 2
    enrolment = await Enrolment.get(customer=cs["c1"])
    await Touch.filter(enrolment_id=enrolment.id).update(
        state=TouchState.SENT, sent_at=now - timedelta(hours=1)
    )


def _records(run: str, now: datetime, *, refused: bool) -> list[dict[str, Any]]:
    cs = _customers(run)
    at = [now - timedelta(minutes=30 - i) for i in range(12)]
    lines = [
        _line(f"{run}-1", ADVISOR, cs["c1"], VIOLATION, at[0]),
        # c1 answers the touch with the care journey's goal: goal reached, exited.
        _line(f"{run}-2", cs["c1"], ADVISOR, INQUIRY, at[1]),
        # c3 asks to redeem: enrolled in the win-back journey …
        _line(f"{run}-3", cs["c3"], ADVISOR, REDEMPTION, at[2]),
        # … and its next line, in the same read, is a reply that ends it.
        _line(f"{run}-4", cs["c3"], ADVISOR, "好的，谢谢，我再考虑一下", at[3]),
        _line(f"{run}-5", cs["c2"], ADVISOR, "退订", at[4]),
        _line(f"{run}-6", cs["c4"], ADVISOR, "好的", at[5]),
        _line(f"{run}-7", cs["c1"], ADVISOR, "好的", at[6]),
        # A day before, in Shanghai: another day's counters.
        _line(f"{run}-8", cs["c4"], ADVISOR, INQUIRY, now - timedelta(days=1)),
        _line(f"{run}-9", ADVISOR, cs["c4"], "您好，第3期周报已发您", at[7]),
        # Two customers whose last lines in the read ask to redeem: enrolled together.
        _line(f"{run}-10", cs["c5"], ADVISOR, REDEMPTION, at[9]),
        _line(f"{run}-11", cs["c6"], ADVISOR, REDEMPTION, at[10]),
    ]
    if refused:
        lines.insert(5, _line(f"{run}-x", cs["c4"], ADVISOR, REFUSED, at[8]))
    return lines


async def _rollups() -> tuple[Counter[tuple[str, str, str]], Counter[str]]:
    daily = Counter({(r.day, r.metric, r.dim): int(r.n) for r in await DashDaily.all()})
    seen = Counter(r.day for r in await DashCustomerDay.all())
    return daily, seen


async def _journeys(run: str) -> list[tuple[Any, ...]]:
    """Enrolments, touches and opt-outs of ``run``'s customers, with the run's names
    replaced so two runs compare."""
    cs = _customers(run)
    names = {v: k for k, v in cs.items()}

    def plain(value: str | None) -> str | None:
        return value.replace(f"{run}-", "RUN-") if value else value

    rows: list[tuple[Any, ...]] = []
    for e in await Enrolment.filter(customer__in=list(cs.values())).order_by("id"):
        rows.append(
            (
                "enrolment",
                e.campaign_id,  # type: ignore[attr-defined]
                names[e.customer],
                e.advisor,
                str(e.state),
                e.exit_reason,
                plain(e.trigger_ref),
                e.goal_reached_at,
                e.exited_at,
            )
        )
    for t in await Touch.filter(customer__in=list(cs.values())).order_by("id"):
        rows.append(("touch", names[t.customer], str(t.state), t.reason, t.replied_at))
    for o in await OptOut.filter(customer__in=list(cs.values())).order_by("id"):
        rows.append(("opt_out", names[o.customer], str(o.source), o.reason))
    return sorted(rows, key=repr)


async def _store(
    run: str,
    *,
    analyzer: Any,
    deps: StoreDeps,
    now: datetime,
    together: bool,
    refused: bool = False,
) -> tuple[Any, ...]:
    """Store ``run``'s read together or message by message; what it changed."""
    daily0, seen0 = await _rollups()
    read = await _read(analyzer, _records(run, now, refused=refused))
    if together:
        results = await do_store_messages(items=read, deps=deps)
    else:
        results = [r for item in read for r in await do_store_messages(items=[item], deps=deps)]
    daily1, seen1 = await _rollups()
    stored = [r.stored if isinstance(r, StoreResult) else type(r).__name__ for r in results]
    return stored, daily1 - daily0, seen1 - seen0, await _journeys(run)


@pytest.mark.parametrize("refused", [False, True], ids=["clean read", "one message fails"])
async def test_a_read_stored_together_ends_as_messages_stored_alone(
    db: None, settings: Settings, analyzer: Any, refused: bool
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    campaigns = await _campaigns()
    deps = _deps(settings, PICKY)
    await _before("a", now, campaigns)
    await _before("b", now, campaigns)
    together = await _store(
        "a", analyzer=analyzer, deps=deps, now=now, together=True, refused=refused
    )
    alone = await _store(
        "b", analyzer=analyzer, deps=deps, now=now, together=False, refused=refused
    )
    assert together == alone

    # And what they both did is what each message calls for.
    stored, daily, seen, journeys = together
    assert stored == [True] * 5 + (["RuntimeError"] if refused else []) + [True] * 6
    days = Counter(
        dashboard.day_of(datetime.fromtimestamp(r["msgtime"] / 1000, UTC))
        for r in _records("a", now, refused=False)
    )
    assert {d: n for (d, m, _), n in daily.items() if m == "messages"} == days
    assert {d: n for (d, m, _), n in daily.items() if m == "customers"} == seen
    assert (
        sum(n for (_, m, d), n in daily.items() if m == "violation_advisor" and d == ADVISOR) == 1
    )
    win_back, care = campaigns["win_back"].id, campaigns["care"].id
    enrolments = {(r[1], r[2]): r for r in journeys if r[0] == "enrolment"}
    assert enrolments[(care, "c1")][4:6] == ("exited", "goal")
    assert enrolments[(care, "c1")][7] is not None  # goal reached
    assert enrolments[(care, "c2")][4:6] == ("exited", "opted_out")
    assert enrolments[(win_back, "c3")][4:7] == ("exited", "replied", "intent:archive:RUN-3")
    for c, msgid in (("c5", "RUN-10"), ("c6", "RUN-11")):
        assert enrolments[(win_back, c)][4:7] == ("active", None, f"intent:archive:{msgid}")
    assert ("opt_out", "c2", "customer_reply", "退订") in journeys
    replied = [r for r in journeys if r[0] == "touch" and r[1] == "c1"]
    assert replied and replied[0][4] is not None  # the reply counts for the sent touch
    if refused:
        assert not await bot_models.Message.filter(msgid="a-x").exists()


async def test_a_read_costs_the_hooks_a_few_statements(
    db: None, settings: Settings, analyzer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Forty customer lines that answer no touch and start nothing: the dashboard writes
    its two rollups with one statement each, sop reads the read's enrolments and
    touches with one query each (it was up to four statements per message); ten that
    each trigger a journey are enrolled with one insert (it was one per message)."""
    await _campaigns()
    now = datetime.now(UTC)
    records = [
        _line(f"q{i}", f"wmQUIET{i:03d}", ADVISOR, "好的，谢谢", now - timedelta(minutes=i))
        for i in range(40)
    ]
    read = await _read(analyzer, records)
    caplog.set_level(logging.DEBUG, logger="tortoise.db_client")
    results = await do_store_messages(items=read, deps=_deps(settings))
    assert all(isinstance(r, StoreResult) and r.stored for r in results)
    statements = [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]

    def count(prefix: str, table: str) -> int:
        return sum(1 for s in statements if s.startswith(prefix) and f'"{table}"' in s)

    assert count("INSERT", "admin_dash_daily") == 1
    assert count("INSERT", "admin_dash_customer_day") == 1
    assert count("SELECT", "sop_enrolment") == 1
    assert count("SELECT", "sop_touch") == 1
    assert count("SELECT", "sop_campaign") == 1
    daily, seen = await _rollups()
    assert sum(n for (_, m, _), n in daily.items() if m == "messages") == 40
    assert sum(seen.values()) == 40

    # Ten customers asking to redeem: enrolled in the win-back journey together.
    records = [
        _line(f"r{i}", f"wmREDEEM{i:03d}", ADVISOR, REDEMPTION, now - timedelta(minutes=i))
        for i in range(10)
    ]
    read = await _read(analyzer, records)
    caplog.clear()
    await do_store_messages(items=read, deps=_deps(settings))
    statements = [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]
    assert count("INSERT", "sop_enrolment") == 1
    assert count("INSERT", "sop_touch") == 1
    assert await Enrolment.filter(customer__startswith="wmREDEEM").count() == 10
