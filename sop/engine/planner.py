"""Enrolments and their touches, written in bulk and idempotently.

An enrolment is unique per (campaign, customer, trigger_ref) and a touch per
(enrolment, step) (migrations 0001/0002): planning the same thing twice — a
redelivered event, a job rerun after a crash, an audience snapshot restarted half
way — inserts nothing the second time.  Everything here runs in the caller's
transaction, so an enrolment never exists without its touches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient

from sop.engine import store
from sop.engine.holidays import HolidayCalendarMissing
from sop.engine.specs import ExitSpec, GoalSpec, check_exits, check_goal, timing_of
from sop.engine.timing import SHANGHAI, StepTiming, due_at, zone
from sop.models import (
    Anchor,
    Campaign,
    CampaignStatus,
    CampaignStep,
    CampaignVersion,
    Delivery,
    Enrolment,
    EnrolmentState,
    Reentry,
    Touch,
    TouchState,
)

log = logging.getLogger(__name__)

__all__ = [
    "CALENDAR_MISSING",
    "PlannedStep",
    "Target",
    "VersionPlan",
    "active_plans",
    "enrol",
    "load_plan",
    "plan_dues",
]

#: A touch planned while the holiday calendar lacked its year: re-resolved when due.
CALENDAR_MISSING = "calendar_missing"


@dataclass(frozen=True)
class PlannedStep:
    id: int
    position: int
    anchor: Anchor
    timing: StepTiming
    delivery: Delivery
    content: dict[str, Any]


@dataclass(frozen=True)
class VersionPlan:
    """What the engine needs of one campaign version, read once per batch."""

    campaign_id: int
    campaign_status: CampaignStatus
    version_id: int
    reentry: Reentry
    trigger: dict[str, Any] | None
    audience: str | None
    steps: tuple[PlannedStep, ...]
    exits: tuple[ExitSpec, ...] = ()
    goal: GoalSpec | None = None
    product: dict[str, Any] | None = None
    _dues: dict[datetime, list[tuple[datetime, str | None]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def exits_on(self, kind: str) -> list[ExitSpec]:
        return [e for e in self.exits if e.kind == kind]


def _zone_of(version: CampaignVersion) -> ZoneInfo:
    """The version's customer-local zone; one the zone database no longer knows (checked
    at save, so only after a system change) falls back to Asia/Shanghai, logged."""
    try:
        return zone(version.timezone)
    except ValueError:
        log.warning("unknown time zone", extra={"version_id": version.id})
        return SHANGHAI


def _plan_of(
    campaign: Campaign, version: CampaignVersion, steps: list[CampaignStep]
) -> VersionPlan:
    try:
        exits = tuple(check_exits(version.exit_conditions))
    except ValueError:
        log.warning("unreadable exit conditions", extra={"version_id": version.id})
        exits = ()
    try:
        goal = check_goal(version.goal)
    except ValueError:
        goal = None
    return VersionPlan(
        campaign_id=campaign.id,
        campaign_status=CampaignStatus(campaign.status),
        version_id=version.id,
        reentry=Reentry(version.reentry),
        trigger=dict(version.trigger) if version.trigger else None,
        audience=version.audience or None,
        steps=tuple(
            PlannedStep(
                id=s.id,
                position=s.position,
                anchor=Anchor(s.anchor),
                timing=timing_of(s, tz=_zone_of(version)),
                delivery=Delivery(s.delivery),
                content=dict(s.content or {}),
            )
            for s in sorted(steps, key=lambda s: s.position)
        ),
        exits=exits,
        goal=goal,
        product=dict(version.product) if version.product else None,
    )


async def load_plan(c: BaseDBAsyncClient, *, version_id: int) -> VersionPlan:
    version = await CampaignVersion.get(id=version_id, using_db=c)
    campaign = await Campaign.get(id=version.campaign_id).using_db(c)  # type: ignore[attr-defined]
    steps = await CampaignStep.filter(version_id=version.id).using_db(c)
    return _plan_of(campaign, version, list(steps))


async def active_plans(c: BaseDBAsyncClient | None = None) -> list[VersionPlan]:
    """The current version of every active campaign: what triggers enrol into."""
    c = c or store.conn()
    campaigns = await Campaign.filter(status=CampaignStatus.ACTIVE).using_db(c)
    if not campaigns:
        return []
    by_id = {x.id: x for x in campaigns}
    versions = await CampaignVersion.filter(campaign_id__in=list(by_id), version__gt=0).using_db(c)
    current = [v for v in versions if v.version == by_id[v.campaign_id].current_version]  # type: ignore[attr-defined]
    steps = await CampaignStep.filter(version_id__in=[v.id for v in current]).using_db(c)
    plans = []
    for v in current:
        mine = [s for s in steps if s.version_id == v.id]  # type: ignore[attr-defined]
        plans.append(_plan_of(by_id[v.campaign_id], v, mine))  # type: ignore[attr-defined]
    return plans


def plan_dues(plan: VersionPlan, entered_at: datetime) -> list[tuple[datetime, str | None]]:
    """Each step's due time (and a reason when it could not be fully resolved).

    A step anchored on the previous one counts from that one's due time.  Enrolments
    entered at the same instant (an audience snapshot) share one computation.
    """
    cached = plan._dues.get(entered_at)
    if cached is not None:
        return cached
    out: list[tuple[datetime, str | None]] = []
    previous = entered_at
    for step in plan.steps:
        anchor = entered_at if step.anchor == Anchor.ENTRY else previous
        try:
            due, reason = due_at(anchor, step.timing), None
        except HolidayCalendarMissing:
            # Never guessed: planned without the holiday rule and resolved again when
            # due (by then the calendar may have been upgraded), else skipped.
            relaxed = StepTiming(**{**step.timing.__dict__, "skip_holidays": False})
            due, reason = due_at(anchor, relaxed), CALENDAR_MISSING
        out.append((due, reason))
        previous = due
    if len(plan._dues) > 10_000:
        plan._dues.clear()
    plan._dues[entered_at] = out
    return out


@dataclass(frozen=True)
class Target:
    """Someone a trigger names: the customer, the advisor who will deliver, why, when."""

    customer: str
    advisor: str
    trigger_ref: str
    entered_at: datetime


_CHUNK = 5000
_ENROLMENT_COLUMNS = (
    "campaign_id",
    "version_id",
    "customer",
    "advisor",
    "entered_at",
    "trigger_ref",
    "state",
    "updated_at",
)
_TOUCH_COLUMNS = (
    "enrolment_id",
    "step_id",
    "version_id",
    "campaign_id",
    "customer",
    "advisor",
    "due_at",
    "state",
    "reason",
    "attempts",
    "updated_at",
)


async def _existing(
    c: BaseDBAsyncClient, plan: VersionPlan, customers: Sequence[str]
) -> list[tuple[int, str, str, str]]:
    """``(id, customer, trigger_ref, state)`` of the campaign's enrolments of ``customers``."""
    out: list[tuple[int, str, str, str]] = []
    for i in range(0, len(customers), _CHUNK):
        part = list(customers[i : i + _CHUNK])
        rows = await c.execute_query_dict(
            "SELECT id, customer, trigger_ref, state FROM sop_enrolment "  # noqa: S608 - placeholders only
            f"WHERE campaign_id = {store.placeholders(c, 1)} "
            f"AND customer IN ({store.placeholders(c, len(part), start=1)})",
            [plan.campaign_id, *part],
        )
        out += [
            (int(r["id"]), str(r["customer"]), str(r["trigger_ref"]), str(r["state"])) for r in rows
        ]
    return out


