"""A fake WeCom server API on loopback, for ``siyu demo`` and the tests.

It serves WeCom's real paths (``/cgi-bin/gettoken``, ``/cgi-bin/user/get``,
``/cgi-bin/message/send``, ``/cgi-bin/externalcontact/...``) with WeCom's JSON shapes and
its real errcodes and errmsgs, so code that works here works against WeCom:

* tokens: ``gettoken`` answers the same token while it is valid (7,200 s), as WeCom
  does; 41001 without a token, 40014 for an unknown/invalidated one, 42001 once expired;
* limits WeCom enforces silently or loudly: app messages past 30 a minute / 1,000 an
  hour per member are *dropped* with errcode 0 (recorded as dropped here); a
  WelcomeCode works once within 20 s, then 41051; each customer receives at most one
  mass send a day (status 3 in ``get_groupmsg_send_result``); per-API frequency limits
  answer 45009;
* faults on demand: ``state.inject("message/send", -1, times=2)``.

Time comes from ``SandboxState.clock`` so tests drive it without sleeping.  Control
endpoints under ``/sandbox/...`` expose the same levers over HTTP.  They are
unauthenticated: the server binds to loopback and exists only for demos and tests.
API changes produce no callbacks here, exactly as on WeCom.
"""

from __future__ import annotations

import json
import random
import secrets as pysecrets
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from aiohttp import web

__all__ = [
    "AppMessage",
    "CorpTag",
    "ExternalContact",
    "FollowInfo",
    "GroupChat",
    "IssuedToken",
    "MassSendTask",
    "Member",
    "SandboxState",
    "TagGroup",
    "WelcomeCode",
    "build_fake_wecom_app",
    "start_fake_wecom",
]

#: WeCom's errmsg for each errcode the sandbox answers (全局错误码).
ERRMSGS: Final[dict[int, str]] = {
    -1: "system busy",
    40001: "invalid credential",
    40003: "invalid userid",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40050: "chatid not found",
    40056: "invalid agentid",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "UserTag Name Already Exist",
    40096: "invalid external userid",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41051: "externaluser has started chatting",
    41096: "welcome msg is being distributed",
    42001: "access_token expired",
    42009: "access_token expired",
    44004: "empty content",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    48002: "api forbidden",
    60020: "not allow to access from your ip",
    60111: "userid not found",
    60123: "invalid party id",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
}

_CHINA = timezone(timedelta(hours=8))  # no DST in China; "a day" for WeCom is Beijing time
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_APP_MESSAGE_MINUTE_LIMIT: Final = 30
_APP_MESSAGE_HOUR_LIMIT: Final = 1000


