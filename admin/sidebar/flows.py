"""The sidebar's use cases: sign an advisor in by WeCom, sign ``agentConfig``, read the
current customer or group within the advisor's reach, and record an override.

As elsewhere in admin: ``check_*`` validates without side effects, ``do_*`` changes
state and writes its audit entry in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from admin import security
from admin import service as admin_service
from admin.customers import flows as customer_flows
from admin.flows import FieldError, NotFound, operator_actor
from admin.models import Operator
from admin.sidebar.auth import PREFIX, Caller, Sidebar
from bot import customers as bot_customers
from bot import models as bot_models
from bot import originals as bot_originals
from bot import service as bot_service
from bot.flows import ALERT_INTENTS, CATEGORY_LABELS, mask_free_text
from bot.outbox import mask_external_userid
from bot.precheck import CheckGate
from bot.wecom.oauth import OAuthIdentity, agent_config_signature
from compliance_nlp.types import Turn
from core import audit
from core.audit import Actor
from core.crypto import Keyring
from tagging import service as tagging_service

SIGN_IN_ACTOR = Actor("system", "wecom-oauth", "企业微信登录")

# What the sidebar reads of a conversation: the turns the pipeline would hand the model
# (bot.pipeline: 8 text turns within a day) and a month of the customer's intents.
CONTEXT_TURNS = 8
CONTEXT_WINDOW = timedelta(hours=24)
RECENT_MESSAGES = 40
INTENT_WINDOW = timedelta(days=30)
INTENTS_SHOWN = 5

TEXT_MAX = 2000  # WeCom's text message: 2,048 bytes is its documented ceiling for app text
REASON_MIN = 4
REASON_MAX = 500
_KEY_RE = re.compile(r"^[A-Za-z0-9-]{8,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_\-@.]{1,64}$")

SENTIMENT_LABELS = {"negative": "负面", "neutral": "中性", "positive": "正面"}
SOURCE_LABELS = {"manual": "手动", "rule": "规则", "wecom": "企业微信", "import": "导入"}
# Drawn by the sidebar itself (compact, with why), so not repeated as a console panel.
NATIVE_PANELS = frozenset({"tagging.tags"})


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ signing in


class Refused(Exception):
    """The member may not use the sidebar; ``reason`` is shown (zh-CN)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,56}$")


def account_name(userid: str) -> str:
    """A console login name for a member's provisioned account (never signed in with)."""
    if _NAME_OK.match(userid):
        return f"wecom-{userid}"
    return "wecom-" + hashlib.sha256(userid.encode()).hexdigest()[:16]


async def _account_for(userid: str) -> Operator | None:
    """The account linked to this WeCom member: an advisor account first."""
    found = await admin_service.operators_by_wecom_userid(userid=userid)
    found.sort(key=lambda op: (op.role != "advisor", op.status != "active", op.id))
    return found[0] if found else None


async def do_sign_in(
    *, identity: OAuthIdentity, source: str, auto_provision: bool, display_name: str = ""
) -> Operator:
    """The member behind a verified OAuth code, as the advisor account the sidebar runs as.

    Every attempt is audited.  A member seen for the first time gets an advisor account
    when ``auto_provision`` is on (WeCom vouches for them; the account has a random
    password nobody knows, so it never opens the console by password).
    """
    if not identity.userid:
        await audit.append_alone(
            actor=SIGN_IN_ACTOR,
            action="auth.sign_in",
            target="operator:unknown",
            result="failure",
            source=source,
            detail={"via": "wecom_oauth", "reason": "not_a_member"},
        )
        raise Refused("仅限本企业成员在企业微信中使用。")
    userid = identity.userid
    op = await _account_for(userid)
    if op is None and not auto_provision:
        await audit.append_alone(
            actor=SIGN_IN_ACTOR,
            action="auth.sign_in",
            target="operator:unknown",
            result="failure",
            source=source,
            detail={"via": "wecom_oauth", "reason": "no_account", "wecom_userid": userid},
        )
        raise Refused("你的企业微信账号尚未开通 siyu，请联系管理员。")
    if op is not None and op.status != "active":
        await audit.append_alone(
            actor=operator_actor(op),
            action="auth.sign_in",
            target=f"operator:{op.id}",
            result="disabled",
            source=source,
            detail={"via": "wecom_oauth"},
        )
        raise Refused("你的 siyu 账号已停用，请联系管理员。")
    async with in_transaction() as conn:
        if op is None:
            op = await _provision(conn=conn, userid=userid, display_name=display_name)
            await audit.append(
                conn=conn,
                actor=SIGN_IN_ACTOR,
                action="operator.create",
                target=f"operator:{op.id}",
                source=source,
                detail={"name": op.name, "role": op.role, "wecom_userid": userid},
            )
        await admin_service.record_sign_in(conn=conn, operator_id=op.id, at=now())
        await audit.append(
            conn=conn,
            actor=operator_actor(op),
            action="auth.sign_in",
            target=f"operator:{op.id}",
            source=source,
            detail={"via": "wecom_oauth", "surface": "sidebar"},
        )
    return op