async def _opted_out(c: BaseDBAsyncClient, customers: Sequence[str]) -> set[str]:
    opted: set[str] = set()
    for i in range(0, len(customers), _CHUNK):
        part = list(customers[i : i + _CHUNK])
        rows = await c.execute_query_dict(
            "SELECT customer FROM sop_opt_out "  # noqa: S608 - placeholders only
            f"WHERE customer IN ({store.placeholders(c, len(part))})",
            part,
        )
        opted |= {str(r["customer"]) for r in rows}
    return opted


def _eligible(
    plan: VersionPlan,
    targets: Sequence[Target],
    existing: Sequence[tuple[int, str, str, str]],
    opted: set[str],
) -> list[Target]:
    """Targets the re-entry policy and opt-outs let in (one per customer per batch)."""
    if plan.reentry == Reentry.NEVER:
        blocked = {e[1] for e in existing}
    elif plan.reentry == Reentry.AFTER_EXIT:
        blocked = {e[1] for e in existing if e[3] == EnrolmentState.ACTIVE}
    else:
        blocked = set()
    seen: set[str] = set()
    out = []
    for t in targets:
        if t.customer in opted or t.customer in blocked:
            continue
        if plan.reentry != Reentry.ALWAYS and t.customer in seen:
            continue  # one enrolment per customer per batch unless re-entry is always
        seen.add(t.customer)
        out.append(t)
    return out


