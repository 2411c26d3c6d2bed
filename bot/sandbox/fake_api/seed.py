"""Demo seed data: the one source of the sandbox corp's names.

``seed_demo_corp`` builds a believable wealth-management corp (departments, a manager,
five advisors, a compliance officer, corp tags, ~30 customers, two customer group
chats); the traffic simulator draws new customers' names from the same lists.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from bot.sandbox.fake_api.records import ExternalContact, FollowInfo, GroupChat, Member

if TYPE_CHECKING:
    from bot.sandbox.fake_api.state import SandboxState

__all__ = [
    "ADVISORS",
    "COMPLIANCE_OFFICER",
    "CUSTOMER_GIVEN_NAMES",
    "CUSTOMER_SURNAMES",
    "DEPARTMENTS",
    "MANAGER",
    "TAG_GROUPS",
    "seed_demo_corp",
]

#: Department id → name; 1 is the corp itself.
DEPARTMENTS: Final[dict[int, str]] = {
    1: "示例银行",
    2: "财富管理部",
    3: "私人银行部",
    4: "零售金融部",
}

#: Members as (userid, name, department, position, gender).
MANAGER: Final = ("liuyang", "刘洋", 2, "财富管理部总经理", 1)
ADVISORS: Final[list[tuple[str, str, int, str, int]]] = [
    ("zhangwei", "张伟", 2, "客户经理", 1),
    ("wangfang", "王芳", 2, "理财经理", 2),
    ("lina", "李娜", 3, "私人银行投资顾问", 2),
    ("chenjie", "陈杰", 4, "客户经理", 1),
    ("zhaomin", "赵敏", 2, "投资顾问", 2),
]
COMPLIANCE_OFFICER: Final = ("sunli", "孙丽", 2, "合规专员", 2)

#: Corp tag groups as (group name, tag names), in display order.
TAG_GROUPS: Final[list[tuple[str, list[str]]]] = [
    ("客户等级", ["普通客户", "金卡客户", "白金客户", "私行客户"]),
    ("风险偏好", ["C1保守型", "C2稳健型", "C3平衡型", "C4成长型", "C5进取型"]),
    ("产品兴趣", ["存款", "银行理财", "公募基金", "保险", "贵金属"]),
]

#: Customers' names are one surname + one given name.
CUSTOMER_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
CUSTOMER_GIVEN_NAMES: Final[list[str]] = [
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

#: The 联系我 channel codes seeded customers came through ("" = none).
_CHANNELS: Final = ["", "", "wealth_salon_2024", "branch_lobby_qr", "fund_webinar"]
_REMARKS: Final = ["老客户", "新客户", "转介绍"]
#: Customer group chats as (name, index of the owning advisor).
_GROUP_CHATS: Final = [("财富沙龙客户群", 0), ("基金定投交流群", 4)]


def _mobile(rng: random.Random) -> str:
    return rng.choice(["138", "139", "186", "137", "159"]) + f"{rng.randint(0, 99_999_999):08d}"


def seed_demo_corp(state: SandboxState, rng: random.Random) -> None:
    """Fill ``state`` with the demo corp, drawing every random choice from ``rng``."""
    now = state.clock()
    state.departments.update(DEPARTMENTS)
    m_uid, m_name, m_dept, m_pos, m_gender = MANAGER
    manager = state.add_member(Member(m_uid, m_name, [m_dept], _mobile(rng), m_pos, None, m_gender))
    advisors = [
        state.add_member(Member(uid, name, [dept], _mobile(rng), pos, manager.userid, g))
        for uid, name, dept, pos, g in ADVISORS
    ]
    c_uid, c_name, c_dept, c_pos, c_gender = COMPLIANCE_OFFICER
    state.add_member(Member(c_uid, c_name, [c_dept], _mobile(rng), c_pos, manager.userid, c_gender))

    level, risk, interest = [
        state.add_tag_group(group_name, tag_names, order=order)
        for order, (group_name, tag_names) in enumerate(TAG_GROUPS)
    ]

    surnames = CUSTOMER_SURNAMES
    given = CUSTOMER_GIVEN_NAMES
    channels = _CHANNELS
    used: set[str] = set()
    for i in range(30):
        name = rng.choice(surnames) + rng.choice(given)
        while name in used:
            name = rng.choice(surnames) + rng.choice(given)
        used.add(name)
        is_wecom_user = i % 10 == 9
        contact = ExternalContact(
            external_userid=state.new_id("wm", 30),
            name=name,
            type=2 if is_wecom_user else 1,
            gender=rng.choice([1, 2]),
            unionid="" if is_wecom_user else state.new_id("o", 27),
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
        state.add_contact(
            contact,
            {
                adv.userid: FollowInfo(
                    createtime=int(now - rng.randint(1, 365) * 86400 - rng.randint(0, 86399)),
                    remark=f"{name}（{rng.choice(_REMARKS)}）",
                    state=rng.choice(channels),
                    tags=list(tags),
                    add_way=rng.choice([1, 2, 3]),
                )
                for adv in followers
            },
        )

    for chat_name, owner_index in _GROUP_CHATS:
        owner = advisors[owner_index]
        customers = [ext for ext in state.follows[owner.userid]][:5]
        created = int(now - rng.randint(30, 200) * 86400)
        chat = GroupChat(
            state.new_id("wr", 30),
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
                    "name": state.contacts[ext].name,
                    "unionid": state.contacts[ext].unionid,
                }
            )
        state.group_chats[chat.chat_id] = chat
