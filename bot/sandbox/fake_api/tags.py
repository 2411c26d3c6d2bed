"""Corp tags (企业客户标签): ``get_corp_tag_list``, ``add_corp_tag``, ``edit_corp_tag``,
``del_corp_tag``, and ``mark_tag`` on a customer."""

from __future__ import annotations

from typing import Any, Final

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, required, str_list
from bot.sandbox.fake_api.records import CorpTag, TagGroup
from bot.sandbox.fake_api.state import SandboxState

__all__ = ["ROUTES"]

#: WeCom's limit on a corp tag's or group's name (标签名称/标签组名称 ≤ 30 个字符); longer
#: names are refused with 40058 (invalid parameter).
NAME_MAX = 30


def _check_name(name: object) -> None:
    if isinstance(name, str) and len(name) > NAME_MAX:
        raise WeComApiError(40058, f"name longer than {NAME_MAX} characters")


def _get_corp_tag_list(state: SandboxState, call: Call) -> dict[str, Any]:
    tag_ids = set(str_list(call.body.get("tag_id")))
    group_ids = set(str_list(call.body.get("group_id")))
    groups = sorted(state.tag_groups.values(), key=lambda g: (g.order, g.create_time))
    if tag_ids:  # WeCom ignores group_id when tag_id is given
        return {
            "tag_group": [
                g.as_wecom(tag_ids) for g in groups if any(t.id in tag_ids for t in g.tags)
            ]
        }
    if group_ids:
        groups = [g for g in groups if g.group_id in group_ids]
    return {"tag_group": [g.as_wecom() for g in groups]}


def _add_corp_tag(state: SandboxState, call: Call) -> dict[str, Any]:
    body = call.body
    new_tags = required(body.get("tag"))
    if not isinstance(new_tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] for t in new_tags
    ):
        raise WeComApiError(40058, "tag needs names")
    for t in new_tags:
        _check_name(t["name"])
    _check_name(body.get("group_name"))
    now = int(state.clock())
    group: TagGroup | None
    if body.get("group_id"):
        group = state.tag_groups.get(body["group_id"])
        if group is None:
            raise WeComApiError(40068)
    else:
        name = required(body.get("group_name"))
        group = next((g for g in state.tag_groups.values() if g.group_name == name), None)
        if group is None:
            group = TagGroup(state.new_id("et", 22), name, now, int(body.get("order") or 0))
            state.tag_groups[group.group_id] = group
    names = [t["name"] for t in new_tags]
    if len(set(names)) != len(names) or {t.name for t in group.tags} & set(names):
        raise WeComApiError(40071)
    created = [
        CorpTag(state.new_id("et", 22), t["name"], now, int(t.get("order") or 0)) for t in new_tags
    ]
    group.tags.extend(created)
    return {"tag_group": group.as_wecom({t.id for t in created})}


def _edit_corp_tag(state: SandboxState, call: Call) -> dict[str, Any]:
    target = required(call.body.get("id"))
    name = call.body.get("name")
    order = call.body.get("order")
    _check_name(name)
    group = state.tag_groups.get(target)
    if group is not None:
        if name and any(g.group_name == name for g in state.tag_groups.values() if g is not group):
            raise WeComApiError(40071)
        group.group_name = name or group.group_name
        group.order = group.order if order is None else int(order)
        return {}
    found = state.find_tag(target)
    if found is None:
        raise WeComApiError(40068)
    group, tag = found
    if name and any(t.name == name for t in group.tags if t is not tag):
        raise WeComApiError(40071)
    tag.name = name or tag.name
    tag.order = tag.order if order is None else int(order)
    return {}


def _del_corp_tag(state: SandboxState, call: Call) -> dict[str, Any]:
    tag_ids = str_list(call.body.get("tag_id"))
    group_ids = str_list(call.body.get("group_id"))
    if not tag_ids and not group_ids:
        raise WeComApiError(40058, "tag_id or group_id required")
    if any(g not in state.tag_groups for g in group_ids) or any(
        state.find_tag(t) is None for t in tag_ids
    ):
        raise WeComApiError(40068)
    removed = set(tag_ids)
    for gid in group_ids:
        removed.update(t.id for t in state.tag_groups.pop(gid).tags)
    for group in state.tag_groups.values():
        group.tags = [t for t in group.tags if t.id not in removed]
    for relations in state.follows.values():
        for info in relations.values():
            info.tags = [t for t in info.tags if t not in removed]
    return {}


def _mark_tag(state: SandboxState, call: Call) -> dict[str, Any]:
    userid = required(call.body.get("userid"))
    ext = required(call.body.get("external_userid"))
    add = str_list(call.body.get("add_tag"))
    remove = str_list(call.body.get("remove_tag"))
    if not add and not remove:
        raise WeComApiError(40058, "add_tag or remove_tag required")
    if userid not in state.members:
        raise WeComApiError(40003)
    info = state.follows.get(userid, {}).get(ext)
    if info is None:
        raise WeComApiError(84061)
    if any(state.find_tag(t) is None for t in add + remove):
        raise WeComApiError(40068)
    info.tags = [t for t in info.tags if t not in remove]
    info.tags.extend(t for t in add if t not in info.tags)
    return {}


ROUTES: Final[dict[str, Handler]] = {
    "externalcontact/get_corp_tag_list": _get_corp_tag_list,
    "externalcontact/add_corp_tag": _add_corp_tag,
    "externalcontact/edit_corp_tag": _edit_corp_tag,
    "externalcontact/del_corp_tag": _del_corp_tag,
    "externalcontact/mark_tag": _mark_tag,
}