class WeComApiError(Exception):
    """Raised by a handler to answer ``{"errcode": ..., "errmsg": ...}``."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail


# --------------------------------------------------------------------- records


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


# ----------------------------------------------------------------------- state


@dataclass
class SandboxState:
    """Everything the fake corp knows; mutate it directly or through ``/sandbox/...``."""

    corp_id: str = "wwsandbox0000000001"
    secrets: dict[str, str] = field(
        repr=False,
        default_factory=lambda: {
            "app": "sandbox-app-secret-" + pysecrets.token_urlsafe(16),
            "contact": "sandbox-contact-secret-" + pysecrets.token_urlsafe(16),
        },
    )
    agent_id: int = 1000002
    clock: Callable[[], float] = time.time
    token_expires_in: int = 7200
    welcome_code_ttl_s: float = 20.0
    #: WeCom's per-member app-message limits; the excess is dropped silently.
    member_minute_limit: int = _APP_MESSAGE_MINUTE_LIMIT
    member_hour_limit: int = _APP_MESSAGE_HOUR_LIMIT
    #: Per-API (max calls, window seconds) → 45009 past it.  ``default_rate_limit``
    #: applies to APIs not listed (WeCom: ~10,000 a minute per API); ``None`` = none.
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    default_rate_limit: tuple[int, float] | None = (10_000, 60.0)
    #: Members confirm mass sends at once (as if they tapped 发送 in WeCom).
    auto_confirm_mass_send: bool = True

    departments: dict[int, str] = field(default_factory=lambda: {1: "总部"})
    members: dict[str, Member] = field(default_factory=dict)
    contacts: dict[str, ExternalContact] = field(default_factory=dict)
    follows: dict[str, dict[str, FollowInfo]] = field(default_factory=dict)
    tag_groups: dict[str, TagGroup] = field(default_factory=dict)
    group_chats: dict[str, GroupChat] = field(default_factory=dict)
    welcome_codes: dict[str, WelcomeCode] = field(default_factory=dict)
    welcome_messages: list[dict[str, Any]] = field(default_factory=list)
    app_messages: list[AppMessage] = field(default_factory=list)
    mass_sends: dict[str, MassSendTask] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict, repr=False)
    calls: Counter[str] = field(default_factory=Counter)

    _faults: dict[str, deque[int]] = field(default_factory=dict, repr=False)
    _call_times: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _mass_received: dict[str, str] = field(default_factory=dict, repr=False)
    _ids: random.Random = field(default_factory=random.Random, repr=False)

    # -- levers -----------------------------------------------------------

    def inject(self, api: str, errcode: int, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` (e.g. ``"message/send"``) fail with ``errcode``."""
        self._faults.setdefault(_api_name(api), deque()).extend([errcode] * times)

    def expire_tokens(self) -> None:
        """Every issued token now answers 42001, as after its 7,200 s."""
        for issued in self.tokens.values():
            issued.force_expired = True

    def invalidate_tokens(self) -> None:
        """Every issued token now answers 40014 (e.g. the secret was reset)."""
        for issued in self.tokens.values():
            issued.invalidated = True

    def issue_welcome_code(self, *, userid: str, external_userid: str) -> str:
        """A WelcomeCode as carried by an add_external_contact event, issued now."""
        code = self.new_id("", 43)
        self.welcome_codes[code] = WelcomeCode(code, userid, external_userid, self.clock())
        return code

    def delivered_app_messages(self, touser: str | None = None) -> list[AppMessage]:
        return [
            m for m in self.app_messages if not m.dropped and (touser is None or m.touser == touser)
        ]

    def dropped_app_messages(self, touser: str | None = None) -> list[AppMessage]:
        return [
            m for m in self.app_messages if m.dropped and (touser is None or m.touser == touser)
        ]

    def confirm_mass_send(self, msgid: str, userid: str | None = None) -> None:
        """The member(s) tapped 发送: results become 1 sent, 2 not a contact, 3 already sent.

        A customer receives at most one mass send per (Beijing) day; later ones get
        status 3, as WeCom reports them.
        """
        task = self.mass_sends[msgid]
        now = self.clock()
        today = datetime.fromtimestamp(now, _CHINA).date().isoformat()
        for result in task.results:
            if result["status"] != 0 or (userid is not None and result["userid"] != userid):
                continue
            ext = result.get("external_userid")
            if ext is None:  # group chat task
                result.update(status=1, send_time=int(now))
            elif ext not in self.follows.get(result["userid"], {}):
                result["status"] = 2
            elif self._mass_received.get(ext) == today:
                result["status"] = 3
            else:
                self._mass_received[ext] = today
                result.update(status=1, send_time=int(now))

    # -- building the corp --------------------------------------------------

    def new_id(self, prefix: str, length: int = 30) -> str:
        return prefix + "".join(self._ids.choice(_ID_ALPHABET) for _ in range(length))

    def add_member(self, member: Member) -> Member:
        self.members[member.userid] = member
        self.follows.setdefault(member.userid, {})
        return member

    def add_contact(
        self, contact: ExternalContact, followers: Mapping[str, FollowInfo] | None = None
    ) -> ExternalContact:
        self.contacts[contact.external_userid] = contact
        for userid, info in (followers or {}).items():
            self.follows.setdefault(userid, {})[contact.external_userid] = info
        return contact

    def add_tag_group(self, name: str, tag_names: list[str], *, order: int = 0) -> TagGroup:
        now = int(self.clock())
        group = TagGroup(
            self.new_id("et", 22),
            name,
            now,
            order,
            [CorpTag(self.new_id("et", 22), n, now, i) for i, n in enumerate(tag_names)],
        )
        self.tag_groups[group.group_id] = group
        return group

    def find_tag(self, tag_id: str) -> tuple[TagGroup, CorpTag] | None:
        for group in self.tag_groups.values():
            for tag in group.tags:
                if tag.id == tag_id:
                    return group, tag
        return None

    def seed_demo(self, rng: random.Random) -> None:
        """A believable wealth-management corp: 5 advisors, a manager, ~30 customers."""
        self._ids = random.Random(rng.random())
        now = self.clock()
        self.departments.update({1: "示例银行", 2: "财富管理部", 3: "私人银行部", 4: "零售金融部"})
        manager = self.add_member(
            Member("liuyang", "刘洋", [2], _mobile(rng), "财富管理部总经理", None, 1)
        )
        advisors = [
            self.add_member(Member(uid, name, [dept], _mobile(rng), pos, manager.userid, g))
            for uid, name, dept, pos, g in [
                ("zhangwei", "张伟", 2, "客户经理", 1),
                ("wangfang", "王芳", 2, "理财经理", 2),
                ("lina", "李娜", 3, "私人银行投资顾问", 2),
                ("chenjie", "陈杰", 4, "客户经理", 1),
                ("zhaomin", "赵敏", 2, "投资顾问", 2),
            ]
        ]
        self.add_member(Member("sunli", "孙丽", [2], _mobile(rng), "合规专员", manager.userid, 2))

        level = self.add_tag_group("客户等级", ["普通客户", "金卡客户", "白金客户", "私行客户"])
        risk = self.add_tag_group(
            "风险偏好", ["C1保守型", "C2稳健型", "C3平衡型", "C4成长型", "C5进取型"], order=1
        )
        interest = self.add_tag_group(
            "产品兴趣", ["存款", "银行理财", "公募基金", "保险", "贵金属"], order=2
        )

        surnames = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
        given = [
            "秀英",
            "桂英",
            "建国",
            "建华",
            "志强",
            "海燕",
            "丽华",
            "伟",
            "静",
            "敏",
            "磊",
            "洋",
            "艳",
            "勇",
            "军",
            "杰",
            "娟",
            "涛",
            "明",
            "超",
            "霞",
            "平",
            "刚",
            "桂兰",
            "文",
            "辉",
            "红梅",
            "玉兰",
            "晓东",
            "子涵",
        ]
        channels = ["", "", "wealth_salon_2024", "branch_lobby_qr", "fund_webinar"]
        used: set[str] = set()
        for i in range(30):
            name = rng.choice(surnames) + rng.choice(given)
            while name in used:
                name = rng.choice(surnames) + rng.choice(given)
            used.add(name)
            is_wecom_user = i % 10 == 9
            contact = ExternalContact(
                external_userid=self.new_id("wm", 30),
                name=name,
                type=2 if is_wecom_user else 1,
                gender=rng.choice([1, 2]),
                unionid="" if is_wecom_user else self.new_id("o", 27),
                corp_name="某科技公司" if is_wecom_user else "",
                corp_full_name="某科技股份有限公司" if is_wecom_user else "",
                position="财务总监" if is_wecom_user else "",
            )
            followers = [advisors[i % len(advisors)]]
            if rng.random() < 0.15:
                followers.append(rng.choice(advisors))
            tags = [rng.choice(level.tags).id, rng.choice(risk.tags).id]
            if rng.random() < 0.7:
                tags.append(rng.choice(interest.tags).id)
            self.add_contact(
                contact,
                {
                    adv.userid: FollowInfo(
                        createtime=int(now - rng.randint(1, 365) * 86400 - rng.randint(0, 86399)),
                        remark=f"{name}（{rng.choice(['老客户', '新客户', '转介绍'])}）",
                        state=rng.choice(channels),
                        tags=list(tags),
                        add_way=rng.choice([1, 2, 3]),
                    )
                    for adv in followers
                },
            )

        for chat_name, owner in [("财富沙龙客户群", advisors[0]), ("基金定投交流群", advisors[4])]:
            customers = [ext for ext in self.follows[owner.userid]][:5]
            created = int(now - rng.randint(30, 200) * 86400)
            chat = GroupChat(
                self.new_id("wr", 30),
                chat_name,
                owner.userid,
                created,
                notice="本群仅作投资者教育交流，不构成投资建议。",
                admins=[],
            )
            chat.members.append(
                {
                    "userid": owner.userid,
                    "type": 1,
                    "join_time": created,
                    "join_scene": 1,
                    "name": owner.name,
                }
            )
            for ext in customers:
                chat.members.append(
                    {
                        "userid": ext,
                        "type": 2,
                        "join_time": created + rng.randint(60, 86400),
                        "join_scene": 3,
                        "invitor": {"userid": owner.userid},
                        "name": self.contacts[ext].name,
                        "unionid": self.contacts[ext].unionid,
                    }
                )
            self.group_chats[chat.chat_id] = chat

    # -- request plumbing ------------------------------------------------------

    def _issue_token(self, kind: str) -> IssuedToken:
        now = self.clock()
        for issued in self.tokens.values():
            # WeCom answers the same token while it is valid.
            if issued.kind == kind and not issued.invalidated and not issued.expired(now):
                return issued
        issued = IssuedToken(pysecrets.token_urlsafe(96), kind, now, self.token_expires_in)
        self.tokens[issued.token] = issued
        return issued

    def _check_rate(self, api: str) -> None:
        limit = self.rate_limits.get(api, self.default_rate_limit)
        if limit is None:
            return
        max_calls, window_s = limit
        now = self.clock()
        times = self._call_times.setdefault(api, deque())
        while times and times[0] <= now - window_s:
            times.popleft()
        if len(times) >= max_calls:
            raise WeComApiError(45009)
        times.append(now)

    def _take_fault(self, api: str) -> int | None:
        queue = self._faults.get(api)
        if queue:
            return queue.popleft()
        return None


