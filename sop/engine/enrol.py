"""Triggers and exits: who enters a journey, and who leaves it.

Three ways in, one way to write (``planner.enrol``, idempotent by trigger):

- **Pipeline hooks**, inside the transaction that stores the event or message
  (``on_event``/``on_messages``): a new contact (optionally through one channel
  ``State``), an intent detected in a customer's message; and the exits that a
  message or an event decides — a reply, a 退订, a goal intent, a relation deleted.
  No network here: a welcome message is an outbox row in the same transaction.
- **Jobs**, for what no single message carries: tags added or removed (from every
  source: rules, operators, imports, WeCom), attribute dates (birthdays yearly, a
  maturity date − N days) once a day, inactivity.
- **Manual**, an operator's list or a snapshot of the audience, streamed in batches
  so a million customers never sit in memory at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import opt_out as bot_opt_out
from bot import outbox
from bot.hooks import StoredEvent, StoredMessage
from sop.engine import media as sop_media
from sop.engine import store
from sop.engine.planner import Target, VersionPlan, active_plans, enrol
from sop.engine.specs import missing_variables, render
from sop.engine.timing import SHANGHAI
from sop.models import (
    Delivery,
    Enrolment,
    EnrolmentState,
    OptOut,
    OptOutSource,
    Touch,
    TouchState,
)
from tagging import audience as tagging_audience
from tagging.models import CustomerTagHistory, Tag

log = logging.getLogger(__name__)

__all__ = [
    "do_opt_out",
    "enrol_audience",
    "enrol_list",
    "exit_enrolments",
    "is_opt_out",
    "on_event",
    "on_messages",
    "run_date_triggers",
    "run_tag_triggers",
]

_ADDED = {"add_external_contact", "add_half_external_contact"}
_RELATION_END = {"del_external_contact", "del_follow_user"}
#: Final states: a touch in one of them never changes again.
FINAL = (TouchState.SENT, TouchState.CONFIRMED, TouchState.SKIPPED, TouchState.FAILED)
PENDING = (TouchState.PLANNED, TouchState.DUE)


def is_opt_out(text: str) -> bool:
    """A customer's 「退订」 (the edge's reading, ``bot.opt_out``: also not a redemption intent)."""
    return bot_opt_out.is_opt_out(text)


# ---------------------------------------------------------------- exits


async def exit_enrolments(
    c: BaseDBAsyncClient, *, ids: Sequence[int], reason: str, at: datetime
) -> int:
    """End active enrolments and skip their touches not yet handed to WeCom.

    A touch already with the outbox is stopped by the before-send check (the
    enrolment is no longer active), so nothing goes out after an exit.
    """
    if not ids:
        return 0
    n = await (
        Enrolment.filter(id__in=list(ids), state=EnrolmentState.ACTIVE)
        .using_db(c)
        .update(state=EnrolmentState.EXITED, exit_reason=reason[:64], exited_at=at)
    )
    # Found by enrolment (its unique index), not by state: millions of touches are
    # planned at any time, a few belong to these enrolments.
    pending = {p.value for p in PENDING}
    touch_ids = [
        int(str(tid))
        for tid, st in await Touch.filter(enrolment_id__in=list(ids))
        .using_db(c)
        .values_list("id", "state")
        if str(st) in pending
    ]
    if touch_ids:
        await (
            Touch.filter(id__in=touch_ids, state__in=PENDING)
            .using_db(c)
            .update(state=TouchState.SKIPPED, reason=f"exited:{reason}"[:64])
        )
    return int(n)


async def _active_enrolments(
    c: BaseDBAsyncClient, *, customer: str, campaign_ids: Sequence[int] | None = None
) -> list[Enrolment]:
    q = Enrolment.filter(customer=customer, state=EnrolmentState.ACTIVE)
    if campaign_ids is not None:
        q = q.filter(campaign_id__in=list(campaign_ids))
    return list(await q.using_db(c))


async def do_opt_out(
    c: BaseDBAsyncClient,
    *,
    customer: str,
    source: OptOutSource,
    by: str,
    reason: str = "",
    at: datetime | None = None,
) -> bool:
    """Record the opt-out (once) and end every journey of the customer."""
    at = at or datetime.now(UTC)
    await store.insert_rows(
        c,
        OptOut,
        [{"customer": customer, "source": source, "reason": reason[:255], "by": by[:96]}],
        conflict=("customer",),
    )
    enrolments = await _active_enrolments(c, customer=customer)
    await exit_enrolments(c, ids=[e.id for e in enrolments], reason="opted_out", at=at)
    return bool(enrolments)


# ---------------------------------------------------------------- trigger helpers


def _trigger_kind(plan: VersionPlan) -> str | None:
    return str(plan.trigger.get("kind")) if plan.trigger else None


async def _in_audience(plan: VersionPlan, customers: Sequence[str]) -> set[str]:
    """Customers among ``customers`` that the version's audience selects (all if none)."""
    if not plan.audience:
        return set(customers)
    c = store.conn()
    node = tagging_audience.parse(plan.audience)
    clause, params = await tagging_audience.where_clause(node, conn=c)
    found: set[str] = set()
    names = list(dict.fromkeys(customers))
    for i in range(0, len(names), 500):
        part = names[i : i + 500]
        marks = store.placeholders(c, len(part), start=len(params))
        rows = await c.execute_query_dict(
            # The clause is built from the grammar's fixed fragments and placeholders.
            f"SELECT c.external_userid FROM bot_customer c WHERE ({clause}) "  # noqa: S608
            f"AND c.external_userid IN ({marks})",
            [*params, *part],
        )
        found |= {str(r["external_userid"]) for r in rows}
    return found