async def enrol(
    c: BaseDBAsyncClient,
    plan: VersionPlan,
    targets: Sequence[Target],
    *,
    touch_state: dict[int, TouchState] | None = None,
    touch_ids: bool = True,
) -> list[tuple[int, Target, list[int]]]:
    """Enrol ``targets`` (re-entry policy, opt-outs) and plan their touches.

    Returns ``(enrolment id, target, touch ids by step order)`` for the enrolments made
    now; those the policy refused or that existed already are left out.
    ``touch_state`` overrides the first state of a step's touch (``step id → state``),
    e.g. a welcome message handed to the outbox in the same transaction.
    """
    if not targets or not plan.steps:
        return []
    customers = sorted({t.customer for t in targets})
    before = await _existing(c, plan, customers)
    eligible = _eligible(plan, targets, before, await _opted_out(c, customers))
    if not eligible:
        return []
    eligible.sort(key=lambda t: (t.customer, t.trigger_ref))
    rows = [
        {
            "campaign_id": plan.campaign_id,
            "version_id": plan.version_id,
            "customer": t.customer,
            "advisor": t.advisor,
            "entered_at": t.entered_at,
            "trigger_ref": t.trigger_ref[:160],
            "state": EnrolmentState.ACTIVE,
        }
        for t in eligible
    ]
    ev = store.DbValues(Enrolment)
    now = datetime.now(UTC)
    await store.insert_plain(
        c,
        "sop_enrolment",
        _ENROLMENT_COLUMNS,
        [
            (
                r["campaign_id"],
                r["version_id"],
                r["customer"],
                r["advisor"],
                ev("entered_at", r["entered_at"]),
                r["trigger_ref"],
                EnrolmentState.ACTIVE.value,
                ev("updated_at", now),
            )
            for r in rows
        ],
        conflict=("campaign_id", "customer", "trigger_ref"),
    )
    # Read back rather than RETURNING: the driver's executemany is several times faster
    # than one multi-row statement, and the unique index answers the read.  What
    # existed before is not ours (a trigger seen twice), even if a concurrent
    # transaction inserted it just now.
    known = {e[0] for e in before}
    wanted = {(t.customer, t.trigger_ref[:160]) for t in eligible}
    made: list[dict[str, Any]] = [
        {"id": e[0], "customer": e[1], "trigger_ref": e[2]}
        for e in await _existing(c, plan, sorted({t.customer for t in eligible}))
        if e[0] not in known and (e[1], e[2]) in wanted
    ]
    by_key = {(t.customer, t.trigger_ref[:160]): t for t in eligible}
    enrolled: list[tuple[int, Target]] = []
    for r in sorted(made, key=lambda r: int(r["id"])):
        t = by_key[(str(r["customer"]), str(r["trigger_ref"]))]
        enrolled.append((int(r["id"]), t))
    inserted: list[dict[str, Any]] = []
    if touch_ids:
        touch_rows = [
            {
                "enrolment_id": enrolment_id,
                "step_id": step.id,
                "version_id": plan.version_id,
                "campaign_id": plan.campaign_id,
                "customer": t.customer,
                "advisor": t.advisor,
                "due_at": due,
                "state": (touch_state or {}).get(step.id, TouchState.PLANNED),
                "reason": reason,
            }
            for enrolment_id, t in enrolled
            for step, (due, reason) in zip(plan.steps, plan_dues(plan, t.entered_at), strict=True)
        ]
        inserted = await store.insert_rows(
            c,
            Touch,
            touch_rows,
            conflict=("enrolment_id", "step_id"),
            returning=("id", "enrolment_id", "step_id"),
        )
    else:
        # The bulk path: rows straight in the database's form, in (enrolment, step) order.
        tv = store.DbValues(Touch)
        stamp = tv("updated_at", now)
        states = {
            s.id: TouchState((touch_state or {}).get(s.id, TouchState.PLANNED)).value
            for s in plan.steps
        }
        rows_db: list[tuple[Any, ...]] = []
        for enrolment_id, t in enrolled:
            for step, (due, reason) in zip(plan.steps, plan_dues(plan, t.entered_at), strict=True):
                rows_db.append(
                    (
                        enrolment_id,
                        step.id,
                        plan.version_id,
                        plan.campaign_id,
                        t.customer,
                        t.advisor,
                        tv("due_at", due),
                        states[step.id],
                        reason,
                        0,
                        stamp,
                    )
                )
        await store.insert_plain(
            c, "sop_touch", _TOUCH_COLUMNS, rows_db, conflict=("enrolment_id", "step_id")
        )
    by_enrolment: dict[int, dict[int, int]] = {}
    for r in inserted:
        by_enrolment.setdefault(int(r["enrolment_id"]), {})[int(r["step_id"])] = int(r["id"])
    return [
        (eid, t, [by_enrolment.get(eid, {}).get(s.id, 0) for s in plan.steps])
        for eid, t in enrolled
    ]


