"""A touch as the advisor carries it out in the chat sidebar: read it (the digest's deep
link ``/sidebar/?customer=<external_userid>&touch=<id>`` opens it) and record that its
content was sent.

A ``reminder`` touch is ``sent`` once the digest reached the advisor: the engine cannot
know whether the advisor then wrote to the customer.  The sidebar can — the advisor
sends the content from it — so a send from the sidebar is recorded on the touch
(``sent_via = "sidebar"``, who in ``sent_by``, when in ``sent_at``).  ``sent_at`` then
is the moment the customer got it, so the 3-day reply window (``sop.stats``, the
engine's reply hook) runs from there, and the campaign's results count the touch as
sent like any other (``sent`` state).

Who: an advisor, on their own touches only (``touch.advisor`` in the caller's reach,
and still following the customer); anyone else's touch answers as a missing one.
``check_*`` reads and decides, ``do_*`` changes the touch and writes its audit entry in
the same transaction.  Recording twice records once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from bot import customers as bot_customers
from core import audit
from core.audit import Actor
from sop import panels, stats
from sop.campaigns import CampaignError, NotFound, StateConflict
from sop.engine.dispatch import complete_enrolments
from sop.engine.timing import SHANGHAI
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

SENT_VIA_SIDEBAR = panels.SENT_VIA_SIDEBAR
#: A reminder not sent by the start of the Beijing day before yesterday is stale: the
#: same horizon as the sidebar's "due for this customer" (``panels.DUE_BEHIND``).
EXPIRES_AFTER = panels.DUE_BEHIND
#: States a reminder's content may still be sent from: not handed over yet, in a digest
#: being sent, or the digest reached the advisor.
SENDABLE_STATES = (TouchState.PLANNED, TouchState.DUE, TouchState.SENDING, TouchState.SENT)
_ID_MAX = 18


@dataclass(frozen=True)
class Problem:
    """Why the touch's content is not to be sent from the sidebar (zh-CN, said plainly)."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class AdvisorTouch:
    """One of the advisor's touches, as the sidebar shows it at the top of the page."""

    touch: Touch
    view: panels.DueTouch
    problem: Problem | None

    @property
    def sendable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Recorded:
    touch: Touch
    # False: it was recorded before (a retry, a second tap): nothing written again.
    created: bool


