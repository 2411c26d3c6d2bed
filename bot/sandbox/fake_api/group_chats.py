"""Customer group chats (客户群): ``externalcontact/groupchat/list`` and ``.../get``."""

from __future__ import annotations

from typing import Any, Final

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, parse_page, required, str_list
from bot.sandbox.fake_api.state import SandboxState

__all__ = ["ROUTES"]


def _groupchat_list(state: SandboxState, call: Call) -> dict[str, Any]:
    status_filter = int(call.body.get("status_filter") or 0)
    owner_filter = call.body.get("owner_filter") or {}
    owners = set(
        str_list(owner_filter.get("userid_list") if isinstance(owner_filter, dict) else None)
    )
    offset, limit = parse_page(call, default_limit=100, max_limit=1000)
    chats = [
        c
        for c in state.group_chats.values()
        if (status_filter == 0 or c.status == status_filter) and (not owners or c.owner in owners)
    ]
    next_cursor = str(offset + limit) if offset + limit < len(chats) else ""
    return {
        "group_chat_list": [
            {"chat_id": c.chat_id, "status": c.status} for c in chats[offset : offset + limit]
        ],
        "next_cursor": next_cursor,
    }


def _groupchat_get(state: SandboxState, call: Call) -> dict[str, Any]:
    chat = state.group_chats.get(required(call.body.get("chat_id")))
    if chat is None:
        raise WeComApiError(40050)
    need_name = bool(call.body.get("need_name"))
    members = []
    for m in chat.members:
        row = {k: v for k, v in m.items() if k != "name" or need_name}
        members.append(row)
    return {
        "group_chat": {
            "chat_id": chat.chat_id,
            "name": chat.name,
            "owner": chat.owner,
            "create_time": chat.create_time,
            "notice": chat.notice,
            "member_list": members,
            "admin_list": [{"userid": a} for a in chat.admins],
            "member_version": str(len(chat.members)),
        }
    }


ROUTES: Final[dict[str, Handler]] = {
    "externalcontact/groupchat/list": _groupchat_list,
    "externalcontact/groupchat/get": _groupchat_get,
}