async def _enrol_filtered(
    c: BaseDBAsyncClient, plan: VersionPlan, targets: Sequence[Target]
) -> list[tuple[int, Target, list[int]]]:
    if plan.audience and targets:
        keep = await _in_audience(plan, [t.customer for t in targets])
        targets = [t for t in targets if t.customer in keep]
    return await enrol(c, plan, targets)


# ---------------------------------------------------------------- pipeline hooks


async def on_event(record: StoredEvent, conn: BaseDBAsyncClient) -> None:
    if record.event != "change_external_contact" or not record.customer or not record.advisor:
        return
    if record.change_type in _ADDED:
        await _customer_added(record, conn)
    elif record.change_type in _RELATION_END:
        await _relation_ended(record, conn)


async def _customer_added(record: StoredEvent, c: BaseDBAsyncClient) -> None:
    assert record.customer and record.advisor
    at = record.occurred_at
    for plan in await active_plans(c):
        if _trigger_kind(plan) != "customer_added":
            continue
        wanted_state = (plan.trigger or {}).get("state")
        if wanted_state and wanted_state != (record.state or ""):
            continue
        target = Target(record.customer, record.advisor, f"added:{record.event_key}"[:160], at)
        welcome = next((s for s in plan.steps if s.delivery == Delivery.WELCOME), None)
        if plan.audience and not await _in_audience(plan, [record.customer]):
            continue
        state = {welcome.id: TouchState.SENDING} if welcome and record.welcome_code else None
        made = await enrol(c, plan, [target], touch_state=state)
        if welcome is None or not made:
            continue
        enrolment_id, _, touch_ids = made[0]
        touch_id = touch_ids[plan.steps.index(welcome)]
        if not touch_id:
            continue
        if not record.welcome_code:
            # add_half_external_contact or a code WeCom did not send: nothing to send with.
            await (
                Touch.filter(id=touch_id)
                .using_db(c)
                .update(state=TouchState.SKIPPED, reason="no_welcome_code")
            )
            continue
        names = await store.advisor_names(c, userids=[record.advisor])
        facts = await store.customer_facts(c, customers=[record.customer])
        name, attrs = facts.get(record.customer, ("", {}))
        values = {
            "customer_name": name,
            "advisor_name": names.get(record.advisor, ""),
            "product_name": str((plan.product or {}).get("name") or ""),
            "maturity_date": str(attrs.get("maturity_date") or ""),
        }
        if missing_variables(welcome.content, values):
            # Never a literal {maturity_date} in a welcome: skipped, the reason kept.
            await (
                Touch.filter(id=touch_id)
                .using_db(c)
                .update(state=TouchState.SKIPPED, reason="missing_variable")
            )
            continue
        text = render(str(welcome.content.get("text") or ""), values)
        write = outbox.send_welcome_msg(
            welcome_code=record.welcome_code,
            text=text or None,
            # Media ids are stand-ins, uploaded right before the send (Engine.before_send).
            attachments=sop_media.attachments(welcome.content, values),
        )
        # The WelcomeCode dies 20 s after the event: sent now, ahead of planned touches.
        row = await outbox.enqueue(
            c, idem_key=f"sop.touch:{touch_id}", write=write, origin=f"sop.touch:{touch_id}"
        )
        await (
            Touch.filter(id=touch_id)
            .using_db(c)
            .update(outbox_id=row.id if row else None, attempts=1)
        )
        log.info("welcome queued", extra={"touch_id": touch_id, "enrolment_id": enrolment_id})


