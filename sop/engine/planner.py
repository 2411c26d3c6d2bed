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
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from sop.engine import store
from sop.engine.holidays import HolidayCalendarMissing
from sop.engine.specs import ExitSpec, GoalSpec, check_exits, check_goal, timing_of
from sop.engine.timing import StepTiming, due_at
from sop.models import (
    Anchor,
    Campaign,
    CampaignStatus,
    CampaignStep,
    CampaignVersion,
    Delivery,
    Enrolment,
    EnrolmentState,
    OptOut,
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
                timing=timing_of(s),
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
    version = await CampaignVersion.get(id=version_id).using_db(c)
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


async def _eligible(
    c: BaseDBAsyncClient, plan: VersionPlan, targets: Sequence[Target]
) -> list[Target]:
    customers = sorted({t.customer for t in targets})
    opted: set[str] = set()
    blocked: set[str] = set()
    for i in range(0, len(customers), 900):
        part = customers[i : i + 900]
        opted |= set(
            await OptOut.filter(customer__in=part).using_db(c).values_list("customer", flat=True)
        )
        if plan.reentry == Reentry.ALWAYS:
            continue
        q = Enrolment.filter(campaign_id=plan.campaign_id, customer__in=part)
        if plan.reentry == Reentry.AFTER_EXIT:
            q = q.filter(state=EnrolmentState.ACTIVE)
        blocked |= set(await q.using_db(c).values_list("customer", flat=True))
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
) -> list[tuple[int, Target, list[int]]]:
    """Enrol ``targets`` (re-entry policy, opt-outs) and plan their touches.

    Returns ``(enrolment id, target, touch ids by step order)`` for the enrolments made
    now; those the policy refused or that existed already are left out.
    ``touch_state`` overrides the first state of a step's touch (``step id → state``),
    e.g. a welcome message handed to the outbox in the same transaction.
    """
    if not targets or not plan.steps:
        return []
    eligible = await _eligible(c, plan, targets)
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
    made = await store.insert_rows(
        c,
        Enrolment,
        rows,
        conflict=("campaign_id", "customer", "trigger_ref"),
        returning=("id", "customer", "trigger_ref"),
    )
    by_key = {(t.customer, t.trigger_ref[:160]): t for t in eligible}
    touch_rows: list[dict[str, Any]] = []
    enrolled: list[tuple[int, Target]] = []
    for r in made:
        t = by_key[(str(r["customer"]), str(r["trigger_ref"]))]
        enrolment_id = int(r["id"])
        enrolled.append((enrolment_id, t))
        for step, (due, reason) in zip(plan.steps, plan_dues(plan, t.entered_at), strict=True):
            touch_rows.append(
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
            )
    touch_rows.sort(key=lambda r: (r["enrolment_id"], r["step_id"]))
    inserted = await store.insert_rows(
        c,
        Touch,
        touch_rows,
        conflict=("enrolment_id", "step_id"),
        returning=("id", "enrolment_id", "step_id"),
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