async def _provision(*, conn: Any, userid: str, display_name: str) -> Operator:
    name = account_name(userid)
    password_hash = security.hash_password(secrets.token_urlsafe(32))
    for attempt in range(3):
        candidate = name if attempt == 0 else f"{name[:56]}-{secrets.token_hex(3)}"
        try:
            async with in_transaction() as inner:  # a savepoint: a taken name is retried
                op = await admin_service.insert_operator(
                    conn=inner,
                    name=candidate,
                    display_name=(display_name or userid)[:64],
                    role="advisor",
                    password_hash=password_hash,
                    must_change_password=True,
                )
                await admin_service.update_operator(
                    conn=inner, operator_id=op.id, wecom_userid=userid
                )
                op.wecom_userid = userid
                return op
        except IntegrityError:
            continue
    raise Refused("无法开通账号，请联系管理员。")


# ------------------------------------------------------------------ agentConfig


def page_origin(request: web.Request, sidebar: Sidebar) -> str:
    if sidebar.settings.public_url:
        parts = urlsplit(sidebar.settings.public_url)
        return f"{parts.scheme}://{parts.netloc}"
    return str(request.url.origin())


def check_page_url(url: str, *, origin: str) -> str:
    """The page to sign: one of the sidebar's own pages, without its fragment.

    Signing any URL given would lend the app's identity (and its customer data through
    the JS-SDK) to someone else's page.
    """
    url = url.split("#", 1)[0]
    if len(url) > 2048 or not url.startswith(origin + PREFIX):
        raise FieldError("url", "只能为侧边栏页面签名")
    return url


@dataclass(frozen=True)
class AgentConfig:
    corp_id: str
    agent_id: int
    timestamp: int
    nonce: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        # The shape @wecom/jssdk's getAgentConfigSignature returns.
        return {
            "corpId": self.corp_id,
            "agentId": self.agent_id,
            "timestamp": self.timestamp,
            "nonceStr": self.nonce,
            "signature": self.signature,
        }


async def agent_config(*, sidebar: Sidebar, url: str) -> AgentConfig:
    if sidebar.tickets is None:
        raise FieldError("url", "未配置企业微信应用，无法签名")
    ticket = await sidebar.tickets.ticket()
    timestamp = int(time.time())
    nonce = secrets.token_urlsafe(12)
    return AgentConfig(
        corp_id=sidebar.corp_id,
        agent_id=sidebar.agent_id,
        timestamp=timestamp,
        nonce=nonce,
        signature=agent_config_signature(ticket=ticket, nonce=nonce, timestamp=timestamp, url=url),
    )


# ------------------------------------------------------------------ the current customer


def check_external_userid(raw: str) -> str:
    if not _ID_RE.match(raw):
        raise FieldError("external_userid", "客户标识无效")
    return raw


def viewer_for(caller: Caller) -> customer_flows.Viewer:
    """The customer pages' viewer, bounded to this advisor's own book."""
    return customer_flows.Viewer(
        principal=caller.principal,
        reach=frozenset({caller.userid}),
        masked=caller.principal.role in customer_flows.MASKED_ROLES,
    )


@dataclass(frozen=True)
class TagLine:
    name: str
    colour: str
    source: str
    why: str


