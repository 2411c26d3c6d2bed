"""Members and customers: ``user/get``, ``user/list``, ``externalcontact/get``,
``externalcontact/list``, ``externalcontact/batch/get_by_user``."""

from __future__ import annotations

from typing import Any, Final

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, parse_page, required, str_list
from bot.sandbox.fake_api.records import FollowInfo
from bot.sandbox.fake_api.state import SandboxState

__all__ = ["ROUTES", "followers_of"]


def _user_get(state: SandboxState, call: Call) -> dict[str, Any]:
    userid = required(call.query.get("userid"))
    member = state.members.get(userid)
    if member is None:
        raise WeComApiError(60111)
    return member.as_wecom()


def _user_list(state: SandboxState, call: Call) -> dict[str, Any]:
    try:
        dept = int(required(call.query.get("department_id")))
    except ValueError:
        raise WeComApiError(60123) from None
    if dept not in state.departments:
        raise WeComApiError(60123)
    fetch_child = call.query.get("fetch_child") == "1"
    wanted = set(state.departments) if fetch_child and dept == 1 else {dept}
    return {
        "userlist": [
            m.as_wecom() for m in state.members.values() if wanted.intersection(m.department)
        ]
    }


def _follow_user_json(state: SandboxState, userid: str, info: FollowInfo) -> dict[str, Any]:
    tags = []
    for tag_id in info.tags:
        found = state.find_tag(tag_id)
        if found is not None:
            group, tag = found
            tags.append(
                {"group_name": group.group_name, "tag_name": tag.name, "tag_id": tag.id, "type": 1}
            )
    out: dict[str, Any] = {
        "userid": userid,
        "remark": info.remark,
        "description": info.description,
        "createtime": info.createtime,
        "tags": tags,
        "remark_corp_name": info.remark_corp_name,
        "remark_mobiles": list(info.remark_mobiles),
        "add_way": info.add_way,
        "oper_userid": userid,
    }
    if info.state:
        out["state"] = info.state
    return out


def followers_of(state: SandboxState, external_userid: str) -> list[tuple[str, FollowInfo]]:
    return [
        (uid, rel[external_userid]) for uid, rel in state.follows.items() if external_userid in rel
    ]


def _externalcontact_get(state: SandboxState, call: Call) -> dict[str, Any]:
    ext = required(call.query.get("external_userid"))
    contact = state.contacts.get(ext)
    if contact is None:
        raise WeComApiError(40096)
    followers = followers_of(state, ext)
    if not followers:
        raise WeComApiError(84061)
    return {
        "external_contact": contact.as_wecom(),
        "follow_user": [_follow_user_json(state, uid, info) for uid, info in followers],
        "next_cursor": "",
    }


def _externalcontact_list(state: SandboxState, call: Call) -> dict[str, Any]:
    userid = required(call.query.get("userid"))
    if userid not in state.members:
        raise WeComApiError(40003)
    customers = list(state.follows.get(userid, {}))
    if not customers:
        raise WeComApiError(84061)  # WeCom's answer for a member with no customers
    return {"external_userid": customers}


def _batch_get_by_user(state: SandboxState, call: Call) -> dict[str, Any]:
    userids = str_list(required(call.body.get("userid_list")))
    if len(userids) > 100:
        raise WeComApiError(40058, "userid_list over 100")
    offset, limit = parse_page(call, default_limit=50, max_limit=100)
    rows = []
    for userid in userids:
        for ext, info in state.follows.get(userid, {}).items():
            contact = state.contacts.get(ext)
            if contact is None:
                continue
            follow = _follow_user_json(state, userid, info)
            follow["tag_id"] = [t["tag_id"] for t in follow.pop("tags")]
            rows.append({"external_contact": contact.as_wecom(), "follow_info": follow})
    page = rows[offset : offset + limit]
    next_cursor = str(offset + limit) if offset + limit < len(rows) else ""
    return {"external_contact_list": page, "next_cursor": next_cursor}


ROUTES: Final[dict[str, Handler]] = {
    "user/get": _user_get,
    "user/list": _user_list,
    "externalcontact/get": _externalcontact_get,
    "externalcontact/list": _externalcontact_list,
    "externalcontact/batch/get_by_user": _batch_get_by_user,
}