STATE_KEY: Final = web.AppKey("sandbox_state", SandboxState)


def _mobile(rng: random.Random) -> str:
    return rng.choice(["138", "139", "186", "137", "159"]) + f"{rng.randint(0, 99_999_999):08d}"


def _api_name(path: str) -> str:
    return path.strip("/").removeprefix("cgi-bin/")


# -------------------------------------------------------------------- handlers

Handler = Callable[[SandboxState, "Call"], dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One API request as the handlers see it."""

    query: Mapping[str, str]
    body: dict[str, Any]
    token: IssuedToken | None


def _required(value: Any) -> Any:
    if value in (None, "", [], {}):
        raise WeComApiError(40058, "missing parameter")
    return value


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WeComApiError(40058, "expected a list of strings")
    return value


def _gettoken(state: SandboxState, call: Call) -> dict[str, Any]:
    corpid = call.query.get("corpid", "")
    corpsecret = call.query.get("corpsecret", "")
    if not corpid:
        raise WeComApiError(41002)
    if not corpsecret:
        raise WeComApiError(41004)
    if corpid != state.corp_id:
        raise WeComApiError(40013)
    kind = next((k for k, v in state.secrets.items() if v and v == corpsecret), None)
    if kind is None:
        raise WeComApiError(40001)
    issued = state._issue_token(kind)
    remaining = int(issued.issued_at + issued.expires_in - state.clock())
    return {"access_token": issued.token, "expires_in": max(remaining, 1)}


def _user_get(state: SandboxState, call: Call) -> dict[str, Any]:
    userid = _required(call.query.get("userid"))
    member = state.members.get(userid)
    if member is None:
        raise WeComApiError(60111)
    return member.as_wecom()


def _user_list(state: SandboxState, call: Call) -> dict[str, Any]:
    try:
        dept = int(_required(call.query.get("department_id")))
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


def _followers(state: SandboxState, external_userid: str) -> list[tuple[str, FollowInfo]]:
    return [
        (uid, rel[external_userid]) for uid, rel in state.follows.items() if external_userid in rel
    ]


def _externalcontact_get(state: SandboxState, call: Call) -> dict[str, Any]:
    ext = _required(call.query.get("external_userid"))
    contact = state.contacts.get(ext)
    if contact is None:
        raise WeComApiError(40096)
    followers = _followers(state, ext)
    if not followers:
        raise WeComApiError(84061)
    return {
        "external_contact": contact.as_wecom(),
        "follow_user": [_follow_user_json(state, uid, info) for uid, info in followers],
        "next_cursor": "",
    }


def _externalcontact_list(state: SandboxState, call: Call) -> dict[str, Any]:
    userid = _required(call.query.get("userid"))
    if userid not in state.members:
        raise WeComApiError(40003)
    customers = list(state.follows.get(userid, {}))
    if not customers:
        raise WeComApiError(84061)  # WeCom's answer for a member with no customers
    return {"external_userid": customers}


def _page(call: Call, *, default_limit: int, max_limit: int) -> tuple[int, int]:
    try:
        offset = int(call.body.get("cursor") or 0)
        limit = int(call.body.get("limit") or default_limit)
    except (TypeError, ValueError):
        raise WeComApiError(40058, "bad cursor or limit") from None
    if not 0 < limit <= max_limit or offset < 0:
        raise WeComApiError(40058, "limit out of range")
    return offset, limit


def _batch_get_by_user(state: SandboxState, call: Call) -> dict[str, Any]:
    userids = _str_list(_required(call.body.get("userid_list")))
    if len(userids) > 100:
        raise WeComApiError(40058, "userid_list over 100")
    offset, limit = _page(call, default_limit=50, max_limit=100)
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


def _get_corp_tag_list(state: SandboxState, call: Call) -> dict[str, Any]:
    tag_ids = set(_str_list(call.body.get("tag_id")))
    group_ids = set(_str_list(call.body.get("group_id")))
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
    new_tags = _required(body.get("tag"))
    if not isinstance(new_tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] for t in new_tags
    ):
        raise WeComApiError(40058, "tag needs names")
    now = int(state.clock())
    group: TagGroup | None
    if body.get("group_id"):
        group = state.tag_groups.get(body["group_id"])
        if group is None:
            raise WeComApiError(40068)
    else:
        name = _required(body.get("group_name"))
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
    target = _required(call.body.get("id"))
    name = call.body.get("name")
    order = call.body.get("order")
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
    tag_ids = _str_list(call.body.get("tag_id"))
    group_ids = _str_list(call.body.get("group_id"))
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
    userid = _required(call.body.get("userid"))
    ext = _required(call.body.get("external_userid"))
    add = _str_list(call.body.get("add_tag"))
    remove = _str_list(call.body.get("remove_tag"))
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
    sender = body.get("sender")
    if sender is not None and sender not in state.members:
        raise WeComApiError(40003)
    task = MassSendTask(
        state.new_id("msg", 30), chat_type, sender, content, list(attachments), state.clock()
    )
    fail_list: list[str] = []
    if chat_type == "single":
        wanted = _str_list(body.get("external_userid"))
        if not wanted and sender is None:
            raise WeComApiError(40058, "external_userid or sender required")
        if not wanted:
            wanted = list(state.follows.get(sender or "", {}))
        for ext in wanted:
            followers = [uid for uid, _ in _followers(state, ext)]
            if sender is not None:
                followers = [uid for uid in followers if uid == sender]
            if ext not in state.contacts or not followers:
                fail_list.append(ext)
                continue
            task.results.extend(
                {"userid": uid, "external_userid": ext, "status": 0} for uid in followers
            )
    else:
        chats = _str_list(body.get("chat_id_list"))
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
    msgid = _required(call.body.get("msgid"))
    userid = _required(call.body.get("userid"))
    task = state.mass_sends.get(msgid)
    if task is None:
        raise WeComApiError(40058, "invalid msgid")
    offset, limit = _page(call, default_limit=500, max_limit=1000)
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


def _send_welcome_msg(state: SandboxState, call: Call) -> dict[str, Any]:
    code = _required(call.body.get("welcome_code"))
    text = call.body.get("text")
    content = text.get("content") if isinstance(text, dict) else None
    if not content and not call.body.get("attachments"):
        raise WeComApiError(40058, "text or attachments required")
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


def _groupchat_list(state: SandboxState, call: Call) -> dict[str, Any]:
    status_filter = int(call.body.get("status_filter") or 0)
    owner_filter = call.body.get("owner_filter") or {}
    owners = set(
        _str_list(owner_filter.get("userid_list") if isinstance(owner_filter, dict) else None)
    )
    offset, limit = _page(call, default_limit=100, max_limit=1000)
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
    chat = state.group_chats.get(_required(call.body.get("chat_id")))
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
    "gettoken": _gettoken,
    "user/get": _user_get,
    "user/list": _user_list,
    "message/send": _message_send,
    "externalcontact/get": _externalcontact_get,
    "externalcontact/list": _externalcontact_list,
    "externalcontact/batch/get_by_user": _batch_get_by_user,
    "externalcontact/get_corp_tag_list": _get_corp_tag_list,
    "externalcontact/add_corp_tag": _add_corp_tag,
    "externalcontact/edit_corp_tag": _edit_corp_tag,
    "externalcontact/del_corp_tag": _del_corp_tag,
    "externalcontact/mark_tag": _mark_tag,
    "externalcontact/add_msg_template": _add_msg_template,
    "externalcontact/get_groupmsg_send_result": _get_groupmsg_send_result,
    "externalcontact/send_welcome_msg": _send_welcome_msg,
    "externalcontact/groupchat/list": _groupchat_list,
    "externalcontact/groupchat/get": _groupchat_get,
}


# ------------------------------------------------------------------ the server


def _answer(payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _error_body(errcode: int, request: web.Request) -> dict[str, Any]:
    # WeCom appends a hint, the caller's IP and a link to its error-code lookup.
    hint = f"{int(time.time())}_{pysecrets.randbelow(100)}_{pysecrets.token_hex(16)}"
    errmsg = (
        f"{ERRMSGS.get(errcode, 'unknown error')}, hint: [{hint}], "
        f"from ip: {request.remote or '127.0.0.1'}, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )
    return {"errcode": errcode, "errmsg": errmsg}


def _check_token(state: SandboxState, query: Mapping[str, str]) -> IssuedToken:
    token = query.get("access_token")
    if not token:
        raise WeComApiError(41001)
    issued = state.tokens.get(token)
    if issued is None or issued.invalidated:
        raise WeComApiError(40014)
    if issued.expired(state.clock()):
        raise WeComApiError(42001)
    return issued


async def _api(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    api = _api_name(request.match_info["api"])
    handler = ROUTES.get(api)
    if handler is None:
        raise web.HTTPNotFound()
    state.calls[api] += 1
    try:
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                parsed = json.loads(await request.read() or b"{}")
            except ValueError:
                raise WeComApiError(47001) from None
            if not isinstance(parsed, dict):
                raise WeComApiError(47001)
            body = parsed
        token = None if api == "gettoken" else _check_token(state, request.query)
        state._check_rate(api)
        fault = state._take_fault(api)
        if fault is not None:
            raise WeComApiError(fault)
        result = handler(state, Call(request.query, body, token))
    except WeComApiError as exc:
        return _answer(_error_body(exc.errcode, request))
    return _answer({"errcode": 0, "errmsg": "ok", **result})


async def _control_inject(request: web.Request) -> web.Response:
    data = await request.json()
    request.app[STATE_KEY].inject(str(data["api"]), int(data["errcode"]), int(data.get("times", 1)))
    return web.json_response({"ok": True})


async def _control_expire(request: web.Request) -> web.Response:
    request.app[STATE_KEY].expire_tokens()
    return web.json_response({"ok": True})


async def _control_invalidate(request: web.Request) -> web.Response:
    request.app[STATE_KEY].invalidate_tokens()
    return web.json_response({"ok": True})


async def _control_app_messages(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    touser = request.query.get("touser")
    rows = [asdict(m) for m in state.app_messages if touser is None or m.touser == touser]
    return _answer({"app_messages": rows})


async def _control_calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": dict(request.app[STATE_KEY].calls)})


async def _control_welcome_code(request: web.Request) -> web.Response:
    data = await request.json()
    code = request.app[STATE_KEY].issue_welcome_code(
        userid=str(data["userid"]), external_userid=str(data["external_userid"])
    )
    return web.json_response({"welcome_code": code})


async def _control_confirm(request: web.Request) -> web.Response:
    data = await request.json()
    state = request.app[STATE_KEY]
    if data.get("msgid") not in state.mass_sends:
        raise web.HTTPNotFound()
    state.confirm_mass_send(str(data["msgid"]), data.get("userid"))
    return web.json_response({"ok": True})


def build_fake_wecom_app(state: SandboxState) -> web.Application:
    """The fake WeCom API as an aiohttp app: ``/cgi-bin/...`` plus ``/sandbox/...`` levers."""
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_route("*", "/cgi-bin/{api:.+}", _api)
    app.router.add_post("/sandbox/inject", _control_inject)
    app.router.add_post("/sandbox/tokens/expire", _control_expire)
    app.router.add_post("/sandbox/tokens/invalidate", _control_invalidate)
    app.router.add_get("/sandbox/app_messages", _control_app_messages)
    app.router.add_get("/sandbox/calls", _control_calls)
    app.router.add_post("/sandbox/welcome_codes", _control_welcome_code)
    app.router.add_post("/sandbox/mass_send/confirm", _control_confirm)
    return app


async def start_fake_wecom(
    state: SandboxState, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the fake API; returns the runner (``await runner.cleanup()``) and base URL.

    The access log is off: its request lines would carry ``corpsecret`` and
    ``access_token`` query parameters.
    """
    runner = web.AppRunner(build_fake_wecom_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"