@dataclass(frozen=True)
class IntentLine:
    intent: str
    label: str
    sentiment: str
    sentiment_label: str
    at: datetime
    excerpt: str


@dataclass(frozen=True)
class Mood:
    """The customer's recent sentiment: counts over their last messages, the latest."""

    counts: dict[str, int]
    latest: str
    latest_label: str


@dataclass(frozen=True)
class SidebarCustomer:
    card: customer_flows.CustomerCard
    remark: str
    risk_level: str
    tags: list[TagLine]
    intents: list[IntentLine]
    mood: Mood | None
    alerts: list[customer_flows.AlertCard]
    panels: list[customer_flows.PanelView]
    thread: list[dict[str, str]] = field(default_factory=list)


def _thread(messages: Sequence[bot_models.Message], *, at: datetime) -> list[dict[str, str]]:
    """The turns before the line being written, oldest first, as the check reads them."""
    turns = [
        {"role": m.sender_role, "text": m.masked_text}
        for m in reversed(messages)
        if m.masked_text
        and m.sender_role in ("advisor", "customer")
        and m.msgtime >= at - CONTEXT_WINDOW
    ]
    return turns[-CONTEXT_TURNS:]


def _intents(messages: Sequence[bot_models.Message], *, at: datetime) -> list[IntentLine]:
    out = []
    for m in messages:  # newest first
        if m.sender_role != "customer" or not m.intent or m.intent == "chitchat":
            continue
        if m.msgtime < at - INTENT_WINDOW:
            break
        text = " ".join(m.masked_text.split())
        out.append(
            IntentLine(
                intent=m.intent,
                label=customer_flows.INTENT_LABELS.get(m.intent, m.intent),
                sentiment=m.sentiment or "",
                sentiment_label=SENTIMENT_LABELS.get(m.sentiment or "", ""),
                at=m.msgtime,
                excerpt=text[:40] + ("…" if len(text) > 40 else ""),
            )
        )
        if len(out) >= INTENTS_SHOWN:
            break
    return out


def _mood(messages: Sequence[bot_models.Message]) -> Mood | None:
    said = [m.sentiment for m in messages if m.sender_role == "customer" and m.sentiment][:10]
    if not said:
        return None
    return Mood(
        counts=dict(Counter(said)),
        latest=said[0],
        latest_label=SENTIMENT_LABELS.get(said[0], said[0]),
    )


def tag_reason(reason: dict[str, Any], applied_by: str, rule_names: dict[int, str]) -> str:
    """Why a customer carries a tag, in a line: the rule, an operator's note, the event."""
    parts: list[str] = []
    rule_id = reason.get("rule_id")
    if rule_id is None and applied_by.startswith("rule:") and applied_by[5:].isdigit():
        rule_id = int(applied_by[5:])
    if isinstance(rule_id, int):
        name = rule_names.get(rule_id)
        parts.append(f"规则「{name}」" if name else f"规则 #{rule_id}")
    ids = reason.get("message_ids")
    if isinstance(ids, list) and ids:
        parts.append(f"依据 {len(ids)} 条消息")
    if reason.get("audience"):
        parts.append(f"人群：{reason['audience']}")
    if reason.get("change_type"):
        parts.append("客户事件")
    if reason.get("note"):
        parts.append(str(reason["note"]))
    if not parts:
        kind, _, ident = applied_by.partition(":")
        if kind == "wecom":
            parts.append(f"企业微信中由 {ident} 打标" if ident else "企业微信中打标")
        elif kind == "import":
            parts.append("机构数据导入")
        elif kind == "operator":
            parts.append("运营手动打标")
    return "；".join(parts)


async def _tags(customer_id: int) -> list[TagLine]:
    current = await tagging_service.tags_of_customer(customer_id=customer_id)
    rule_ids = {
        int(c.reason["rule_id"]) for c in current if isinstance(c.reason.get("rule_id"), int)
    }
    rule_ids |= {
        int(c.applied_by.split(":", 1)[1])
        for c in current
        if c.applied_by.startswith("rule:") and c.applied_by.split(":", 1)[1].isdigit()
    }
    names = await tagging_service.rule_names(ids=rule_ids)
    out = []
    for c in current:
        why = tag_reason(dict(c.reason or {}), c.applied_by, names)
        out.append(
            TagLine(
                name=c.tag.name,
                colour=c.tag.colour,
                source=SOURCE_LABELS.get(c.source.value, c.source.value),
                why=why,
            )
        )
    return out