async def _relation_ended(record: StoredEvent, c: BaseDBAsyncClient) -> None:
    assert record.customer and record.advisor
    plans = {p.campaign_id: p for p in await active_plans(c)}
    mine = [
        e
        for e in await _active_enrolments(c, customer=record.customer)
        if e.advisor == record.advisor
        and (p := plans.get(e.campaign_id)) is not None  # type: ignore[attr-defined]
        and p.exits_on("relation_deleted")
    ]
    await exit_enrolments(
        c, ids=[e.id for e in mine], reason="relation_deleted", at=record.occurred_at
    )


def _from_customer(record: StoredMessage) -> bool:
    """A customer's own line in a one-to-one chat: what replies, opt-outs and intents are."""
    return record.sender_role == "customer" and bool(record.customer) and not record.roomid


#: How far back a reply looks for the touches it may answer (by due time, the
#: (customer, due_at) index); a reply counts for a touch sent within 3 days before it.
_REPLY_LOOKBACK = timedelta(days=10)
_REPLY_WINDOW = timedelta(days=3)


@dataclass
class _ReadState:
    """A read's customers' active enrolments and recent touches, read once for the read.

    A customer whose rows one of the read's messages changed (a reply recorded, an
    exit, an enrolment, an opt-out) is read again for their later messages, as if each
    message had been stored alone: the prefetched rows describe the customer only until
    the read itself writes to them.
    """

    enrolments: dict[str, list[Enrolment]]
    # (touch id, state, sent_at, replied_at, due_at) by customer.
    touches: dict[str, list[tuple[int, str, datetime | None, datetime | None, datetime]]]
    changed: set[str] = field(default_factory=set)

    @classmethod
    async def read(
        cls,
        c: BaseDBAsyncClient,
        *,
        customers: Sequence[str],
        since: datetime,
        with_enrolments: bool = True,
    ) -> _ReadState:
        """``with_enrolments=False``: no enrolment is read (none is needed without an
        active campaign: an enrolment is judged against its campaign's plan only)."""
        enrolments: dict[str, list[Enrolment]] = {}
        touches: dict[str, list[tuple[int, str, datetime | None, datetime | None, datetime]]] = {}
        for part in store._chunks(customers):
            if with_enrolments:
                for e in await Enrolment.filter(
                    customer__in=list(part), state=EnrolmentState.ACTIVE
                ).using_db(c):
                    enrolments.setdefault(e.customer, []).append(e)
            for tid, customer, st, sent, replied, due in (
                await Touch.filter(customer__in=list(part), due_at__gte=since)
                .using_db(c)
                .values_list("id", "customer", "state", "sent_at", "replied_at", "due_at")
            ):
                touches.setdefault(str(customer), []).append(
                    (int(str(tid)), str(st), sent, replied, due)
                )
        return cls(enrolments=enrolments, touches=touches)

    async def touches_of(
        self, c: BaseDBAsyncClient, customer: str, *, since: datetime
    ) -> list[tuple[int, str, datetime | None, datetime | None]]:
        if customer in self.changed:
            # The customer's own touches (the (customer, due_at) index), filtered here.
            return [
                (int(str(tid)), str(st), sent, replied)
                for tid, st, sent, replied in await Touch.filter(
                    customer=customer, due_at__gte=since
                )
                .using_db(c)
                .values_list("id", "state", "sent_at", "replied_at")
            ]
        return [
            (tid, st, sent, replied)
            for tid, st, sent, replied, due in self.touches.get(customer, ())
            if due >= since
        ]

    async def enrolments_of(self, c: BaseDBAsyncClient, customer: str) -> list[Enrolment]:
        if customer in self.changed:
            return await _active_enrolments(c, customer=customer)
        return self.enrolments.get(customer, [])