def late_after(delivery: Delivery, default: timedelta) -> timedelta:
    """How long after its due time a touch may still go out."""
    if delivery == Delivery.WELCOME:
        return timedelta(seconds=20)  # the WelcomeCode's life (41051 after)
    return default


async def adopt_version(c: BaseDBAsyncClient, *, campaign_id: int, version_id: int) -> int:
    """Move the campaign's touches not yet due onto ``version_id`` (call it in the
    transaction that activates the version).

    A touch keeps the version that sent it; one still planned belongs to the new
    version from now on: step *n* of the old version becomes step *n* of the new one,
    due again by the new timing (never earlier than now), and a step the new version
    dropped is skipped as ``superseded``.  Steps the new version adds are planned for
    every active enrolment.  Returns the touches moved or added.
    """
    plan = await load_plan(c, version_id=version_id)
    by_position = {s.position: s for s in plan.steps}
    now = datetime.now(UTC)
    old = (
        await Touch.filter(
            campaign_id=campaign_id,
            state__in=(TouchState.PLANNED, TouchState.DUE),
            version_id__not=version_id,
        )
        .using_db(c)
        .values("id", "step_id", "enrolment_id")
    )
    changed = 0
    if old:
        positions = dict(
            await CampaignStep.filter(id__in=sorted({r["step_id"] for r in old}))
            .using_db(c)
            .values_list("id", "position")
        )
        entries = dict(
            await Enrolment.filter(id__in=sorted({r["enrolment_id"] for r in old}))
            .using_db(c)
            .values_list("id", "entered_at")
        )
        dropped: list[int] = []
        tv = store.DbValues(Touch)
        moves: list[tuple[Any, ...]] = []
        for r in old:
            step = by_position.get(int(positions[r["step_id"]]))
            if step is None:
                dropped.append(int(r["id"]))
                continue
            due, reason = plan_dues(plan, entries[r["enrolment_id"]])[plan.steps.index(step)]
            moves.append((step.id, version_id, tv("due_at", max(due, now)), reason, int(r["id"])))
        if dropped:
            await (
                Touch.filter(id__in=dropped)
                .using_db(c)
                .update(state=TouchState.SKIPPED, reason="superseded")
            )
        if moves:
            p = store.placeholders(c, 5).split(", ")
            await c.execute_many(
                f"UPDATE sop_touch SET step_id = {p[0]}, version_id = {p[1]}, "  # noqa: S608 - placeholders only
                f"due_at = {p[2]}, reason = {p[3]} WHERE id = {p[4]}",
                [list(m) for m in moves],
            )
        changed = len(old)
    # New steps for enrolments already running (a touch per step, as for newcomers).
    active = (
        await Enrolment.filter(campaign_id=campaign_id, state=EnrolmentState.ACTIVE)
        .using_db(c)
        .values("id", "customer", "advisor", "entered_at")
    )
    have = {
        (int(e), int(s))
        for e, s in await Touch.filter(campaign_id=campaign_id)
        .using_db(c)
        .values_list("enrolment_id", "step_id")
    }
    have_positions: dict[int, set[int]] = {}
    step_positions = dict(
        await CampaignStep.filter(id__in=sorted({s for _, s in have}) or [0])
        .using_db(c)
        .values_list("id", "position")
    )
    for enrolment_id, step_id in have:
        have_positions.setdefault(enrolment_id, set()).add(int(step_positions.get(step_id, 0)))
    rows = []
    for e in active:
        for step, (due, reason) in zip(plan.steps, plan_dues(plan, e["entered_at"]), strict=True):
            if step.position in have_positions.get(int(e["id"]), set()):
                continue
            rows.append(
                {
                    "enrolment_id": int(e["id"]),
                    "step_id": step.id,
                    "version_id": version_id,
                    "campaign_id": campaign_id,
                    "customer": e["customer"],
                    "advisor": e["advisor"],
                    "due_at": max(due, now),
                    "state": TouchState.PLANNED,
                    "reason": reason,
                }
            )
    if rows:
        rows.sort(key=lambda r: (r["enrolment_id"], r["step_id"]))
        await store.insert_rows(c, Touch, rows, conflict=("enrolment_id", "step_id"))
    return changed + len(rows)