async def customer_context(
    request: web.Request, *, caller: Caller, external_userid: str
) -> SidebarCustomer:
    """The customer this advisor is chatting with, or NotFound (unknown or not theirs)."""
    external_userid = check_external_userid(external_userid)
    viewer = viewer_for(caller)
    customer_id = await bot_customers.customer_id_of(external_userid=external_userid)
    if customer_id is None:
        raise NotFound(f"customer:{mask_external_userid(external_userid)}")
    card = await customer_flows.customer_for(viewer=viewer, customer_id=customer_id)
    follow = next((f for f in card.active_follows if f.advisor_userid == caller.userid), None)
    if follow is None:
        # Followed once, no longer (the customer deleted the advisor): not in the chat.
        raise NotFound(customer_flows.customer_target(customer_id))
    at = now()
    messages = await bot_customers.timeline(
        customer_id=customer_id, advisors=viewer.reach, before_id=None, limit=RECENT_MESSAGES
    )
    alerts = [
        a
        for a in await customer_flows.alerts(viewer=viewer, card=card)
        if a.kind in ALERT_INTENTS and a.status == "open"
    ]
    panels = [
        p
        for p in await customer_flows.panels(request, viewer=viewer, card=card, surface="sidebar")
        if p.key not in NATIVE_PANELS
    ]
    risk = next((value for name, _label, value in card.attributes if name == "risk_level"), "")
    return SidebarCustomer(
        card=card,
        remark=follow.remark,
        risk_level=risk,
        tags=await _tags(customer_id),
        intents=_intents(messages, at=at),
        mood=_mood(messages),
        alerts=alerts,
        panels=panels,
        thread=_thread(messages, at=at),
    )


@dataclass(frozen=True)
class SidebarGroup:
    chat: bot_models.GroupChat
    thread: list[dict[str, str]]
    intents: list[IntentLine]


async def group_context(*, caller: Caller, chat_id: str) -> SidebarGroup:
    if not _ID_RE.match(chat_id):
        raise FieldError("chat_id", "群标识无效")
    chat = await bot_service.group_chat_in_reach(chat_id=chat_id, advisor_userid=caller.userid)
    if chat is None:
        raise NotFound(f"group_chat:{chat_id}")
    messages = await bot_service.room_messages(roomid=chat_id, limit=RECENT_MESSAGES)
    at = now()
    return SidebarGroup(
        chat=chat, thread=_thread(messages, at=at), intents=_intents(messages, at=at)
    )


# ------------------------------------------------------------------ the override


def check_override(*, text: str, reason: str, key: str) -> tuple[str, str, str]:
    text = text.strip()
    if not text:
        raise FieldError("text", "请输入要发送的内容")
    if len(text) > TEXT_MAX:
        raise FieldError("text", f"内容最多 {TEXT_MAX} 个字")
    reason = " ".join(reason.split())
    if len(reason) < REASON_MIN:
        raise FieldError("reason", f"请说明仍要发送的理由（至少 {REASON_MIN} 个字）")
    if len(reason) > REASON_MAX:
        raise FieldError("reason", f"理由最多 {REASON_MAX} 个字")
    if not _KEY_RE.match(key):
        raise FieldError("key", "请求标识无效，请刷新页面")
    return text, mask_free_text(reason), key


@dataclass(frozen=True)
class Overridden:
    case_id: int
    categories: list[str]
    # False when this key was recorded before (a retried request): nothing new written.
    created: bool