def parse_touch_id(raw: str) -> int:
    """A touch id from a path or query; anything else is no touch at all."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _ID_MAX:
        raise NotFound("not_found", "找不到这条提醒，或它不是分配给您的", field="touch_id")
    return int(raw)


def _not_found() -> NotFound:
    # The same answer for a touch that does not exist and one that is someone else's.
    return NotFound("not_found", "找不到这条提醒，或它不是分配给您的")


def _local(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%m-%d %H:%M")


async def _touch_in_reach(
    touch_id: int, *, reach: frozenset[str] | None, conn: object = None
) -> tuple[Touch, bot_customers.CustomerRow]:
    q = Touch.filter(id=touch_id)
    if conn is not None:
        q = q.using_db(conn).select_for_update()  # type: ignore[arg-type]
    touch = await q.first()
    # reach None (every advisor's) is a supervisor's view, never an advisor's own.
    if touch is None or reach is None or touch.advisor not in reach:
        raise _not_found()
    customer_id = await bot_customers.customer_id_of(external_userid=touch.customer)
    rows = await bot_customers.customer_rows(ids=[customer_id]) if customer_id else []
    following = rows and any(
        f.advisor_userid == touch.advisor and f.status == "active" for f in rows[0].follows
    )
    if not following:
        # No longer the advisor's customer (the relation ended): not theirs to send to.
        raise _not_found()
    return touch, rows[0]


async def _problem(touch: Touch, *, customer: str | None, now: datetime) -> Problem | None:
    if customer is not None and customer != touch.customer:
        return Problem(
            "other_customer", "这条提醒是关于另一位客户的，请在与该客户的聊天中打开后发送。"
        )
    if touch.sent_via == SENT_VIA_SIDEBAR:
        at = _local(touch.sent_at) if touch.sent_at else ""
        return Problem("sent", f"这条触达已于 {at} 从侧边栏发送给客户，无需再发。")
    step = await CampaignStep.get_or_none(id=touch.step_id)  # type: ignore[attr-defined]
    if touch.state == TouchState.SKIPPED:
        why = stats.reason_label(touch.reason or "")
        return Problem("skipped", f"这条触达已跳过（{why}），不再发送。")
    if touch.state == TouchState.FAILED:
        why = stats.reason_label(touch.reason or "")
        return Problem("failed", f"这条触达发送失败（{why}），不再发送。")
    if step is None or step.delivery == Delivery.WELCOME:
        return Problem("welcome", "欢迎语在客户添加时由系统发送，无需在此发送。")
    if step.delivery == Delivery.MASS_SEND:
        if touch.state in (TouchState.SENT, TouchState.CONFIRMED):
            return Problem("sent", "这条群发已交给企业微信「群发助手」，请在那里确认发送。")
        return Problem(
            "mass_send", "群发任务：到时在企业微信「群发助手」中确认发送，无需在此发送。"
        )
    if touch.state not in SENDABLE_STATES:
        return Problem("sent", "这条触达已发送，无需再发。")
    if await OptOut.filter(customer=touch.customer).exists():
        return Problem("opted_out", "客户已退订营销触达，不再发送。")
    enrolment = await Enrolment.get_or_none(id=touch.enrolment_id)  # type: ignore[attr-defined]
    if enrolment is not None and enrolment.state == EnrolmentState.EXITED:
        why = stats.exit_label(enrolment.exit_reason or "")
        return Problem("ended", f"客户已退出这个旅程（{why}），不再发送。")
    campaign = await Campaign.get_or_none(id=touch.campaign_id)  # type: ignore[attr-defined]
    status = campaign.status if campaign is not None else None
    if status == CampaignStatus.PAUSED:
        return Problem("paused", "活动已暂停，暂不发送。")
    if status != CampaignStatus.ACTIVE:
        return Problem("ended", "活动已结束，不再发送。")
    today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    if touch.due_at < (today - EXPIRES_AFTER).astimezone(UTC):
        return Problem("expired", f"这条提醒已过期（应于 {_local(touch.due_at)} 跟进），不再发送。")
    return None


async def check_advisor_touch(
    *, touch_id: int, reach: frozenset[str] | None, customer: str | None, now: datetime
) -> AdvisorTouch:
    """The advisor's touch with its content filled in, and whether it is to be sent now
    (``customer``: the customer the deep link or the conversation names)."""
    touch, row = await _touch_in_reach(touch_id, reach=reach)
    (view,) = await panels.render_touches(
        [touch], customer_name=row.name, attrs=row.attributes, now=now, welcome=True
    ) or (None,)
    if view is None:
        raise _not_found()  # its step is gone (a version removed it)
    problem = await _problem(touch, customer=customer, now=now)
    if problem is None and view.missing:
        # Filled, it would read 「将于{maturity_date}到期」: nothing to insert.
        problem = Problem("missing_variable", view.missing_note)
    return AdvisorTouch(touch=touch, view=view, problem=problem)


async def do_record_sidebar_send(
    *,
    touch_id: int,
    reach: frozenset[str] | None,
    customer: str,
    actor: Actor,
    source: str,
    now: datetime | None = None,
) -> Recorded:
    """The advisor sent the touch's content to ``customer`` from the sidebar: the touch
    is ``sent`` from there, once; audited as ``sop.touch.sent``."""
    now = now or datetime.now(UTC)
    if not customer:
        raise CampaignError(
            "invalid_input", "external_userid: 缺少客户标识", field="external_userid"
        )
    async with in_transaction() as conn:
        touch, row = await _touch_in_reach(touch_id, reach=reach, conn=conn)
        if touch.sent_via == SENT_VIA_SIDEBAR:
            if customer != touch.customer:
                raise StateConflict("other_customer", "这条提醒是关于另一位客户的")
            return Recorded(touch=touch, created=False)
        problem = await _problem(touch, customer=customer, now=now)
        if problem is None:
            # What the sidebar would not fill in was not sent either: a send recorded
            # for it would count content the customer never had (「将于{maturity_date}」).
            (view,) = await panels.render_touches(
                [touch], customer_name=row.name, attrs=row.attributes, now=now, welcome=True
            ) or (None,)
            if view is None:
                raise _not_found()
            if view.missing:
                problem = Problem("missing_variable", view.missing_note)
        if problem is not None:
            raise StateConflict(problem.code, problem.message)
        was = touch.state
        # A reply before the content was sent is not a reply to it (the window starts now).
        replied = touch.replied_at if touch.replied_at and touch.replied_at >= now else None
        changed = await (
            Touch.filter(id=touch.id, sent_via__isnull=True)
            .using_db(conn)
            .update(
                state=TouchState.SENT,
                sent_via=SENT_VIA_SIDEBAR,
                sent_by=actor.ref[:96],
                sent_at=now,
                # The sidebar showed it to the advisor: reminded, if no digest did.
                reminded_at=touch.reminded_at or now,
                replied_at=replied,
                reason=None,
            )
        )
        if not changed:
            fresh = await Touch.get(id=touch.id, using_db=conn)
            return Recorded(touch=fresh, created=False)
        await complete_enrolments(conn, enrolment_ids=[touch.enrolment_id])  # type: ignore[attr-defined]
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.touch.sent",
            target=f"touch:{touch.id}",
            source=source,
            detail={
                "via": SENT_VIA_SIDEBAR,
                "campaign": touch.campaign_id,  # type: ignore[attr-defined]
                "was": was.value,
            },
            at=now,
        )
        fresh = await Touch.get(id=touch.id, using_db=conn)
    return Recorded(touch=fresh, created=True)


def touch_dict(found: AdvisorTouch, *, now: datetime) -> dict[str, object]:
    """The touch as the sidebar draws it (``GET /api/v1/touches/{id}``)."""
    t, v = found.touch, found.view
    return {
        "id": t.id,
        "customer": t.customer,
        "campaign": v.campaign,
        "step": {"position": v.position, "name": v.step_name},
        "delivery": v.delivery,
        "delivery_label": v.delivery_label,
        "due_at": t.due_at.isoformat(),
        "due_label": panels.when_label(t.due_at, now=now),
        "state": t.state.value,
        "state_label": v.state_label,
        "kind": v.kind,
        "text": v.text,
        "link": v.link,
        "chat_message": v.chat_message,
        "missing": list(v.missing),
        "sent": _sent_dict(t),
        "sendable": found.sendable,
        "problem": found.problem.as_dict() if found.problem else None,
    }


def _sent_dict(t: Touch) -> dict[str, object] | None:
    if t.sent_via != SENT_VIA_SIDEBAR:
        return None
    return {
        "via": t.sent_via,
        "by": t.sent_by,
        "at": t.sent_at.isoformat() if t.sent_at else None,
        "at_label": _local(t.sent_at) if t.sent_at else "",
    }


def sent_answer(recorded: Recorded) -> dict[str, object]:
    t = recorded.touch
    return {"id": t.id, "state": t.state.value, "recorded": recorded.created, "sent": _sent_dict(t)}


__all__ = [
    "EXPIRES_AFTER",
    "SENT_VIA_SIDEBAR",
    "AdvisorTouch",
    "Problem",
    "Recorded",
    "check_advisor_touch",
    "do_record_sidebar_send",
    "parse_touch_id",
    "sent_answer",
    "touch_dict",
]
