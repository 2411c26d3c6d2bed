"""From due touches to outbox rows, and back: the scheduler tick, the outbox's
before-send check for ``sop.*`` rows and their on-settled callback.

The tick claims due touches in batches — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several schedulers share the work and never take the same row; one scheduler on
SQLite, whose writers are serialised anyway — and, in that batch's transaction,
checks them, groups them and enqueues the WeCom writes (``bot.outbox``).  A crash
before the commit leaves everything as it was; after it, every touch names its
outbox row, so a rerun finds nothing to do twice.

How each delivery mode becomes WeCom calls:

- ``reminder``: one app message per advisor listing up to ``digest_max_items`` due
  touches with a deep link into the sidebar — an advisor with 300 due touches gets
  20 messages, not 300 — paced within SOP's share of the member's caps.
- ``mass_send``: one ``add_msg_template`` task per (advisor, step, text): customers
  whose text is the same share a task the advisor confirms once.  Each customer's
  mass send of the day is reserved for the touch (``quotas.MassSendAllowance``).
- ``welcome``: queued by the pipeline hook the moment the contact is added (the
  WelcomeCode lives 20 s); here only a welcome that can no longer go is skipped.

The before-send check re-reads everything right before the call; what now fails is
skipped with its reason, and a digest or task that lost members is cancelled and
rebuilt from the touches still good (``rebuild``) — never sent with stale content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import outbox
from bot.outbox import PendingWrite, SendAs, Settled
from sop.engine import media, store
from sop.engine.checks import ContentChecker, check_content, check_suitability
from sop.engine.holidays import HolidayCalendarMissing
from sop.engine.planner import CALENDAR_MISSING, VersionPlan, late_after, load_plan
from sop.engine.quotas import Quotas
from sop.engine.specs import content_text, missing_variables, render
from sop.engine.timing import SHANGHAI, due_at, is_late, next_open
from sop.models import (
    Campaign,
    CampaignStatus,
    CampaignStep,
    Delivery,
    Enrolment,
    EnrolmentState,
    OptOut,
    Touch,
    TouchState,
)

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineConfig"]

#: WeCom's text message limit (message/send): 2,048 bytes.
TEXT_MAX_BYTES = 2048
#: add_msg_template takes at most 10,000 customers per task.
MASS_MAX_CUSTOMERS = 10_000
#: Cancel reasons after which the touches are planned again rather than skipped.
REBUILD = "rebuild"
RETIME = ("member_quota", "quiet_hours")


@dataclass(frozen=True)
class EngineConfig:
    batch_size: int = 500
    late_after: timedelta = timedelta(hours=6)
    digest_max_items: int = 15
    # Advisors whose due touches one batch takes (all of theirs, up to batch_size).
    advisors_per_batch: int = 20
    public_base_url: str = ""
    agent_id: int = 0


@dataclass
class _Batch:
    """One claimed batch and what its checks read, loaded in bulk."""

    touches: list[Touch]
    plans: dict[int, VersionPlan]
    enrolment_state: dict[int, str]
    opted: set[str]
    relations: set[tuple[str, str]]
    facts: dict[str, tuple[str, dict[str, Any]]]
    advisor_names: dict[str, str]
    steps: dict[int, Any] = field(default_factory=dict)
    #: The content check's answer per step, read once for the batch.
    content_reasons: dict[int, str | None] = field(default_factory=dict)


class Engine:
    """The scheduler's work and the outbox policies, with the process's resources."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        quotas: Quotas,
        checker: ContentChecker | None = None,
        media_cache: media.MediaCache | None = None,
    ) -> None:
        self.config = config
        self.quotas = quotas
        self.checker = checker or ContentChecker()
        # Uploads a step's image, file or cover right before the send (None: no WeCom
        # client in this process; rows that need media wait, retried by the outbox).
        self.media = media_cache
        self._plans: dict[int, VersionPlan] = {}

    # ------------------------------------------------------------ loading

    async def _plan(self, c: BaseDBAsyncClient, version_id: int) -> VersionPlan:
        plan = self._plans.get(version_id)
        if plan is None:
            plan = await load_plan(c, version_id=version_id)
            self._plans[version_id] = plan
        return plan

    async def _load(
        self,
        c: BaseDBAsyncClient,
        touches: Sequence[Any],
        *,
        rendering: bool = True,
        known: tuple[dict[int, str], set[str]] | None = None,
    ) -> _Batch:
        """What the checks read, in bulk; ``rendering=False`` (the re-check before a
        send) skips the names only the texts need, and attributes when no product is
        named (suitability is their only other reader).  ``known``: enrolment states
        and opted-out customers already read with the touches (:func:`_sending`)."""
        plans = {}
        for vid in sorted({t.version_id for t in touches}):
            plans[vid] = await self._plan(c, vid)
        customers = sorted({t.customer for t in touches})
        if known is not None:
            states, opted = known
        else:
            enrolment_ids = sorted({t.enrolment_id for t in touches})
            states = {}
            for i in range(0, len(enrolment_ids), 900):
                for eid, st in await (
                    Enrolment.filter(id__in=enrolment_ids[i : i + 900])
                    .using_db(c)
                    .values_list("id", "state")
                ):
                    states[int(eid)] = str(st)
            opted = set()
            for i in range(0, len(customers), 900):
                opted |= {
                    str(x)
                    for x in await OptOut.filter(customer__in=customers[i : i + 900])
                    .using_db(c)
                    .values_list("customer", flat=True)
                }
        pairs = sorted({(t.customer, t.advisor) for t in touches})
        needs_facts = rendering or any(p.product for p in plans.values())
        batch = _Batch(
            touches=list(touches),
            plans=plans,
            enrolment_state=states,
            opted=opted,
            relations=await store.relations_active(c, pairs=pairs),
            facts=await store.customer_facts(c, customers=customers) if needs_facts else {},
            advisor_names=(
                await store.advisor_names(c, userids=sorted({t.advisor for t in touches}))
                if rendering
                else {}
            ),
        )
        for plan in plans.values():
            for s in plan.steps:
                batch.steps[s.id] = s
        return batch

    # ------------------------------------------------------------ checks

    async def _check(self, b: _Batch, t: Touch, *, now: datetime, at_send: bool) -> str | None:
        """Why ``t`` must not go now (a final reason), or None."""
        plan = b.plans[t.version_id]  # type: ignore[attr-defined]
        step = b.steps.get(t.step_id)  # type: ignore[attr-defined]
        if step is None:
            return "step_removed"
        if b.enrolment_state.get(t.enrolment_id) != EnrolmentState.ACTIVE:  # type: ignore[attr-defined]
            return "exited"
        if t.customer in b.opted:
            return "opted_out"
        if (t.customer, t.advisor) not in b.relations:
            return "relation_deleted"
        attrs = b.facts.get(t.customer, ("", {}))[1]
        if reason := check_suitability(plan.product, attrs):
            return reason
        if step.id not in b.content_reasons:
            # Once a step per batch: the same text gets the same answer, and a digest's
            # or a task's touches share their step.
            b.content_reasons[step.id] = await check_content(self.checker, step.content)
        if reason := b.content_reasons[step.id]:
            return reason
        allowance = late_after(step.delivery, self.config.late_after)
        if is_late(t.due_at, now, late_after=allowance):
            return "late"
        if step.delivery == Delivery.WELCOME and not at_send:
            # A welcome is queued by the hook with its code; a planned one has none.
            return "no_welcome_code"
        if not at_send and missing_variables(step.content, self._values(b, t)):
            # No maturity date imported for this customer (say): never a literal
            # {maturity_date} in front of a customer.
            return "missing_variable"
        return None

    def _values(self, b: _Batch, t: Touch) -> dict[str, str]:
        plan = b.plans[t.version_id]  # type: ignore[attr-defined]
        name, attrs = b.facts.get(t.customer, ("", {}))
        return {
            "customer_name": name,
            "advisor_name": b.advisor_names.get(t.advisor, ""),
            "product_name": str((plan.product or {}).get("name") or ""),
            "maturity_date": str(attrs.get("maturity_date") or ""),
        }

    # ------------------------------------------------------------ the tick

    async def tick(self, *, now: datetime | None = None) -> int:
        """One batch of due touches handed on (or skipped, or moved); returns how many."""
        now = now or datetime.now(UTC)
        active = list(
            await Campaign.filter(status=CampaignStatus.ACTIVE).values_list("id", flat=True)
        )
        if not active:
            return 0
        due = Touch.filter(
            state__in=(TouchState.PLANNED, TouchState.DUE),
            due_at__lte=now,
            campaign_id__in=active,
        )
        # The advisors of the oldest due touches, then all their due touches: a batch
        # holds whole advisors, so each gets one digest of many touches rather than a
        # message per touch (touches of one advisor are spread over the whole table).
        oldest = await (
            due.order_by("due_at", "id")
            .limit(self.config.batch_size)
            .values_list("advisor", flat=True)
        )
        advisors = list(dict.fromkeys(str(a) for a in oldest))[: self.config.advisors_per_batch]
        if not advisors:
            return 0
        async with in_transaction() as c:
            q = (
                due.filter(advisor__in=advisors)
                .order_by("advisor", "due_at", "id")
                .limit(self.config.batch_size)
                .using_db(c)
            )
            touches = list(await q)
            if not touches:
                return 0
            b = await self._load(c, touches)
            ready: list[Touch] = []
            skipped: dict[str, list[int]] = defaultdict(list)
            moved: list[tuple[int, datetime, str | None]] = []
            for t in touches:
                step = b.steps.get(t.step_id)  # type: ignore[attr-defined]
                if t.reason == CALENDAR_MISSING and step is not None:
                    retimed = self._resolve_calendar(t, step, now)
                    if retimed is None:
                        skipped["holiday_calendar"].append(t.id)
                        continue
                    if retimed > now:
                        moved.append((t.id, retimed, None))
                        continue
                reason = await self._check(b, t, now=now, at_send=False)
                if reason:
                    skipped[reason].append(t.id)
                    continue
                assert step is not None
                opens = next_open(now, step.timing)
                if opens > now:
                    # Behind schedule into quiet hours (or a day off): wait for the window.
                    moved.append((t.id, opens, None))
                    continue
                ready.append(t)
            for reason, ids in skipped.items():
                await (
                    Touch.filter(id__in=ids)
                    .using_db(c)
                    .update(state=TouchState.SKIPPED, reason=reason[:64])
                )
            for tid, when, why in moved:
                await (
                    Touch.filter(id=tid)
                    .using_db(c)
                    .update(state=TouchState.PLANNED, due_at=when, reason=why)
                )
            handed = await self._hand_over(c, b, ready, now=now)
        log.info(
            "sop tick",
            extra={
                "claimed": len(touches),
                "handed": handed,
                "skipped": sum(len(v) for v in skipped.values()),
                "moved": len(moved),
            },
        )
        # Work done, not rows claimed: touches left waiting for a member's cap do not
        # make the job run again at once (it would spin on them until the minute turns).
        return handed + sum(len(v) for v in skipped.values()) + len(moved)

    def _resolve_calendar(self, t: Touch, step: Any, now: datetime) -> datetime | None:
        try:
            return next_open(t.due_at, step.timing, clock=step.timing.at_time)
        except HolidayCalendarMissing:
            return None

    async def _hand_over(
        self, c: BaseDBAsyncClient, b: _Batch, ready: list[Touch], *, now: datetime
    ) -> int:
        reminders: dict[str, list[Touch]] = defaultdict(list)
        mass: dict[tuple[str, int, str], list[Touch]] = defaultdict(list)
        for t in ready:
            step = b.steps[t.step_id]  # type: ignore[attr-defined]
            if step.delivery == Delivery.REMINDER:
                reminders[t.advisor].append(t)
            elif step.delivery == Delivery.MASS_SEND:
                # Customers who would read the same message (text and attachment
                # titles filled in) share one task.
                values = self._values(b, t)
                text = render(str(step.content.get("text") or ""), values)
                extra = json.dumps(media.attachments(step.content, values), sort_keys=True)
                mass[(t.advisor, step.id, text + "\x00" + extra)].append(t)
        handed = 0
        if reminders:
            handed += await self._digests(c, b, reminders, now=now)
        for (advisor, step_id, key), touches in sorted(
            mass.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1][0].id)
        ):
            text = key.split("\x00", 1)[0]
            handed += await self._mass_task(c, b, advisor, step_id, text, touches, now=now)
        return handed

    # ------------------------------------------------------------ reminders

    def _link(self, t: Touch) -> str:
        base = self.config.public_base_url.rstrip("/")
        return f"{base}/sidebar/?customer={t.customer}&touch={t.id}"

    def _digest_texts(self, b: _Batch, touches: list[Touch]) -> list[tuple[str, list[Touch]]]:
        """Digest messages of at most ``digest_max_items`` lines and 2,048 bytes each."""
        out: list[tuple[str, list[Touch]]] = []
        lines: list[str] = []
        members: list[Touch] = []
        head = "【SOP 待办】以下客户今日需要您跟进："

        def flush() -> None:
            if members:
                total = len(members)
                out.append((head + "\n" + "\n".join(lines) + f"\n共 {total} 项", list(members)))
                lines.clear()
                members.clear()

        for t in sorted(touches, key=lambda t: (t.due_at, t.id)):
            step = b.steps[t.step_id]  # type: ignore[attr-defined]
            name = b.facts.get(t.customer, ("", {}))[0] or "客户"
            body = render(content_text(step.content), self._values(b, t)).replace("\n", " ")
            if len(body) > 60:
                body = body[:59] + "…"
            body += _attachment_note(step.content)
            line = f"{len(members) + 1}. {name}：{body}\n   {self._link(t)}"
            candidate = "\n".join([head, *lines, line, "共 99 项"]).encode()
            if members and (
                len(members) >= self.config.digest_max_items or len(candidate) > TEXT_MAX_BYTES
            ):
                flush()
                line = f"1. {name}：{body}\n   {self._link(t)}"
            lines.append(line)
            members.append(t)
        flush()
        return out

    async def _digests(
        self,
        c: BaseDBAsyncClient,
        b: _Batch,
        by_advisor: Mapping[str, list[Touch]],
        *,
        now: datetime,
    ) -> int:
        """The batch's digests, every advisor's at once: the members' caps read together
        and one plan of minute slots for all, so the batch's transaction (which holds
        SQLite's only writer) waits on Redis twice rather than twice per advisor."""
        ts = now.timestamp()
        advisors = sorted(by_advisor)
        frees = await asyncio.gather(*(self.quotas.member.free(a, now=ts) for a in advisors))
        # (advisor, digests, forwards) kept under each member's free room.
        planned: list[tuple[str, list[tuple[str, list[Touch]]], list[tuple[str, Any]]]] = []
        for advisor, free in zip(advisors, frees, strict=True):
            digests = self._digest_texts(b, by_advisor[advisor])
            # Only as many as the member may receive now; the rest stay due for a later
            # tick.  A step's image, file or link card goes beside its first digest of
            # the day, for the advisor to forward (room kept for it under the cap).
            forwards = self._forwards(b, advisor, [t for _, ms in digests for t in ms], now=now)
            digests = digests[: max(0, free - len(forwards))]
            if not digests:
                continue
            steps = {t.step_id for _, ms in digests for t in ms}  # type: ignore[attr-defined]
            planned.append((advisor, digests, [(k, w) for k, w, sid in forwards if sid in steps]))
        total = sum(len(d) + len(f) for _, d, f in planned)
        if not total:
            return 0
        slots = iter(await self.quotas.pacer.plan("message/send", total, now=ts))
        handed = 0
        for advisor, digests, forwards in planned:
            for text, members in digests:
                at = next(slots)
                first = min(t.id for t in members)
                attempt = max(t.attempts for t in members) + 1
                row = await outbox.enqueue(
                    c,
                    idem_key=f"sop.digest:{first}.{attempt}",
                    write=outbox.app_text(
                        agent_id=self.config.agent_id, touser=advisor, content=text
                    ),
                    origin=f"sop.digest:{first}",
                    not_before=at if at > now else None,
                )
                if row is None:
                    continue
                await (
                    Touch.filter(id__in=[t.id for t in members])
                    .using_db(c)
                    .update(
                        state=TouchState.SENDING, outbox_id=row.id, attempts=attempt, reason=None
                    )
                )
                handed += len(members)
            for key, write in forwards:
                at = next(slots)
                # Once a day per advisor and step, however many digests carry the step.
                await outbox.enqueue(
                    c, idem_key=key, write=write, origin=key, not_before=at if at > now else None
                )
        return handed

    def _forwards(
        self, b: _Batch, advisor: str, touches: list[Touch], *, now: datetime
    ) -> list[tuple[str, outbox.Write, int]]:
        """App messages carrying the attachments of these touches' steps to the advisor."""
        out: list[tuple[str, outbox.Write, int]] = []
        seen: set[int] = set()
        for t in touches:
            step = b.steps[t.step_id]  # type: ignore[attr-defined]
            if step.id in seen:
                continue
            seen.add(step.id)
            body = _forward_body(step.content, self._values(b, t))
            if body is None:
                continue
            key = f"sop.forward:{advisor}.{step.id}.{local_day(now)}"[:96]
            payload = {"touser": advisor, "agentid": self.config.agent_id, **body}
            out.append((key, outbox.Write("message/send", payload), step.id))
        return out

    # ------------------------------------------------------------ mass sends

    async def _mass_task(
        self,
        c: BaseDBAsyncClient,
        b: _Batch,
        advisor: str,
        step_id: int,
        text: str,
        touches: list[Touch],
        *,
        now: datetime,
    ) -> int:
        step = b.steps[step_id]
        kept: list[Touch] = []
        refused: list[int] = []
        for t in touches:
            if await self.quotas.mass.reserve(t.customer, ref=f"touch:{t.id}", now=now.timestamp()):
                kept.append(t)
            else:
                refused.append(t.id)
        if refused:
            await (
                Touch.filter(id__in=refused)
                .using_db(c)
                .update(state=TouchState.SKIPPED, reason="mass_send_allowance")
            )
        handed = 0
        for i in range(0, len(kept), MASS_MAX_CUSTOMERS):
            part = kept[i : i + MASS_MAX_CUSTOMERS]
            (at,) = await self.quotas.pacer.plan(
                "externalcontact/add_msg_template", 1, now=now.timestamp()
            )
            first = min(t.id for t in part)
            attempt = max(t.attempts for t in part) + 1
            write = outbox.add_msg_template(
                sender=advisor,
                text=text or None,
                external_userid=[t.customer for t in part],
                # Media ids are stand-ins, uploaded right before the send (before_send).
                attachments=media.attachments(step.content, self._values(b, part[0])),
            )
            row = await outbox.enqueue(
                c,
                idem_key=f"sop.mass:{first}.{attempt}",
                write=write,
                origin=f"sop.mass:{first}",
                not_before=at if at > now else None,
            )
            if row is None:
                continue
            await (
                Touch.filter(id__in=[t.id for t in part])
                .using_db(c)
                .update(state=TouchState.SENDING, outbox_id=row.id, attempts=attempt, reason=None)
            )
            handed += len(part)
        return handed

    # ------------------------------------------------------------ before send

    async def before_send(self, pending: PendingWrite) -> str | SendAs | None:
        """The outbox's re-check of a ``sop.*`` row, right before WeCom is called."""
        if pending.origin.startswith("sop.remind:"):
            return None  # a nudge for a task already sent: nothing to re-check
        if pending.origin.startswith("sop.forward:"):
            return await self._forward_check(pending)
        now = datetime.now(UTC)
        c = store.conn()
        touches, status, known = await _sending(c, pending.id)
        if not touches:
            return "no_touches"
        if status != CampaignStatus.ACTIVE:
            return "paused" if status == CampaignStatus.PAUSED else "archived"
        b = await self._load(c, touches, rendering=False, known=known)
        failed: dict[str, list[int]] = defaultdict(list)
        for t in touches:
            reason = await self._check(b, t, now=now, at_send=True)
            step = b.steps.get(t.step_id)  # type: ignore[attr-defined]
            if reason is None and step is not None and step.delivery == Delivery.MASS_SEND:
                ok = await self.quotas.mass.reserve(
                    t.customer, ref=f"touch:{t.id}", now=now.timestamp()
                )
                reason = None if ok else "mass_send_allowance"
            if reason:
                failed[reason].append(t.id)
        if failed:
            async with in_transaction() as tx:
                for reason, ids in failed.items():
                    await (
                        Touch.filter(id__in=ids, state=TouchState.SENDING, outbox_id=pending.id)
                        .using_db(tx)
                        .update(state=TouchState.SKIPPED, reason=reason[:64])
                    )
            if len(touches) == 1:
                return next(iter(failed))
            return REBUILD
        first = b.steps.get(touches[0].step_id)  # type: ignore[attr-defined]
        if first is not None and first.delivery != Delivery.WELCOME:
            if next_open(now, first.timing) > now:
                return "quiet_hours"
        body: dict[str, Any] | None = None
        if media.has_uploads(pending.payload):
            try:
                body = await self._resolved(pending.payload)
            except media.MediaInvalid as exc:
                log.warning("sop media refused", extra={"outbox_id": pending.id, "why": str(exc)})
                async with in_transaction() as tx:
                    await (
                        Touch.filter(
                            id__in=[t.id for t in touches],
                            state=TouchState.SENDING,
                            outbox_id=pending.id,
                        )
                        .using_db(tx)
                        .update(state=TouchState.SKIPPED, reason="media_invalid")
                    )
                return "media_invalid"
        if pending.api == "message/send":
            # Logged at the moment of sending: the caps WeCom enforces are on delivery.
            slot = await self.quotas.member.take(
                touches[0].advisor, ref=f"outbox:{pending.id}", now=now.timestamp()
            )
            if not slot.ok:
                return "member_quota"
        return SendAs(body) if body is not None else None

    async def _resolved(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with live media ids (``MediaUnavailable`` makes the outbox retry)."""
        if self.media is None:
            raise media.MediaUnavailable("no WeCom client to upload media with")
        return await self.media.resolve(payload)

    async def _forward_check(self, pending: PendingWrite) -> str | SendAs | None:
        """A step's image, file or link card sent to the advisor beside a digest, to
        forward: its media uploaded now, within the member's app-message cap."""
        now = datetime.now(UTC)
        body = dict(pending.payload)
        if media.has_uploads(body):
            try:
                body = await self._resolved(body)
            except media.MediaInvalid:
                return "media_invalid"
        member = self.quotas.member
        moved = member.keys.key("sop", "forward", "moved", str(pending.id))
        if (raw := await member.redis.get(moved)) is not None:
            # Moved to a later slot by an earlier check cut short: its retry is queued
            # (again, idempotent), never this row as well.
            at = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
            await self._queue_retry(pending, at)
            return "member_quota"
        slot = await member.take(
            str(body.get("touser") or ""), ref=f"outbox:{pending.id}", now=now.timestamp()
        )
        if not slot.ok:
            await self._retry_forward(pending, wait_s=slot.wait_s, now=now, moved=moved)
            return "member_quota"
        return SendAs(body)

    async def _retry_forward(
        self, pending: PendingWrite, *, wait_s: float, now: datetime, moved: str
    ) -> None:
        """The member's cap was full at the send: the attachment is queued again for the
        moment a slot frees, if that is still inside the step's window on the same day
        (the re-check takes the slot then, so the caps hold); otherwise it is dropped for
        the day, logged."""
        # origin: sop.forward:<advisor>.<step id>.<day>
        try:
            step_id = int(pending.origin.rsplit(".", 2)[-2])
        except (IndexError, ValueError):
            step_id = 0
        row = await CampaignStep.get_or_none(id=step_id) if step_id else None
        if row is None:
            return
        plan = await self._plan(store.conn(), int(row.version_id))  # type: ignore[attr-defined]
        step = next((s for s in plan.steps if s.id == step_id), None)
        if step is None:
            return
        at = next_open(now + timedelta(seconds=max(wait_s, 1.0)), step.timing)
        tz = step.timing.tz
        if at.astimezone(tz).date() != now.astimezone(tz).date():
            log.warning(
                "sop forward dropped: member cap full until the window closes",
                extra={"outbox_id": pending.id, "step_id": step_id},
            )
            return
        # Noted before the retry is queued: a check cut short between the two queues it
        # on the next try of this row (above) rather than send this row.
        await self.quotas.member.redis.set(moved, at.isoformat(), ex=2 * 86400)
        await self._queue_retry(pending, at)
        log.info(
            "sop forward moved to the next free slot",
            extra={"outbox_id": pending.id, "at": at.isoformat()},
        )

    async def _queue_retry(self, pending: PendingWrite, at: datetime) -> None:
        await outbox.enqueue(
            store.conn(),
            idem_key=f"{pending.origin}.r{pending.id}"[:160],
            write=outbox.Write(pending.api, dict(pending.payload)),
            origin=pending.origin,
            not_before=at,
        )

    # ------------------------------------------------------------ settled

    async def on_settled(self, settled: Settled, c: BaseDBAsyncClient) -> None:
        """Record how the row ended on its touches (idempotent: only ``sending`` ones)."""
        if settled.origin.startswith(("sop.remind:", "sop.forward:")):
            return  # no touch rides on a nudge or a forwarded attachment
        now = datetime.now(UTC)
        touches, _, _ = await _sending(c, settled.id)
        if not touches:
            return
        ids = [t.id for t in touches]
        if settled.outcome == "sent" and settled.api == "message/send":
            # A digest, the common row: one statement (its touches are all sent).
            result = settled.result or {}
            await _mark_sent(c, outbox_id=settled.id, jobid=str(result.get("msgid") or ""), at=now)
        elif settled.outcome == "sent":
            result = settled.result or {}
            if settled.api == "externalcontact/add_msg_template":
                fail = set(result.get("fail_list") or [])
                ok = [t.id for t in touches if t.customer not in fail]
                bad = [t.id for t in touches if t.customer in fail]
                await (
                    Touch.filter(id__in=ok)
                    .using_db(c)
                    .update(
                        state=TouchState.SENT,
                        msgid=str(result.get("msgid") or "")[:128] or None,
                        sent_at=now,
                        reminded_at=now,
                    )
                )
                if bad:
                    await (
                        Touch.filter(id__in=bad)
                        .using_db(c)
                        .update(state=TouchState.FAILED, reason="not_contact")
                    )
            else:
                await (
                    Touch.filter(id__in=ids).using_db(c).update(state=TouchState.SENT, sent_at=now)
                )
        elif settled.outcome == "failed":
            await (
                Touch.filter(id__in=ids)
                .using_db(c)
                .update(state=TouchState.FAILED, reason=f"wecom:{settled.errcode}"[:64])
            )
            await self._release(touches, now)
        else:
            await self._cancelled(c, settled, touches, now)
        await complete_enrolments(c, enrolment_ids=[t.enrolment_id for t in touches])

    async def _cancelled(
        self, c: BaseDBAsyncClient, settled: Settled, touches: list[Touch], now: datetime
    ) -> None:
        reason = settled.reason or "cancelled"
        ids = [t.id for t in touches]
        if reason == REBUILD or reason == "paused":
            # Back to the queue: rebuilt without the touches the check skipped, or
            # picked up again when the campaign is resumed.
            await Touch.filter(id__in=ids).using_db(c).update(state=TouchState.DUE, outbox_id=None)
            if reason == "paused":
                await self._release(touches, now)
            return
        if reason in RETIME:
            b = await self._load(c, touches)
            step = b.steps.get(touches[0].step_id)  # type: ignore[attr-defined]
            later = now + timedelta(minutes=1)
            if reason == "quiet_hours" and step is not None:
                later = next_open(now, step.timing)
            await (
                Touch.filter(id__in=ids)
                .using_db(c)
                .update(state=TouchState.PLANNED, outbox_id=None, due_at=later)
            )
            return
        await (
            Touch.filter(id__in=ids)
            .using_db(c)
            .update(state=TouchState.SKIPPED, reason=reason[:64])
        )
        await self._release(touches, now)

    async def _release(self, touches: Sequence[Touch], now: datetime) -> None:
        for t in touches:
            await self.quotas.mass.release(t.customer, ref=f"touch:{t.id}", now=now.timestamp())


async def complete_enrolments(c: BaseDBAsyncClient, *, enrolment_ids: Sequence[int]) -> int:
    """Enrolments whose touches are all final are completed."""
    ids = sorted(set(enrolment_ids))
    if not ids:
        return 0
    # By enrolment alone (the unique (enrolment, step) index), states filtered here: a
    # planner that chose the (state, due_at) index instead would read every planned
    # touch of every campaign — millions — for a handful of enrolments.
    waiting = (TouchState.PLANNED.value, TouchState.DUE.value, TouchState.SENDING.value)
    open_: set[int] = set()
    for part in _chunks(ids):
        # Plain SQL: this runs once per settled outbox row, and building the ORM query
        # cost more than the query itself on SQLite.
        rows = await c.execute_query_dict(
            "SELECT enrolment_id, state FROM sop_touch "  # noqa: S608 - placeholders only
            f"WHERE enrolment_id IN ({store.placeholders(c, len(part))})",
            list(part),
        )
        open_ |= {int(r["enrolment_id"]) for r in rows if str(r["state"]) in waiting}
    done = [i for i in ids if i not in open_]
    if not done:
        return 0
    n = 0
    for part in _chunks(done):
        marks = store.placeholders(c, len(part), start=2)
        first = store.placeholders(c, 2)
        n += (
            await c.execute_query(
                f"UPDATE sop_enrolment SET state = {first.split(', ')[0]} "  # noqa: S608
                f"WHERE state = {first.split(', ')[1]} AND id IN ({marks})",
                [EnrolmentState.COMPLETED.value, EnrolmentState.ACTIVE.value, *part],
            )
        )[0]
    return n


def _chunks(items: Sequence[int]) -> list[Sequence[int]]:
    return [items[i : i + 900] for i in range(0, len(items), 900)]


@dataclass(frozen=True)
class _Sending:
    """A touch as the re-check and the settled callback read it (no ORM model: these
    run once per outbox row, where building models cost more than the query)."""

    id: int
    customer: str
    advisor: str
    step_id: int
    version_id: int
    enrolment_id: int
    campaign_id: int
    due_at: datetime
    attempts: int


_DUE_AT = Touch._meta.fields_map["due_at"]


async def _sending(
    c: BaseDBAsyncClient, outbox_id: int
) -> tuple[list[_Sending], str | None, tuple[dict[int, str], set[str]]]:
    """The touches an outbox row carries, still ``sending``, with their campaign's
    status, their enrolments' states and who of them opted out — one query."""
    p = store.placeholders(c, 2)
    rows = await c.execute_query_dict(
        "SELECT t.id, t.customer, t.advisor, t.step_id, t.version_id, t.enrolment_id, "  # noqa: S608
        "t.campaign_id, t.due_at, t.attempts, e.state AS enrolment_state, "
        "cp.status AS campaign_status, o.customer AS opted "
        "FROM sop_touch t JOIN sop_enrolment e ON e.id = t.enrolment_id "
        "JOIN sop_campaign cp ON cp.id = t.campaign_id "
        "LEFT JOIN sop_opt_out o ON o.customer = t.customer "
        f"WHERE t.outbox_id = {p.split(', ')[0]} AND t.state = {p.split(', ')[1]} "
        "ORDER BY t.id",
        [outbox_id, TouchState.SENDING.value],
    )
    touches = [
        _Sending(
            id=int(r["id"]),
            customer=str(r["customer"]),
            advisor=str(r["advisor"]),
            step_id=int(r["step_id"]),
            version_id=int(r["version_id"]),
            enrolment_id=int(r["enrolment_id"]),
            campaign_id=int(r["campaign_id"]),
            due_at=_DUE_AT.to_python_value(r["due_at"]),
            attempts=int(r["attempts"]),
        )
        for r in rows
    ]
    status = str(rows[0]["campaign_status"]) if rows else None
    states = {int(r["enrolment_id"]): str(r["enrolment_state"]) for r in rows}
    opted = {str(r["opted"]) for r in rows if r["opted"]}
    return touches, status, (states, opted)


async def _mark_sent(c: BaseDBAsyncClient, *, outbox_id: int, jobid: str, at: datetime) -> None:
    """A delivered digest's touches: sent, the moment the advisor was reminded."""
    m = store.placeholders(c, 7).split(", ")
    when = store.db_time(Touch, "sent_at", at)
    await c.execute_query(
        f"UPDATE sop_touch SET state = {m[0]}, jobid = {m[1]}, sent_at = {m[2]}, "  # noqa: S608
        f"reminded_at = {m[3]}, updated_at = {m[4]} "
        f"WHERE outbox_id = {m[5]} AND state = {m[6]}",
        [
            TouchState.SENT.value,
            jobid[:128] or None,
            when,
            when,
            when,
            outbox_id,
            TouchState.SENDING.value,
        ],
    )


_KIND_NOTE = {"image": "图片", "file": "文件", "link": "链接", "miniprogram": "小程序"}


def _attachment_note(content: Mapping[str, Any]) -> str:
    """What the digest line says of a step's attachment (the file's name, the card's title)."""
    kind = str(content.get("kind") or "text")
    if kind not in _KIND_NOTE:
        return ""
    if kind in ("image", "file"):
        ref = media.refs_of(content)
        name = ref[0].filename if ref else ""
    else:
        name = str((content.get(kind) or {}).get("title") or "")
    where = "在侧边栏发送" if kind == "miniprogram" else "见下条消息，可转发"
    return f"［附{_KIND_NOTE[kind]}「{name[:20]}」，{where}］"


def _forward_body(content: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any] | None:
    """A step's attachment as an app message to the advisor (``message/send``), or None.

    An image or a file goes as itself, a link card as a ``news`` article; a mini-program
    card cannot be an app message, so the digest points to the sidebar for it.
    """
    (item,) = media.attachments(content, values) or (None,)
    if item is None:
        return None
    kind = item["msgtype"]
    if kind in ("image", "file"):
        return {"msgtype": kind, kind: dict(item[kind])}
    if kind == "link":
        link = item["link"]
        article = {"title": link["title"], "description": link["desc"], "url": link["url"]}
        if link["picurl"]:
            article["picurl"] = link["picurl"]
        return {"msgtype": "news", "news": {"articles": [article]}}
    return None


def digest_count(due: int, per_digest: int) -> int:
    return math.ceil(due / per_digest) if due else 0


def local_day(at: datetime) -> str:
    return at.astimezone(SHANGHAI).date().isoformat()


def _unused(_: Mapping[str, Any], __: Any = due_at) -> None:  # keeps imports honest
    return None
