"""Message rules judged once per read end as if each message were stored alone.

Tagging's message rules run once per storing transaction (``on_messages``), their
evidence read with one query per rule for the whole read.  What they leave behind must
be what storing the same messages one by one leaves: which tags each customer has, when
they were applied and until when, the evidence each application names, the history of
adds and removes in order — including a customer whose second product question in the
read tags them, whose 「不买了」 removes the tag and whose third question puts it back,
and a customer whose first question comes before the second one in the read (the later
line is evidence for itself, never for the earlier one).  And so does a read one of
whose messages fails: stored again message by message, the bad one alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import models as bot_models
from bot.flows import do_store_messages
from bot.schemas import StoreResult
from core.settings import Settings
from tagging import rules
from tagging.models import CustomerTag, CustomerTagHistory
from tests.siyu.test_read_hooks import ADVISOR, INQUIRY, PICKY, REFUSED, _deps, _line, _read
from tests.tagging.test_rules import OPS, _tags, rule


def _customers(run: str) -> dict[str, str]:
    return {k: f"wmTAGREAD{run}{k}" for k in ("c1", "c2", "c3", "c4")}


def _before(run: str, now: datetime) -> list[dict[str, Any]]:
    """c1 asked about products two days ago; c4 twenty days ago (outside the window)."""
    cs = _customers(run)
    return [
        _line(f"{run}-p1", cs["c1"], ADVISOR, INQUIRY, now - timedelta(days=2)),
        _line(f"{run}-p4", cs["c4"], ADVISOR, INQUIRY, now - timedelta(days=20)),
    ]


def _records(run: str, now: datetime, *, refused: bool) -> list[dict[str, Any]]:
    cs = _customers(run)
    at = [now - timedelta(minutes=30 - i) for i in range(12)]
    lines = [
        # c2's first question: one is not enough (its later one in the read does not count).
        _line(f"{run}-1", cs["c2"], ADVISOR, INQUIRY, at[0]),
        # c1's second within 14 days: tagged, both as evidence.
        _line(f"{run}-2", cs["c1"], ADVISOR, INQUIRY, at[1]),
        _line(f"{run}-3", ADVISOR, cs["c3"], "您好，第3期周报已发您", at[2]),
        # c2's second: tagged now, with the first.
        _line(f"{run}-4", cs["c2"], ADVISOR, INQUIRY, at[3]),
        # c1 changes their mind: the tag goes …
        _line(f"{run}-5", cs["c1"], ADVISOR, "算了，不买了", at[4]),
        # … and comes back with the next question.
        _line(f"{run}-6", cs["c1"], ADVISOR, INQUIRY, at[5]),
        _line(f"{run}-7", cs["c4"], ADVISOR, INQUIRY, at[6]),
        _line(f"{run}-8", cs["c3"], ADVISOR, "养老的产品有哪些", at[7]),
        # Read after c2's others but written a day before them.
        _line(f"{run}-9", cs["c2"], ADVISOR, INQUIRY, now - timedelta(days=1)),
    ]
    if refused:
        lines.insert(4, _line(f"{run}-x", cs["c4"], ADVISOR, REFUSED, at[8]))
    return lines


async def _rules() -> dict[str, int]:
    asked, pension, report = await _tags("问产品", "养老", "看周报")
    for spec in (
        rule(
            "两周内两次问产品",
            "message",
            {"intent": "product_inquiry", "min_count": 2, "within_days": 14},
            add=[asked],
            expires_after_days=30,
        ),
        rule("不买了", "message", {"keywords": ["不买了"]}, remove=[asked]),
        rule("养老", "message", {"keywords": ["养老"]}, add=[pension]),
        rule("周报", "message", {"keywords": ["周报"], "sender_role": "advisor"}, add=[report]),
    ):
        await rules.do_save_rule(spec=spec, actor=OPS)
    return {"asked": asked, "pension": pension, "report": report}


async def _tagging(run: str, tags: dict[str, int]) -> tuple[list[Any], list[Any]]:
    """``run``'s customers' tags and tag history, with the run's names and ids replaced
    by plain ones (customer keys, tag names, msgids) so two runs compare."""
    cs = _customers(run)
    customers = {
        c.id: k
        for k, ext in cs.items()
        for c in await bot_models.Customer.filter(external_userid=ext)
    }
    tag_names = {v: k for k, v in tags.items()}
    msgids = {
        m.id: m.msgid.replace(f"{run}-", "RUN-")
        for m in await bot_models.Message.filter(customer_id__in=list(customers))
    }

    def reason(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "message_ids": [msgids[i] for i in r.get("message_ids", [])]}

    applied = [
        (
            customers[t.customer_id],  # type: ignore[attr-defined]
            tag_names[t.tag_id],  # type: ignore[attr-defined]
            str(t.source),
            t.applied_by,
            reason(t.reason),
            # When the rule applied it is the clock's; until when, the message's time.
            t.expires_at,
        )
        for t in await CustomerTag.filter(customer_id__in=list(customers))
    ]
    history = [
        (
            customers[h.customer_id],
            tag_names[h.tag_id],
            h.action,
            h.actor,
            reason(h.reason),
        )
        for h in await CustomerTagHistory.filter(customer_id__in=list(customers)).order_by("id")
    ]
    return sorted(applied, key=repr), history


async def _store(
    run: str,
    *,
    analyzer: Any,
    settings: Settings,
    tags: dict[str, int],
    now: datetime,
    together: bool,
    refused: bool,
) -> tuple[Any, ...]:
    deps = _deps(settings, PICKY)
    for item in await _read(analyzer, _before(run, now)):
        await do_store_messages(items=[item], deps=deps)
    read = await _read(analyzer, _records(run, now, refused=refused))
    if together:
        results = await do_store_messages(items=read, deps=deps)
    else:
        results = [r for item in read for r in await do_store_messages(items=[item], deps=deps)]
    stored = [r.stored if isinstance(r, StoreResult) else type(r).__name__ for r in results]
    return stored, *await _tagging(run, tags)


@pytest.mark.parametrize("refused", [False, True], ids=["clean read", "one message fails"])
async def test_a_read_tagged_together_ends_as_messages_tagged_alone(
    db: None, settings: Settings, analyzer: Any, refused: bool
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    tags = await _rules()
    kw: dict[str, Any] = {"analyzer": analyzer, "settings": settings, "tags": tags, "now": now}
    together = await _store("a", together=True, refused=refused, **kw)
    alone = await _store("b", together=False, refused=refused, **kw)
    assert together == alone

    # And what they both did is what each message calls for.
    stored, applied, history = together
    assert stored == [True] * 4 + (["RuntimeError"] if refused else []) + [True] * 5
    by = {(c, t): (reason["message_ids"], expires) for c, t, _, _, reason, expires in applied}
    month = [now - timedelta(minutes=30 - i) + timedelta(days=30) for i in range(12)]
    # Applied again by c1's third question, until a month after it.
    assert by[("c1", "asked")] == (["RUN-p1", "RUN-2", "RUN-6"], month[5])
    # By c2's second, not by the first (the second was read with it).
    assert by[("c2", "asked")] == (["RUN-1", "RUN-4"], month[3])
    assert by[("c3", "pension")][0] == ["RUN-8"]
    assert by[("c3", "report")][0] == ["RUN-3"]
    assert ("c4", "asked") not in by  # one question in 14 days
    assert [(c, t, a) for c, t, a, *_ in history if c == "c1"] == [
        ("c1", "asked", "add"),
        ("c1", "asked", "remove"),
        ("c1", "asked", "add"),
    ]
    if refused:
        assert not await bot_models.Message.filter(msgid="a-x").exists()
