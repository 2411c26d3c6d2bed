"""The corp's records as the fake WeCom API keeps them, each with its WeCom JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AppMessage",
    "CorpTag",
    "ExternalContact",
    "FollowInfo",
    "GroupChat",
    "IssuedTicket",
    "IssuedToken",
    "MassSendTask",
    "Member",
    "OAuthCode",
    "TagGroup",
    "WelcomeCode",
]


@dataclass
class Member:
    """A corp member (成员): advisor, manager, compliance officer."""

    userid: str
    name: str
    department: list[int]
    mobile: str = ""
    position: str = ""
    manager: str | None = None  # direct_leader's userid
    gender: int = 0  # 0 unknown, 1 male, 2 female
    email: str = ""
    status: int = 1  # 1 active

    def as_wecom(self) -> dict[str, Any]:
        return {
            "userid": self.userid,
            "name": self.name,
            "department": list(self.department),
            "main_department": self.department[0] if self.department else 1,
            "position": self.position,
            "mobile": self.mobile,
            "gender": str(self.gender),
            "email": self.email,
            "direct_leader": [self.manager] if self.manager else [],
            "status": self.status,
            "alias": "",
            "telephone": "",
            "avatar": "",
            "thumb_avatar": "",
        }


@dataclass
class ExternalContact:
    """A customer (外部联系人): type 1 is a WeChat user, 2 a WeCom user of another corp."""

    external_userid: str
    name: str
    type: int = 1
    gender: int = 0
    unionid: str = ""
    corp_name: str = ""
    corp_full_name: str = ""
    position: str = ""
    avatar: str = ""

    def as_wecom(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "external_userid": self.external_userid,
            "name": self.name,
            "type": self.type,
            "gender": self.gender,
            "avatar": self.avatar,
        }
        if self.unionid:
            out["unionid"] = self.unionid
        if self.type == 2:
            out.update(
                corp_name=self.corp_name, corp_full_name=self.corp_full_name, position=self.position
            )
        return out


@dataclass
class FollowInfo:
    """One member's relation to a customer (follow_user / follow_info)."""

    createtime: int
    remark: str = ""
    description: str = ""
    state: str = ""  # the channel code of the 联系我 QR code that added the customer
    tags: list[str] = field(default_factory=list)  # corp tag ids
    add_way: int = 1
    remark_mobiles: list[str] = field(default_factory=list)
    remark_corp_name: str = ""


@dataclass
class CorpTag:
    id: str
    name: str
    create_time: int
    order: int = 0


@dataclass
class TagGroup:
    group_id: str
    group_name: str
    create_time: int
    order: int = 0
    tags: list[CorpTag] = field(default_factory=list)

    def as_wecom(self, only: set[str] | None = None) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "group_name": self.group_name,
            "create_time": self.create_time,
            "order": self.order,
            "tag": [
                {"id": t.id, "name": t.name, "create_time": t.create_time, "order": t.order}
                for t in self.tags
                if only is None or t.id in only
            ],
        }


@dataclass
class GroupChat:
    """A customer group chat (客户群)."""

    chat_id: str
    name: str
    owner: str
    create_time: int
    notice: str = ""
    status: int = 0  # 0 normal; 1..3 for departed-owner inheritance states
    # {"userid", "type" (1 member, 2 external), "join_time", "join_scene", "invitor"?, "name"}
    members: list[dict[str, Any]] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)


@dataclass
class AppMessage:
    """One app message to one member, as the sandbox recorded it."""

    msgid: str
    touser: str
    msgtype: str
    content: dict[str, Any]
    sent_at: float
    dropped: bool = False
    drop_reason: str | None = None  # "minute_limit", "hour_limit", "duplicate"


@dataclass
class MassSendTask:
    """An ``add_msg_template`` task; results per (sender, customer or chat)."""

    msgid: str
    chat_type: str
    sender: str | None
    text: str | None
    attachments: list[dict[str, Any]]
    created_at: float
    # {"userid", "external_userid" | "chat_id", "status", "send_time"?}
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WelcomeCode:
    code: str
    userid: str
    external_userid: str
    issued_at: float
    used_at: float | None = None


@dataclass
class IssuedToken:
    token: str
    kind: str
    issued_at: float
    expires_in: int
    invalidated: bool = False
    force_expired: bool = False

    def expired(self, now: float) -> bool:
        return self.force_expired or now >= self.issued_at + self.expires_in


@dataclass
class IssuedTicket:
    """An app's jsapi_ticket (``ticket/get?type=agent_config``): signs ``agentConfig``."""

    ticket: str
    agent_id: int
    issued_at: float
    expires_in: int

    def expired(self, now: float) -> bool:
        return now >= self.issued_at + self.expires_in


@dataclass
class OAuthCode:
    """A code the OAuth redirect hands a page: one ``auth/getuserinfo``, within 5 minutes."""

    code: str
    userid: str  # a member's userid; "" for someone outside the corp (an openid answer)
    agent_id: int
    issued_at: float
    used_at: float | None = None
