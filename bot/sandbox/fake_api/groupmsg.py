"""Following a mass-send task up: ``get_groupmsg_task`` (has each member confirmed?) and
``remind_groupmsg_send`` (nudge them again: at most three times per task in 24 h).

``add_msg_template`` and ``get_groupmsg_send_result`` live in ``mass_send``; a member
confirms a task there (``SandboxState.confirm_mass_send`` or ``/sandbox/mass_send/
confirm``).  Reminders are recorded per task, so a test can see who was nudged.
"""

from __future__ import annotations

from typing import Any, Final

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, parse_page, required
from bot.sandbox.fake_api.state import SandboxState

__all__ = ["REMINDERS_PER_DAY", "ROUTES"]

#: WeCom: "24小时内每个群发最多触发三次提醒".
REMINDERS_PER_DAY: Final = 3


def _get_groupmsg_task(state: SandboxState, call: Call) -> dict[str, Any]:
    msgid = required(call.body.get("msgid"))
    task = state.mass_sends.get(msgid)
    if task is None:
        raise WeComApiError(40058, "invalid msgid")
    offset, limit = parse_page(call, default_limit=500, max_limit=1000)
    # One row per member asked to send: status 0 not sent yet, 2 sent (confirmed).
    members: dict[str, dict[str, Any]] = {}
    for result in task.results:
        row = members.setdefault(result["userid"], {"userid": result["userid"], "status": 2})
        if result["status"] == 0:
            row["status"] = 0
        elif "send_time" in result:
            row["send_time"] = max(int(result["send_time"]), int(row.get("send_time", 0)))
    rows = list(members.values())
    for row in rows:
        if row["status"] == 0:
            row.pop("send_time", None)
    next_cursor = str(offset + limit) if offset + limit < len(rows) else ""
    return {"task_list": rows[offset : offset + limit], "next_cursor": next_cursor}


def _remind_groupmsg_send(state: SandboxState, call: Call) -> dict[str, Any]:
    msgid = required(call.body.get("msgid"))
    if msgid not in state.mass_sends:
        raise WeComApiError(40058, "invalid msgid")
    now = state.clock()
    sent = [t for t in state.groupmsg_reminders.get(msgid, []) if t > now - 24 * 3600]
    if len(sent) >= REMINDERS_PER_DAY:
        # WeCom documents the limit but no code of its own: its frequency limit answers.
        raise WeComApiError(45009)
    state.groupmsg_reminders[msgid] = [*sent, now]
    return {}


ROUTES: Final[dict[str, Handler]] = {
    "externalcontact/get_groupmsg_task": _get_groupmsg_task,
    "externalcontact/remind_groupmsg_send": _remind_groupmsg_send,
}