async def do_override(
    *,
    caller: Caller,
    source: str,
    text: str,
    reason: str,
    key: str,
    external_userid: str | None,
    chat_id: str | None,
    gate: CheckGate,
    keyring: Keyring,
) -> Overridden:
    """The advisor sends a line with a violation anyway: judge it here, open a case.

    The verdict is the server's own (the page's is never trusted): a line with no
    violation has nothing to override.  The line is kept as the pipeline keeps
    messages — masked text and findings, no personal number in clear, the original
    sealed (``bot.originals``) for a reviewer's audited unmask — as a message of
    source ``sidebar`` with a review case, and the reason goes to the audit log
    against that case, so the reviewer reads it on the case page.  ``key`` (one per
    attempt, from the page) makes a retried request return the same case.
    """
    text, reason, key = check_override(text=text, reason=reason, key=key)
    msgid = f"override-{key}"
    existing = await bot_service.message_id_by_key(source="sidebar", msgid=msgid)
    if existing is not None:
        cases = await bot_customers.cases_of_messages(message_ids=[existing])
        case = cases.get(existing)
        if case is None:
            raise NotFound(f"message:{existing}")
        return Overridden(case_id=case.id, categories=list(case.categories), created=False)
    customer_id: int | None = None
    thread: list[dict[str, str]]
    if chat_id:
        group = await group_context(caller=caller, chat_id=chat_id)
        thread, roomid, receivers, direction = group.thread, chat_id, [], "group"
    elif external_userid:
        external_userid = check_external_userid(external_userid)
        viewer = viewer_for(caller)
        customer_id = await bot_customers.customer_id_of(external_userid=external_userid)
        if customer_id is None:
            raise NotFound("customer")
        await customer_flows.customer_for(viewer=viewer, customer_id=customer_id)
        messages = await bot_customers.timeline(
            customer_id=customer_id, advisors=viewer.reach, before_id=None, limit=RECENT_MESSAGES
        )
        thread, roomid = _thread(messages, at=now()), None
        receivers, direction = [external_userid], "advisor_to_customer"
    else:
        raise FieldError("external_userid", "请从与客户的聊天中打开侧边栏")
    context = tuple(Turn(role=t["role"], text=t["text"]) for t in thread)  # type: ignore[arg-type]
    analysis = await gate.analyze(text, "advisor", context)
    categories = sorted({v.category for v in analysis.violations if v.severity == "violation"})
    if not categories:
        raise FieldError("text", "这段话没有违规项，无需放行，可直接发送")
    at = now()
    async with in_transaction() as conn:
        advisor_ids = await bot_service.ensure_advisors(conn=conn, userids=[caller.userid])
        inserted = await bot_service.insert_messages(
            conn=conn,
            rows=[
                {
                    "msgid": msgid,
                    "source": "sidebar",
                    "direction": direction,
                    "sender_id": caller.userid,
                    "sender_role": "advisor",
                    "receiver_ids": receivers,
                    "roomid": roomid,
                    "msgtime": at,
                    "msgtype": "text",
                    "action": "send",
                    "masked_text": analysis.masked_text,
                    "original_sealed": bot_originals.seal_text_original(
                        keyring, source="sidebar", msgid=msgid, text=text
                    ),
                    "intent": None,
                    "sentiment": analysis.sentiment,
                    "has_violation": True,
                    "analysis": analysis.to_dict(),
                    "customer_id": customer_id,
                    "advisor_id": advisor_ids[caller.userid],
                }
            ],
        )
        message_id = inserted.get(("sidebar", msgid))
        if message_id is None:  # the same key, raced: the other request recorded it
            raise FieldError("key", "该请求已提交，请稍候")
        await bot_service.open_review_cases(
            conn=conn,
            rows=[
                {
                    "message_id": message_id,
                    "advisor_userid": caller.userid,
                    "categories": categories,
                    "severity": "violation",
                }
            ],
        )
        case = await bot_service.case_of_message(conn=conn, message_id=message_id)
        assert case is not None  # opened just above, in this transaction
        case_id = case.id
        await audit.append(
            conn=conn,
            actor=operator_actor(caller.operator),
            action="sidebar.override",
            target=f"review_case:{case_id}",
            source=source,
            at=at,
            detail={
                "reason": reason,
                "categories": categories,
                "labels": [CATEGORY_LABELS.get(c, c) for c in categories],
                "message": message_id,
                "to": chat_id or mask_external_userid(external_userid or ""),
            },
        )
    return Overridden(case_id=case_id, categories=categories, created=True)
