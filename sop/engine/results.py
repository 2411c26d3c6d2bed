"""Mass-send tasks after ``add_msg_template``: did the advisor confirm, did it arrive?

WeCom sends nothing until the advisor taps 发送, and tells nobody when they do: the
engine asks.  ``get_groupmsg_task`` says per member whether the task was sent (status
2); for those, ``get_groupmsg_send_result`` says per customer: 1 delivered
(→ ``confirmed``), 2 not a contact any more (→ ``failed``), 3 already received
another mass send that day (→ ``skipped``, ``mass_send_allowance``), 0 not yet.
A member who has not confirmed after ``remind_after`` is nudged with
``remind_groupmsg_send`` — at most three times per task in 24 h (WeCom's limit),
through the outbox, once per (task, round).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from bot import outbox
from bot.wecom.client import WeComClient, WeComError
from sop.engine.dispatch import complete_enrolments
from sop.models import Touch, TouchState

log = logging.getLogger(__name__)

__all__ = ["follow_up_mass_sends"]

#: Results are read for tasks up to this old; WeCom keeps them, but a task nobody
#: confirmed in a week will not be.
FOLLOW_FOR = timedelta(days=7)
MAX_REMINDERS = 3


async def follow_up_mass_sends(
    client: WeComClient,
    *,
    remind_after: timedelta,
    now: datetime | None = None,
    limit: int = 200,
) -> int:
    """One round over open tasks; returns the touches whose state changed."""
    now = now or datetime.now(UTC)
    rows = await (
        Touch.filter(
            state=TouchState.SENT,
            msgid__not_isnull=True,
            sent_at__gte=now - FOLLOW_FOR,
        )
        .order_by("sent_at")
        .limit(limit * 50)
        .values("id", "msgid", "advisor", "customer", "sent_at", "enrolment_id")
    )
    tasks: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        tasks[(str(r["msgid"]), str(r["advisor"]))].append(r)
    changed = 0
    for (msgid, advisor), touches in list(tasks.items())[:limit]:
        try:
            changed += await _follow_up(client, msgid, advisor, touches, remind_after, now)
        except WeComError as exc:
            log.info("mass-send follow-up failed", extra={"msgid": msgid, "errcode": exc.errcode})
    return changed


async def _member_sent(client: WeComClient, msgid: str, advisor: str) -> bool:
    cursor = ""
    while True:
        got = await client.call(
            "externalcontact/get_groupmsg_task",
            json={"msgid": msgid, "limit": 1000, "cursor": cursor},
        )
        for task in got.get("task_list") or []:
            if task.get("userid") == advisor:
                return int(task.get("status") or 0) == 2
        cursor = str(got.get("next_cursor") or "")
        if not cursor:
            return False


async def _follow_up(
    client: WeComClient,
    msgid: str,
    advisor: str,
    touches: list[dict[str, Any]],
    remind_after: timedelta,
    now: datetime,
) -> int:
    if not await _member_sent(client, msgid, advisor):
        await _maybe_remind(msgid, min(t["sent_at"] for t in touches), remind_after, now)
        return 0
    status: dict[str, tuple[int, int | None]] = {}
    cursor = ""
    while True:
        got = await client.get_groupmsg_send_result(
            msgid=msgid, userid=advisor, limit=1000, cursor=cursor
        )
        for r in got.get("send_list") or []:
            status[str(r.get("external_userid"))] = (int(r.get("status") or 0), r.get("send_time"))
        cursor = str(got.get("next_cursor") or "")
        if not cursor:
            break
    changed = 0
    async with in_transaction() as c:
        for t in touches:
            st, send_time = status.get(t["customer"], (0, None))
            q = Touch.filter(id=t["id"], state=TouchState.SENT).using_db(c)
            if st == 1:
                at = datetime.fromtimestamp(int(send_time), UTC) if send_time else now
                changed += await q.update(state=TouchState.CONFIRMED, confirmed_at=at)
            elif st == 2:
                changed += await q.update(state=TouchState.FAILED, reason="not_contact")
            elif st == 3:
                changed += await q.update(state=TouchState.SKIPPED, reason="mass_send_allowance")
        await complete_enrolments(c, enrolment_ids=[int(t["enrolment_id"]) for t in touches])
    return changed


async def _maybe_remind(
    msgid: str, sent_at: datetime, remind_after: timedelta, now: datetime
) -> None:
    """Round n (1..3) is due ``n × remind_after`` after the task; each goes once."""
    rounds = int((now - sent_at) / remind_after) if remind_after.total_seconds() > 0 else 0
    n = min(rounds, MAX_REMINDERS)
    if n < 1:
        return
    # Spread over at least 24 h: WeCom allows three reminders per task per day.
    if remind_after * MAX_REMINDERS < timedelta(hours=24) and n > 1:
        n = min(n, 1 + int((now - sent_at - remind_after) / timedelta(hours=12)))
    async with in_transaction() as c:
        await outbox.enqueue(
            c,
            idem_key=f"sop.remind:{msgid}:{n}"[:160],
            write=outbox.remind_groupmsg_send(msgid=msgid),
            origin=f"sop.remind:{msgid}"[:96],
        )