async def on_messages(records: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
    """The pipeline hook for a read's stored messages: replies, opt-outs, intent triggers.

    Each customer message is judged as if stored alone, in the order read; what a read
    shares is read once — the active campaigns (as they stood when the read was
    stored, as tagging reads its rules) and its customers' active enrolments and recent
    touches, one query each for the whole read.  Most customer lines answer no touch,
    end no journey and trigger none: they cost the read nothing more, where each cost
    three queries alone.  The intent triggers of a customer's last line in the read are
    enrolled together, a campaign at a time, once every line is judged: no later line
    of theirs can see the enrolment, and other customers' lines never do.
    """
    mine = [r for r in records if _from_customer(r)]
    if not mine:
        return
    plans = {p.campaign_id: p for p in await active_plans(conn)}
    # With no active campaign a message ends no journey and triggers none: only its
    # opt-out and its replies to touches are judged, and no enrolment is read.
    state = await _ReadState.read(
        conn,
        customers=sorted({r.customer for r in mine if r.customer}),
        since=min(r.msgtime for r in mine) - _REPLY_LOOKBACK,
        with_enrolments=bool(plans),
    )
    last = {r.customer: pos for pos, r in enumerate(mine)}
    triggered: dict[int, list[Target]] = {}
    for pos, record in enumerate(mine):
        later = triggered if last[record.customer] == pos else None
        if await _customer_message(record, conn, plans=plans, state=state, triggered=later):
            state.changed.add(record.customer or "")
    for campaign_id, targets in triggered.items():
        await _enrol_filtered(conn, plans[campaign_id], targets)


async def _customer_message(
    record: StoredMessage,
    c: BaseDBAsyncClient,
    *,
    plans: dict[int, VersionPlan],
    state: _ReadState,
    triggered: dict[int, list[Target]] | None = None,
) -> bool:
    """One customer message's replies, exits and intent triggers; True if it wrote any.

    With ``triggered``, the enrolments its intent triggers are added there (by campaign)
    for the caller to make, instead of made here.
    """
    assert record.customer
    customer, at = record.customer, record.msgtime
    if is_opt_out(record.text_masked):
        await do_opt_out(
            c,
            customer=customer,
            source=OptOutSource.CUSTOMER_REPLY,
            by=f"customer:{customer}"[:96],
            reason="退订",
            at=at,
        )
        return True
    wrote = False
    # A reply within 3 days of a touch counts for that touch's results.
    touches = await state.touches_of(c, customer, since=at - _REPLY_LOOKBACK)
    recent = [
        tid
        for tid, st, sent, replied in touches
        if st in (TouchState.SENT.value, TouchState.CONFIRMED.value)
        and replied is None
        and sent is not None
        and at - _REPLY_WINDOW <= sent <= at
    ]
    if recent:
        await Touch.filter(id__in=recent).using_db(c).update(replied_at=at)
        wrote = True
    replied: list[int] = []
    goal_exit: list[int] = []
    goal_reached: list[int] = []
    for e in await state.enrolments_of(c, customer) if plans else ():
        plan = plans.get(e.campaign_id)  # type: ignore[attr-defined]
        if plan is None or e.entered_at > at:
            continue
        if plan.goal and plan.goal.intent and plan.goal.intent == record.intent:
            goal_reached.append(e.id)
            if plan.exits_on("goal"):
                goal_exit.append(e.id)
                continue
        if plan.exits_on("replied"):
            replied.append(e.id)
    if goal_reached:
        await (
            Enrolment.filter(id__in=goal_reached, goal_reached_at=None)
            .using_db(c)
            .update(goal_reached_at=at)
        )
        wrote = True
    await exit_enrolments(c, ids=goal_exit, reason="goal", at=at)
    await exit_enrolments(c, ids=replied, reason="replied", at=at)
    wrote = wrote or bool(goal_exit or replied)
    if record.intent and record.advisor:
        # Intent triggers: enrol with the advisor of this conversation.
        for plan in plans.values():
            trig = plan.trigger or {}
            if trig.get("kind") == "intent" and trig.get("intent") == record.intent:
                ref = f"intent:{record.source}:{record.msgid}"[:160]
                target = Target(customer, record.advisor, ref, at)
                if triggered is not None:
                    triggered.setdefault(plan.campaign_id, []).append(target)
                    continue
                await _enrol_filtered(c, plan, [target])
                wrote = True
    return wrote


# ---------------------------------------------------------------- tag triggers (job)


@dataclass
class TagCursor:
    """Where the tag scan stands: history ids below ``settled`` were all seen committed."""

    settled: int = 0


#: A history row younger than this may belong to a transaction still open with a
#: lower id than rows already committed (PostgreSQL allocates ids before commit): the
#: scan looks at it again until it is this old, and enrolment is idempotent anyway.
SETTLE = timedelta(minutes=2)


async def run_tag_triggers(
    cursor: TagCursor, *, now: datetime | None = None, limit: int = 5000
) -> int:
    """Tag added/removed since the cursor: enrol, exit, goal.  Returns rows looked at."""
    now = now or datetime.now(UTC)
    c = store.conn()
    rows = await (
        CustomerTagHistory.filter(id__gt=cursor.settled).order_by("id").limit(limit).using_db(c)
    )
    if not rows:
        return 0
    plans = await active_plans(c)
    tags = {
        t.id: t.name for t in await Tag.filter(id__in=sorted({r.tag_id for r in rows})).using_db(c)
    }
    customer_ids = sorted({r.customer_id for r in rows})
    ext_rows = await c.execute_query_dict(
        "SELECT id, external_userid FROM bot_customer "  # noqa: S608 - placeholders only
        f"WHERE id IN ({store.placeholders(c, len(customer_ids))})",
        customer_ids,
    )
    ext_of = {int(r["id"]): str(r["external_userid"]) for r in ext_rows}
    advisors = await store.primary_advisors(c, customers=list(ext_of.values()))
    async with in_transaction() as tx:
        for r in rows:
            customer = ext_of.get(r.customer_id)
            tag = tags.get(r.tag_id)
            if customer is None or tag is None:
                continue
            kind = "tag_added" if r.action == "add" else "tag_removed"
            await _tag_changed(tx, plans, customer, advisors.get(customer), tag, kind, r)
    settled = cursor.settled
    for r in rows:
        if r.created_at <= now - SETTLE:
            settled = r.id
        else:
            break
    cursor.settled = settled
    return len(rows) if len(rows) >= limit or settled == rows[-1].id else 0


async def _tag_changed(
    c: BaseDBAsyncClient,
    plans: Sequence[VersionPlan],
    customer: str,
    advisor: str | None,
    tag: str,
    kind: str,
    row: CustomerTagHistory,
) -> None:
    at = row.at
    enrolments = await _active_enrolments(c, customer=customer)
    by_campaign: dict[int, list[Enrolment]] = {}
    for e in enrolments:
        by_campaign.setdefault(e.campaign_id, []).append(e)  # type: ignore[attr-defined]
    for plan in plans:
        mine = [e for e in by_campaign.get(plan.campaign_id, []) if e.entered_at <= at]
        if mine:
            leave = any(x.tag == tag for x in plan.exits_on(kind))
            if kind == "tag_added" and plan.goal and plan.goal.tag == tag:
                await (
                    Enrolment.filter(id__in=[e.id for e in mine], goal_reached_at=None)
                    .using_db(c)
                    .update(goal_reached_at=at)
                )
                leave = leave or bool(plan.exits_on("goal"))
            if leave:
                reason = (
                    "goal" if plan.goal and plan.goal.tag == tag and kind == "tag_added" else kind
                )
                await exit_enrolments(c, ids=[e.id for e in mine], reason=reason, at=at)
        trig = plan.trigger or {}
        if trig.get("kind") == kind and trig.get("tag") == tag and advisor:
            ref = f"{kind}:{row.id}"
            await _enrol_filtered(c, plan, [Target(customer, advisor, ref, at)])


# ---------------------------------------------------------------- date triggers (job)


def _today(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


async def run_date_triggers(*, now: datetime | None = None, batch: int = 2000) -> int:
    """Attribute dates and inactivity, for today (Beijing); idempotent per day."""
    now = now or datetime.now(UTC)
    today = _today(now)
    total = 0
    c = store.conn()
    for plan in await active_plans(c):
        trig = plan.trigger or {}
        kind = trig.get("kind")
        if kind == "attribute_date":
            target_day = today + timedelta(days=int(trig.get("days_before") or 0))
            attr = str(trig.get("attribute"))
            ref = f"date:{attr}:{target_day.isoformat()}"
            total += await _enrol_stream(
                plan, _date_query(attr, target_day), ref=ref, at=now, batch=batch
            )
        elif kind == "inactivity":
            days = int(trig.get("days") or 30)
            ref = f"inactive:{days}d:{today.isoformat()}"
            total += await _enrol_stream(
                plan, _expr_query(f"inactive:{days}d"), ref=ref, at=now, batch=batch
            )
    return total


QueryFn = Callable[[BaseDBAsyncClient], Any]


def _date_query(attr: str, day: date) -> QueryFn:
    async def build(c: BaseDBAsyncClient) -> tuple[str, list[Any]]:
        if attr == "birthday":
            # Yearly: the month and day match (29 February counts on 28 February).
            md = day.strftime("%m-%d")
            wanted = [md, "02-29"] if md == "02-28" else [md]
            col = (
                "substr(c.attributes->>'birthday', 6, 5)"
                if store.dialect(c) == "postgres"
                else "substr(json_extract(c.attributes, '$.birthday'), 6, 5)"
            )
            return f"{col} IN ({store.placeholders(c, len(wanted))})", wanted
        expr = (
            f'holding.maturity_date = "{day.isoformat()}"'
            if attr == "holding.maturity_date"
            else f'attr.maturity_date = "{day.isoformat()}"'
        )
        node = tagging_audience.parse(expr)
        return await tagging_audience.where_clause(node, conn=c)

    return build


def _expr_query(expr: str) -> QueryFn:
    async def build(c: BaseDBAsyncClient) -> tuple[str, list[Any]]:
        return await tagging_audience.where_clause(tagging_audience.parse(expr), conn=c)

    return build


async def stream_customers(
    clause: str, params: list[Any], *, batch: int, c: BaseDBAsyncClient | None = None
) -> AsyncIterator[list[tuple[str, str]]]:
    """``(external_userid, advisor)`` of customers matching ``clause``, by id, in batches.

    Keyset pagination (``c.id > last``) keeps each page an index range scan however far
    the stream has gone; customers without an active advisor are left out.
    """
    c = c or store.conn()
    last = 0
    pg = store.dialect(c) == "postgres"
    while True:
        n = len(params)
        after, limit = (f"${n + 1}", f"${n + 2}") if pg else ("?", "?")
        rows = await c.execute_query_dict(
            # The clause is built from the grammar's fixed fragments and placeholders.
            "SELECT c.id, c.external_userid, ("  # noqa: S608
            " SELECT a.userid FROM bot_follow_relation f JOIN bot_advisor a ON a.id = f.advisor_id"
            " WHERE f.customer_id = c.id AND f.status = 'active' ORDER BY f.id DESC LIMIT 1"
            f") AS advisor FROM bot_customer c WHERE ({clause}) AND c.id > {after} "
            f"ORDER BY c.id LIMIT {limit}",
            [*params, last, batch],
        )
        if not rows:
            return
        last = int(rows[-1]["id"])
        yield [(str(r["external_userid"]), str(r["advisor"])) for r in rows if r["advisor"]]
        if len(rows) < batch:
            return


async def _enrol_stream(
    plan: VersionPlan,
    query: QueryFn,
    *,
    ref: str,
    at: datetime,
    batch: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    c = store.conn()
    clause, params = await query(c)
    if plan.audience:
        aud_clause, aud_params = await tagging_audience.where_clause(
            tagging_audience.parse(plan.audience), conn=c
        )
        # Renumber the audience's placeholders after the query's on PostgreSQL.
        if store.dialect(c) == "postgres":
            shift = len(params)
            aud_clause = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + shift}", aud_clause)
        clause, params = f"({clause}) AND ({aud_clause})", [*params, *aud_params]
    total = 0
    async for page in stream_customers(clause, params, batch=batch, c=c):
        async with in_transaction() as tx:
            made = await enrol(
                tx, plan, [Target(ext, adv, ref, at) for ext, adv in page], touch_ids=False
            )
        total += len(made)
        if progress is not None:
            progress(len(page))
    return total


async def enrol_audience(
    plan: VersionPlan,
    *,
    ref: str,
    at: datetime | None = None,
    expr: str | None = None,
    batch: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Enrol a snapshot of an audience (the version's, or ``expr``), streamed.

    ``ref`` names the snapshot (``manual:<operator>:<n>``): running it again after a
    crash enrols only those the first run had not reached.
    """
    at = at or datetime.now(UTC)
    expression = expr or plan.audience
    if not expression:
        raise ValueError("an audience snapshot needs an audience expression")
    unfiltered = VersionPlan(**{**plan.__dict__, "audience": None, "_dues": plan._dues})
    return await _enrol_stream(
        unfiltered, _expr_query(expression), ref=ref, at=at, batch=batch, progress=progress
    )


async def enrol_list(
    plan: VersionPlan, *, customers: Sequence[str], ref: str, at: datetime | None = None
) -> int:
    """Enrol the customers of an operator's list (unknown ones and those without an
    active advisor are left out), in batches."""
    at = at or datetime.now(UTC)
    total = 0
    names = list(dict.fromkeys(customers))
    for i in range(0, len(names), 2000):
        part = names[i : i + 2000]
        advisors = await store.primary_advisors(store.conn(), customers=part)
        async with in_transaction() as tx:
            made = await enrol(
                tx, plan, [Target(e, advisors[e], ref, at) for e in part if e in advisors]
            )
        total += len(made)
    return total


async def run_audience_snapshots(done: set[int], *, now: datetime | None = None) -> int:
    """Enrol the audience of each running audience-only version once (a campaign with
    no trigger: its audience at activation is the list).  ``done`` remembers the
    versions this process has enrolled; after a restart a rerun finds everyone enrolled
    already (the trigger ref is the version's) and adds no one twice.
    """
    total = 0
    for plan in await active_plans(store.conn()):
        if plan.trigger is not None or not plan.audience or plan.version_id in done:
            continue
        total += await enrol_audience(plan, ref=f"audience:v{plan.version_id}", at=now)
        done.add(plan.version_id)
    return total
