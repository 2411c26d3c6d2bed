"""Messages to one person: app messages (``message/send``, with WeCom's per-member
limits) and ``externalcontact/send_welcome_msg``; plus the ``/sandbox/app_messages`` and
``/sandbox/welcome_codes`` levers."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Final

from aiohttp import web

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, answer, required
from bot.sandbox.fake_api.media import check_attachments, check_media
from bot.sandbox.fake_api.records import AppMessage
from bot.sandbox.fake_api.state import STATE_KEY, SandboxState

__all__ = ["ROUTES", "add_controls"]


def _message_send(state: SandboxState, call: Call) -> dict[str, Any]:
    if call.token is not None and call.token.kind != "app":
        raise WeComApiError(48002)  # only the app's own token may send as the app
    body = call.body
    if body.get("agentid") != state.agent_id:
        raise WeComApiError(40056)
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str):
        raise WeComApiError(40008)
    payload = body.get(msgtype)
    if not isinstance(payload, dict):
        raise WeComApiError(40008)
    if msgtype in ("text", "markdown") and not payload.get("content"):
        raise WeComApiError(44004)
    if msgtype in ("image", "voice", "video", "file"):
        check_media(state, str(payload.get("media_id") or ""), kind=msgtype)
    touser = str(body.get("touser") or "")
    targets = list(state.members) if touser == "@all" else [u for u in touser.split("|") if u]
    invalid = [u for u in targets if u not in state.members]
    valid = [u for u in targets if u in state.members]
    if not valid:
        raise WeComApiError(81013)
    now = state.clock()
    msgid = state.new_id("", 40)
    check_dup = bool(body.get("enable_duplicate_check"))
    dup_window = float(body.get("duplicate_check_interval") or 1800)
    for userid in valid:
        delivered = [m for m in state.app_messages if m.touser == userid and not m.dropped]
        reason: str | None = None
        if check_dup and any(
            m.msgtype == msgtype and m.content == payload and m.sent_at > now - dup_window
            for m in delivered
        ):
            reason = "duplicate"
        elif sum(m.sent_at > now - 60 for m in delivered) >= state.member_minute_limit:
            reason = "minute_limit"
        elif sum(m.sent_at > now - 3600 for m in delivered) >= state.member_hour_limit:
            reason = "hour_limit"
        # WeCom answers errcode 0 either way: the excess is simply not delivered.
        state.app_messages.append(
            AppMessage(
                msgid,
                userid,
                msgtype,
                dict(payload),
                now,
                dropped=reason is not None,
                drop_reason=reason,
            )
        )
    return {
        "invaliduser": "|".join(invalid),
        "invalidparty": "",
        "invalidtag": "",
        "unlicenseduser": "",
        "msgid": msgid,
    }


def _send_welcome_msg(state: SandboxState, call: Call) -> dict[str, Any]:
    code = required(call.body.get("welcome_code"))
    text = call.body.get("text")
    content = text.get("content") if isinstance(text, dict) else None
    if not content and not call.body.get("attachments"):
        raise WeComApiError(40058, "text or attachments required")
    check_attachments(state, call.body.get("attachments") or [])
    welcome = state.welcome_codes.get(code)
    if welcome is None:
        raise WeComApiError(40058, "invalid welcome_code")
    now = state.clock()
    # Valid once, within 20 s of the event; afterwards WeCom answers 41051.
    if welcome.used_at is not None or now - welcome.issued_at > state.welcome_code_ttl_s:
        raise WeComApiError(41051)
    welcome.used_at = now
    state.welcome_messages.append(
        {
            "welcome_code": code,
            "userid": welcome.userid,
            "external_userid": welcome.external_userid,
            "text": content,
            "attachments": call.body.get("attachments") or [],
            "sent_at": now,
        }
    )
    return {}


async def _control_app_messages(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    touser = request.query.get("touser")
    rows = [asdict(m) for m in state.app_messages if touser is None or m.touser == touser]
    return answer({"app_messages": rows})


async def _control_welcome_code(request: web.Request) -> web.Response:
    data = await request.json()
    code = request.app[STATE_KEY].issue_welcome_code(
        userid=str(data["userid"]), external_userid=str(data["external_userid"])
    )
    return web.json_response({"welcome_code": code})


ROUTES: Final[dict[str, Handler]] = {
    "message/send": _message_send,
    "externalcontact/send_welcome_msg": _send_welcome_msg,
}


def add_controls(app: web.Application) -> None:
    app.router.add_get("/sandbox/app_messages", _control_app_messages)
    app.router.add_post("/sandbox/welcome_codes", _control_welcome_code)
