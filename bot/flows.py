"""Use cases of the edge: store a message or an event, with its consequences.

Each ``do_*`` owns one transaction: the row, the hooks of other domains, the
review case, the alerts and their outbox rows commit together or not at all.
The row's unique key makes a redelivery a no-op, so a worker that crashes
after commit and before XACK does no harm.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import outbox
from bot import service as bot_service
from bot.hooks import Hooks, StoredEvent, StoredMessage, frozen_fields
from bot.models import RelationStatus
from bot.schemas import Direction, EventDraft, MessageDraft, StoreResult
from compliance_nlp import Analysis
from core.crypto import Keyring

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")

# Reviewer-facing names of the compliance categories (compliance_nlp taxonomy).
CATEGORY_LABELS = {
    "guaranteed_return": "承诺保本保收益",
    "misleading_promotion": "误导性宣传",
    "off_book_dealing": "飞单/私下交易",
    "improper_inducement": "违规返利/利益输送",
    "suitability_evasion": "规避适当性管理",
    "account_custody": "代客操作/索要账户信息",
    "insider_tip": "内幕消息/确定性荐股",
    "disparagement": "诋毁同业",
}

# Customer intents an advisor must hear about at once.
ALERT_INTENTS = {"redemption_intent": "赎回/退保/转出意向", "complaint": "投诉/不满"}


@dataclass(frozen=True)
class StoreDeps:
    keyring: Keyring
    hooks: Hooks
    agent_id: int


def message_aad(source: str, msgid: str) -> str:
    return f"message:{source}:{msgid}"


async def _notify(
    *, conn: BaseDBAsyncClient, deps: StoreDeps, idem_key: str, touser: str, content: str
) -> None:
    await outbox.enqueue(
        conn,
        idem_key=f"notify:{idem_key}",
        origin=f"bot.alert:{idem_key}"[:96],
        write=outbox.app_text(agent_id=deps.agent_id, touser=touser, content=content),
    )


def _local_time(draft: MessageDraft) -> str:
    return draft.msgtime.astimezone(SHANGHAI).strftime("%m-%d %H:%M")


EXCERPT_CHARS = 24


def _message_ref(draft: MessageDraft) -> str:
    """A short, stable reference to one message, printed in every alert about it.

    It makes each alert's text distinct: WeCom's ``enable_duplicate_check`` silently
    drops an identical text within its window, which would lose the second of two
    alerts about different messages; a resend of the same outbox row stays identical.
    """
    return hashlib.sha256(f"{draft.source}:{draft.msgid}".encode()).hexdigest()[:8]


def _excerpt(analysis: Analysis | None) -> str:
    """The start of the message as stored: masked, never the original."""
    text = " ".join((analysis.masked_text if analysis else "").split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def customer_label(name: str | None, external_userid: str | None) -> str:
    """How an advisor or reviewer reads a customer: the name, else a readable stand-in."""
    if name:
        return f"客户「{name}」"
    if external_userid:
        return f"未登记姓名的客户（ID 尾号 {external_userid[-6:]}）"
    return "未知客户"


async def do_store_message(
    *,
    draft: MessageDraft,
    analysis: Analysis | None,
    original: dict[str, Any],
    deps: StoreDeps,
) -> StoreResult:
    """Store an analysed message once, then run hooks and raise alerts."""
    violations = analysis.violations if analysis else ()
    has_violation = analysis.has_violation if analysis else False
    intent = analysis.intent if analysis and draft.sender_role == "customer" else None
    masked = analysis.masked_text if analysis and draft.text else ""
    alerts: list[str] = []
    async with in_transaction() as conn:
        advisor = (
            await bot_service.upsert_advisor(conn=conn, userid=draft.advisor_userid)
            if draft.advisor_userid
            else None
        )
        customer = (
            await bot_service.upsert_customer(
                conn=conn, external_userid=draft.external_userid, needs_sync=True
            )
            if draft.external_userid
            else None
        )
        sealed = deps.keyring.seal_text(
            json.dumps(original, ensure_ascii=False), aad=message_aad(draft.source, draft.msgid)
        )
        message = await bot_service.insert_message(
            conn=conn,
            msgid=draft.msgid,
            source=draft.source.value,
            direction=draft.direction.value,
            sender_id=draft.sender_id,
            sender_role=draft.sender_role,
            receiver_ids=list(draft.receiver_ids),
            roomid=draft.roomid,
            msgtime=draft.msgtime,
            msgtype=draft.msgtype,
            action=draft.action,
            masked_text=masked,
            original_sealed=sealed,
            intent=intent,
            sentiment=analysis.sentiment if analysis else None,
            has_violation=has_violation,
            analysis=analysis.to_dict() if analysis else None,
            customer=customer,
            advisor=advisor,
        )
        if message is None:
            return StoreResult(stored=False)

        record = StoredMessage(
            id=message.id,
            source=draft.source.value,
            msgid=draft.msgid,
            direction=draft.direction,
            sender_role=draft.sender_role,
            customer=draft.external_userid,
            advisor=draft.advisor_userid,
            roomid=draft.roomid,
            msgtime=draft.msgtime,
            msgtype=draft.msgtype,
            text_masked=masked,
            intent=intent,
            intent_score=analysis.intent_score if analysis and intent else None,
            sentiment=analysis.sentiment if analysis else None,
            violation_categories=tuple(sorted({v.category for v in violations})),
            has_violation=has_violation,
        )
        # Other domains' hooks see what was stored, inside this transaction.
        for hook in deps.hooks.on_message:
            await hook.fn(record, conn)

        speaks_to_customers = (
            draft.direction in (Direction.ADVISOR_TO_CUSTOMER, Direction.GROUP)
            and draft.sender_role == "advisor"
        )
        case_opened = False
        if violations and speaks_to_customers and draft.advisor_userid:
            case_opened = True
            categories = sorted({v.category for v in violations})
            severity = "violation" if has_violation else "review"
            await bot_service.open_review_case(
                conn=conn,
                message=message,
                advisor_userid=draft.advisor_userid,
                categories=categories,
                severity=severity,
            )
            if has_violation:
                first = next(v for v in violations if v.severity == "violation")
                label = CATEGORY_LABELS.get(first.category, first.category)
                basis = first.basis or "机构销售行为管理规定"
                key = f"violation:{draft.source}:{draft.msgid}"
                await bot_service.raise_alert(
                    conn=conn,
                    idem_key=key,
                    kind="violation",
                    recipient_userid=draft.advisor_userid,
                    advisor_userid=draft.advisor_userid,
                    external_userid=draft.external_userid,
                    msgid=draft.msgid,
                    detail={"categories": categories, "rule_id": first.rule_id, "basis": basis},
                )
                who = (
                    "群聊中"
                    if draft.roomid and not draft.external_userid
                    else "发给"
                    + customer_label(customer.name if customer else None, draft.external_userid)
                )
                await _notify(
                    conn=conn,
                    deps=deps,
                    idem_key=key,
                    touser=draft.advisor_userid,
                    content=(
                        f"【合规提醒】您 {_local_time(draft)} {who}的消息"
                        f"「{_excerpt(analysis)}」触发「{label}」"
                        f"（依据：{basis}；规则 {first.rule_id or first.source}），"
                        "已提交合规复核。请勿承诺收益、混同存款或代客操作。"
                        f"（消息编号 {_message_ref(draft)}）"
                    ),
                )
                alerts.append(key)

        if intent in ALERT_INTENTS and draft.external_userid:
            targets = (
                [draft.advisor_userid]
                if draft.advisor_userid
                else await bot_service.advisors_following(
                    conn=conn, external_userid=draft.external_userid
                )
            )
            for userid in targets:
                if not userid:
                    continue
                key = f"{intent}:{draft.source}:{draft.msgid}:{userid}"
                await bot_service.raise_alert(
                    conn=conn,
                    idem_key=key,
                    kind=str(intent),
                    recipient_userid=userid,
                    advisor_userid=userid,
                    external_userid=draft.external_userid,
                    msgid=draft.msgid,
                    detail={"sentiment": record.sentiment},
                )
                who = customer_label(customer.name if customer else None, draft.external_userid)
                await _notify(
                    conn=conn,
                    deps=deps,
                    idem_key=key,
                    touser=userid,
                    content=(
                        f"【客户提醒】{who} {_local_time(draft)} 的消息"
                        f"「{_excerpt(analysis)}」显示{ALERT_INTENTS[intent]}，请及时跟进。"
                        f"（消息编号 {_message_ref(draft)}）"
                    ),
                )
                alerts.append(key)
        return StoreResult(
            stored=True,
            record_id=message.id,
            alerts=tuple(alerts),
            review_case=case_opened,
            findings=tuple((v.category, v.severity) for v in violations),
            record=record,
        )


@dataclass(frozen=True)
class EventContext:
    """What the worker fetched from WeCom before opening the transaction."""

    contact: dict[str, Any] | None = None  # externalcontact/get answer
    member: dict[str, Any] | None = None  # user/get answer
    group_chat: dict[str, Any] | None = None  # groupchat/get answer


def _follow_entry(contact: dict[str, Any] | None, userid: str) -> dict[str, Any] | None:
    for f in (contact or {}).get("follow_user", []) or []:
        if isinstance(f, dict) and f.get("userid") == userid:
            return f
    return None


async def do_store_event(*, draft: EventDraft, ctx: EventContext, deps: StoreDeps) -> StoreResult:
    f = draft.fields
    alerts: list[str] = []
    async with in_transaction() as conn:
        raw_sealed = (
            deps.keyring.seal_text(draft.raw_xml, aad=f"event:{draft.event_key}")
            if draft.kind == "unknown"
            else None
        )
        event = await bot_service.insert_event(
            conn=conn,
            event_key=draft.event_key,
            kind=draft.kind,
            event=draft.event,
            change_type=draft.change_type,
            occurred_at=draft.occurred_at,
            fields_json=f if draft.kind != "unknown" else {"MsgType": f.get("MsgType")},
            raw_sealed=raw_sealed,
        )
        if event is None:
            return StoreResult(stored=False)

        if draft.event == "change_external_contact":
            alerts += await _external_contact_changed(conn=conn, draft=draft, ctx=ctx, deps=deps)
        elif draft.event == "change_external_chat":
            chat_id = str(f.get("ChatId", ""))
            if chat_id:
                status = "dismissed" if draft.change_type == "dismiss" else "active"
                detail = (ctx.group_chat or {}).get("group_chat")
                await bot_service.upsert_group_chat(
                    conn=conn, chat_id=chat_id, status=status, detail=detail
                )

        record = StoredEvent(
            id=event.id,
            event_key=draft.event_key,
            kind=draft.kind,
            event=draft.event,
            change_type=draft.change_type,
            occurred_at=draft.occurred_at,
            fields=frozen_fields(f),
            customer=_text_or_none(f.get("ExternalUserID")),
            advisor=_text_or_none(f.get("UserID")),
            state=_text_or_none(f.get("State")),
            welcome_code=_text_or_none(f.get("WelcomeCode")),
        )
        for hook in deps.hooks.on_event:
            await hook.fn(record, conn)
        return StoreResult(stored=True, record_id=event.id, alerts=tuple(alerts), record=record)


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


async def _external_contact_changed(
    *, conn: BaseDBAsyncClient, draft: EventDraft, ctx: EventContext, deps: StoreDeps
) -> list[str]:
    f = draft.fields
    userid = str(f.get("UserID", "") or "")
    external = str(f.get("ExternalUserID", "") or "")
    if not userid or not external:
        return []
    contact_info = (ctx.contact or {}).get("external_contact")
    advisor = await bot_service.upsert_advisor(conn=conn, userid=userid, profile=ctx.member)
    customer = await bot_service.upsert_customer(
        conn=conn,
        external_userid=external,
        contact=contact_info,
        needs_sync=contact_info is None,
    )
    follow = _follow_entry(ctx.contact, userid)
    at = draft.occurred_at
    change = draft.change_type
    if change in ("add_external_contact", "add_half_external_contact"):
        follow = dict(follow or {})
        if f.get("State") and not follow.get("state"):
            follow["state"] = f["State"]
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=at,
            follow=follow,
        )
    elif change == "edit_external_contact":
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=at,
            follow=follow,
        )
    elif change == "del_external_contact":
        await bot_service.upsert_follow(
            conn=conn, customer=customer, advisor=advisor, status=RelationStatus.REMOVED, at=at
        )
    elif change == "del_follow_user":
        # The customer deleted the advisor: churn.  The manager hears first,
        # because the advisor can no longer reach the customer.
        await bot_service.upsert_follow(
            conn=conn, customer=customer, advisor=advisor, status=RelationStatus.LOST, at=at
        )
        manager = advisor.manager_userid
        key = f"churn:{draft.event_key}"
        await bot_service.raise_alert(
            conn=conn,
            idem_key=key,
            kind="churn",
            recipient_userid=manager or userid,
            advisor_userid=userid,
            external_userid=external,
            detail={"manager_known": manager is not None},
        )
        name = customer.name or external
        when = at.astimezone(SHANGHAI).strftime("%m-%d %H:%M")
        await _notify(
            conn=conn,
            deps=deps,
            idem_key=key,
            touser=manager or userid,
            content=(
                f"【流失预警】客户「{name}」于 {when} 删除了客户经理 {advisor.name or userid}，"
                "请尽快安排挽回。"
            ),
        )
        return [key]
    elif change == "transfer_fail":
        key = f"transfer_fail:{draft.event_key}"
        await bot_service.raise_alert(
            conn=conn,
            idem_key=key,
            kind="transfer_fail",
            recipient_userid=userid,
            advisor_userid=userid,
            external_userid=external,
            detail={"fail_reason": f.get("FailReason")},
        )
        return [key]
    return []
