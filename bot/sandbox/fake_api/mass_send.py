"""Mass sends (群发): ``add_msg_template`` and ``get_groupmsg_send_result``, one mass
send per customer a day; plus the ``/sandbox/mass_send/confirm`` lever."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, parse_page, required, str_list
from bot.sandbox.fake_api.contacts import followers_of
from bot.sandbox.fake_api.media import check_attachments
from bot.sandbox.fake_api.records import MassSendTask
from bot.sandbox.fake_api.state import STATE_KEY, SandboxState

__all__ = ["ROUTES", "add_controls"]


def _add_msg_template(state: SandboxState, call: Call) -> dict[str, Any]:
    body = call.body
    chat_type = body.get("chat_type") or "single"
    if chat_type not in ("single", "group"):
        raise WeComApiError(40058, "chat_type")
    text = body.get("text")
    content = text.get("content") if isinstance(text, dict) else None
    attachments = body.get("attachments") or []
    if text is not None and not content:
        raise WeComApiError(44004)
    if not content and not attachments:
        raise WeComApiError(40058, "text or attachments required")
    check_attachments(state, attachments)
    sender = body.get("sender")
    if sender is not None and sender not in state.members:
        raise WeComApiError(40003)
    task = MassSendTask(
        state.new_id("msg", 30), chat_type, sender, content, list(attachments), state.clock()
    )
    fail_list: list[str] = []
    if chat_type == "single":
        wanted = str_list(body.get("external_userid"))
        if not wanted and sender is None:
            raise WeComApiError(40058, "external_userid or sender required")
        if not wanted:
            wanted = list(state.follows.get(sender or "", {}))
        for ext in wanted:
            followers = [uid for uid, _ in followers_of(state, ext)]
            if sender is not None:
                followers = [uid for uid in followers if uid == sender]
            if ext not in state.contacts or not followers:
                fail_list.append(ext)
                continue
            task.results.extend(
                {"userid": uid, "external_userid": ext, "status": 0} for uid in followers
            )
    else:
        chats = str_list(body.get("chat_id_list"))
        if not chats and sender is None:
            raise WeComApiError(40058, "chat_id_list or sender required")
        if not chats:
            chats = [c.chat_id for c in state.group_chats.values() if c.owner == sender]
        for chat_id in chats:
            chat = state.group_chats.get(chat_id)
            if chat is None or (sender is not None and chat.owner != sender):
                fail_list.append(chat_id)
                continue
            task.results.append({"userid": chat.owner, "chat_id": chat_id, "status": 0})
    state.mass_sends[task.msgid] = task
    if state.auto_confirm_mass_send:
        state.confirm_mass_send(task.msgid)
    return {"fail_list": fail_list, "msgid": task.msgid}


def _get_groupmsg_send_result(state: SandboxState, call: Call) -> dict[str, Any]:
    msgid = required(call.body.get("msgid"))
    userid = required(call.body.get("userid"))
    task = state.mass_sends.get(msgid)
    if task is None:
        raise WeComApiError(40058, "invalid msgid")
    offset, limit = parse_page(call, default_limit=500, max_limit=1000)
    rows = []
    for result in task.results:
        if result["userid"] != userid:
            continue
        row = {k: v for k, v in result.items() if k != "send_time"}
        if result["status"] == 1:
            row["send_time"] = result["send_time"]
        rows.append(row)
    next_cursor = str(offset + limit) if offset + limit < len(rows) else ""
    return {"send_list": rows[offset : offset + limit], "next_cursor": next_cursor}


async def _control_confirm(request: web.Request) -> web.Response:
    data = await request.json()
    state = request.app[STATE_KEY]
    if data.get("msgid") not in state.mass_sends:
        raise web.HTTPNotFound()
    state.confirm_mass_send(str(data["msgid"]), data.get("userid"))
    return web.json_response({"ok": True})


ROUTES: Final[dict[str, Handler]] = {
    "externalcontact/add_msg_template": _add_msg_template,
    "externalcontact/get_groupmsg_send_result": _get_groupmsg_send_result,
}


def add_controls(app: web.Application) -> None:
    app.router.add_post("/sandbox/mass_send/confirm", _control_confirm)
