"""Use cases of the edge: store a message or an event, with its consequences.

Each ``do_*`` owns one transaction: the row, the hooks of other domains, the
review case, the alerts and their outbox rows commit together or not at all.
The row's unique key makes a redelivery a no-op, so a worker that crashes
after commit and before XACK does no harm.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import customers as bot_customers
from bot import models, outbox
from bot import service as bot_service
from bot.customers import FOLLOW_FREE_TEXT, follow_aad
from bot.customers import mask_free_text as mask_free_text  # re-exported: the console masks with it
from bot.customers import protect_follow as _protect_follow
from bot.hooks import Hooks, StoredEvent, StoredMessage, frozen_fields
from bot.models import RelationStatus
from bot.opt_out import is_opt_out
from bot.schemas import Direction, EventDraft, MessageDraft, StoreResult
from bot.stream import InboundStream, encode_payload
from compliance_nlp import Analysis
from core.crypto import DecryptionError, Keyring, sealed_key_id
from core.settings import Settings, SettingsError

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


def event_fields_aad(event_key: str) -> str:
    return f"event-fields:{event_key}"


# Alert and outbox keys are built from WeCom ids (msgid up to 128 characters, userids
# up to 64): a key over its column (160) would fail the whole store and dead-letter the
# message. Long keys keep a readable head and end in a hash of the whole key, leaving
# room for the ``notify:`` prefix of the app message that delivers the alert.
_KEY_MAX = 150


def bounded_key(key: str) -> str:
    if len(key) <= _KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{key[: _KEY_MAX - 17]}#{digest}"


def outbox_payload_aad(idem_key: str) -> str:
    return f"outbox:{idem_key}"


# ---------------------------------------------------------------- personal data at rest

# Event fields stored in clear: what identifies an event and what the edge and other
# domains route on — ids, event and change types, times, the 渠道活码 State, WeCom's
# status codes.  Everything else is sealed (``Event.fields_sealed``), because an event
# may carry what PIPL art. 28 calls sensitive: a member's Mobile, Email and Address
# (change_contact), Latitude/Longitude (LOCATION), a scanned code, an approval's content.
# An allow-list, not a block-list: a field WeCom adds tomorrow is sealed until someone
# decides it may be read in clear.
CLEAR_EVENT_FIELDS: frozenset[str] = frozenset(
    {
        # envelope
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "Event",
        "ChangeType",
        "AgentID",
        "AgentId",
        "AppType",
        # who and what, by id
        "UserID",
        "NewUserID",
        "OpenUserID",
        "ExternalUserID",
        "ChatId",
        "Id",
        "TagId",
        "TagType",
        "StrategyId",
        "ParentId",
        "Order",
        "Department",
        "MainDepartment",
        "IsLeaderInDept",
        "DirectLeader",
        "Status",
        "AddUserItems",
        "DelUserItems",
        "AddPartyItems",
        "DelPartyItems",
        "MemChangeList",
        # 客户联系: channel, welcome code (valid 20 s, once), how a change came about
        "State",
        "WelcomeCode",
        "Source",
        "FailReason",
        "UpdateDetail",
        "JoinScene",
        "QuitScene",
        "MemChangeCnt",
        "LastMemVer",
        "CurMemVer",
        # app events: menu and card keys, task ids, job results
        "EventKey",
        "TaskId",
        "CardType",
        "ResponseCode",
        "BatchJob",
    }
)

# Stored in ``fields_json`` beside the clear fields: the names (never the values) of
# the fields the row keeps sealed, so a reader knows what exists without opening it.
SEALED_FIELD_NAMES = "_sealed"


def split_event_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields that may be read in clear, fields that must be sealed)."""
    clear = {k: v for k, v in fields.items() if k in CLEAR_EVENT_FIELDS}
    private = {k: v for k, v in fields.items() if k not in CLEAR_EVENT_FIELDS}
    return clear, private


def open_event_fields(event: models.Event, *, keyring: Keyring) -> dict[str, Any]:
    """Every field of a stored event, the sealed ones opened (for an authorised reader)."""
    fields = {k: v for k, v in (event.fields_json or {}).items() if k != SEALED_FIELD_NAMES}
    if event.fields_sealed:
        fields.update(
            json.loads(
                keyring.open_text(event.fields_sealed, aad=event_fields_aad(event.event_key))
            )
        )
    return fields


def open_follow_text(rel: models.FollowRelation, field_name: str, *, keyring: Keyring) -> str:
    """The original remark or description of a follow relation (for an authorised reader)."""
    sealed = getattr(rel, f"{field_name}_sealed")
    if not sealed:
        return str(getattr(rel, field_name))
    return keyring.open_text(
        sealed, aad=follow_aad(rel.customer.external_userid, rel.advisor.userid, field_name)
    )


@dataclass(frozen=True)
class SealedExisting:
    events: int
    follows: int


async def do_seal_existing_rows(*, keyring: Keyring, batch: int = 500) -> SealedExisting:
    """Seal what rows stored before this release keep in clear (``siyu keys seal-existing``).

    Event fields outside the allow-list move into ``fields_sealed``; a follow relation's
    remark and description are masked, their originals sealed.  Each row is updated only
    while it is still unsealed, so running it twice, or beside live workers, is harmless.
    """
    events = follows = 0
    after = 0
    while rows := await bot_service.events_unsealed(after_id=after, limit=batch):
        for event in rows:
            after = event.id
            stored = {k: v for k, v in (event.fields_json or {}).items() if k != SEALED_FIELD_NAMES}
            clear, private = split_event_fields(stored)
            if not private:
                continue
            clear[SEALED_FIELD_NAMES] = sorted(private)
            sealed = keyring.seal_text(
                json.dumps(private, ensure_ascii=False, sort_keys=True),
                aad=event_fields_aad(event.event_key),
            )
            events += await bot_service.seal_event_fields(
                event_id=event.id, fields_json=clear, fields_sealed=sealed
            )
    after = 0
    while rels := await bot_service.follows_unsealed(after_id=after, limit=batch):
        for rel in rels:
            after = rel.id
            originals = {name: str(getattr(rel, name) or "") for name in FOLLOW_FREE_TEXT}
            masked, sealed_originals = _protect_follow(
                originals,
                keyring=keyring,
                external_userid=rel.customer.external_userid,
                userid=rel.advisor.userid,
            )
            assert masked is not None
            follows += await bot_service.seal_follow_text(
                relation_id=rel.id,
                masked={name: str(masked[name]) for name in FOLLOW_FREE_TEXT},
                originals_sealed=sealed_originals,
            )
    return SealedExisting(events=events, follows=follows)


def open_outbox_payload(item: models.OutboxItem, *, keyring: Keyring | None) -> dict[str, Any]:
    """What the dispatcher sends: the sealed payload opened, else the payload as stored.

    Without a keyring (a dispatcher built without one) the clear copy is sent: it is a
    complete message, naming the customer by a stand-in instead of their name.
    """
    if item.payload_sealed and keyring is not None:
        opened: dict[str, Any] = json.loads(
            keyring.open_text(item.payload_sealed, aad=outbox_payload_aad(item.idem_key))
        )
        return opened
    return dict(item.payload)


async def _notify(
    *,
    conn: BaseDBAsyncClient,
    deps: StoreDeps,
    idem_key: str,
    touser: str,
    content: str,
    content_at_rest: str | None = None,
) -> None:
    """Queue an app message to a member; ``content_at_rest``: the text the row shows.

    An alert names the customer so the advisor knows whom to call; the row at rest
    names them by a stand-in (the tail of their id) and the text that is sent stays
    sealed until the dispatcher opens it.
    """
    key = f"notify:{idem_key}"
    stored = content if content_at_rest is None else content_at_rest
    write = outbox.app_text(agent_id=deps.agent_id, touser=touser, content=stored)
    queued = await outbox.enqueue(
        conn, idem_key=key, origin=f"bot.alert:{idem_key}"[:96], write=write
    )
    if queued is not None and stored != content:
        sent = outbox.app_text(agent_id=deps.agent_id, touser=touser, content=content)
        await bot_service.seal_outbox_payload(
            conn=conn,
            idem_key=key,
            payload_sealed=deps.keyring.seal_text(
                json.dumps(dict(sent.payload), ensure_ascii=False), aad=outbox_payload_aad(key)
            ),
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


def customer_label_at_rest(name: str | None, external_userid: str | None) -> str:
    """The customer as a stored alert row names them: never by name (PIPL art. 51)."""
    if name and external_userid:
        return f"客户（ID 尾号 {external_userid[-6:]}）"
    return customer_label(None, external_userid)


@dataclass(frozen=True)
class MessageToStore:
    """One analysed message of a read, as the pipeline hands it to be stored."""

    draft: MessageDraft
    analysis: Analysis | None
    original: Mapping[str, Any]
    # ``original`` as JSON text, when the caller has it already (the stream entry's
    # text, ``QueuedItem.payload_json``): sealed as it is instead of encoded again.
    original_json: str | None = None


async def do_store_messages(
    *, items: Sequence[MessageToStore], deps: StoreDeps
) -> list[StoreResult | BaseException]:
    """Store a read's messages in one transaction; one that fails does not fail the others.

    Storing a message alone costs a transaction and a dozen round trips (and on SQLite
    a commit that waits for the disk), several times the cost of analysing it; a read
    stored together costs one transaction and a few multi-row statements.  If that
    transaction fails (a message the database or a hook refuses, a lock timeout), it
    rolls back whole and each message is stored again in a transaction of its own, so
    only the bad one comes back as its exception, in its place in the list.  Hooks
    keep their exactly-once effect: what they did in the failed transaction was
    rolled back with it.
    """
    if len(items) > 1:
        try:
            return list(await _store_together(items, deps=deps))
        except Exception as exc:  # noqa: BLE001 - narrowed below, message by message
            log.warning(
                "storing a read together failed; storing its messages one by one",
                extra={"items": len(items), "error": type(exc).__name__},
            )
    out: list[StoreResult | BaseException] = []
    for item in items:
        try:
            out += await _store_together([item], deps=deps)
        except Exception as exc:  # noqa: BLE001 - this message's own failure
            out.append(exc)
    return out


@dataclass(frozen=True)
class _Analysed:
    """What a message stores, worked out before the transaction opens."""

    draft: MessageDraft
    analysis: Analysis | None
    masked: str
    intent: str | None
    sealed: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.draft.source.value, self.draft.msgid)


def _customer_intent(draft: MessageDraft, analysis: Analysis | None) -> str | None:
    """The intent a customer's message records (and alerts on, and triggers journeys on).

    A 「退订」 is an opt-out, not a redemption intent, whatever the model reads in its 退:
    no redemption alert to the advisor, no win-back journey (``bot.opt_out``).
    """
    if analysis is None or draft.sender_role != "customer":
        return None
    if analysis.intent == "redemption_intent" and is_opt_out(draft.text or ""):
        return None
    return analysis.intent


def _analysed(item: MessageToStore, keyring: Keyring) -> _Analysed:
    draft, analysis = item.draft, item.analysis
    return _Analysed(
        draft=draft,
        analysis=analysis,
        masked=analysis.masked_text if analysis and draft.text else "",
        intent=_customer_intent(draft, analysis),
        sealed=keyring.seal_text(
            item.original_json if item.original_json is not None else encode_payload(item.original),
            aad=message_aad(draft.source, draft.msgid),
        ),
    )


@dataclass
class _Consequences:
    """Review cases, alerts and their outbox rows of a read, written a statement per table."""

    cases: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)

    async def write(self, conn: BaseDBAsyncClient) -> None:
        await bot_service.open_review_cases(conn=conn, rows=self.cases)
        await bot_service.raise_alerts(conn=conn, rows=self.alerts)
        await bot_service.enqueue_outbox_many(conn=conn, rows=self.notices)


async def _store_together(items: Sequence[MessageToStore], *, deps: StoreDeps) -> list[StoreResult]:
    """Store ``items`` in one transaction, in order; any failure rolls all of them back.

    Each message's row is inserted once per (source, msgid): one repeated in the read
    or stored before is a duplicate (``stored=False``), told per message by the unique
    key on SQLite and PostgreSQL alike.  Then, message by message in the order read,
    the other domains' ``on_message`` hooks see the frozen record, and the review case
    and alerts it calls for are gathered; they are written after the last of those
    hooks, a statement per table.  The rows of the whole read are inserted before the first
    hook runs, so a hook may see messages read with its own, later ones included;
    the ``on_messages`` hooks see the read's stored messages together, last.
    """
    analysed = [_analysed(item, deps.keyring) for item in items]
    first: dict[tuple[str, str], int] = {}
    for pos, a in enumerate(analysed):
        first.setdefault(a.key, pos)
    results: list[StoreResult] = []
    userids = [a.draft.advisor_userid for a in analysed if a.draft.advisor_userid]
    external_userids = [a.draft.external_userid for a in analysed if a.draft.external_userid]
    people: tuple[dict[str, int], dict[str, bot_service.CustomerRef]] | None = None
    db = models.Message._meta.db
    if db.capabilities.dialect == "postgres":
        # The read's members and customers are made to exist before its transaction
        # opens, each new row committed by its own statement.  Inside the transaction a
        # new customer's row stayed locked until the commit, and another worker's read
        # naming the same customer waited for it (ON CONFLICT must know whether the
        # row commits): two workers' transactions ran one after the other.  A row
        # left behind by a read that then fails is a customer or member WeCom knows
        # (marked for the reconcile job), as the read's retry would create it anyway.
        # SQLite has one writer at a time: nothing to gain there, and a commit to pay.
        people = (
            await bot_service.ensure_advisors(conn=db, userids=userids),
            await bot_service.ensure_customers(conn=db, external_userids=external_userids),
        )
    async with in_transaction() as conn:
        if people is None:
            people = (
                await bot_service.ensure_advisors(conn=conn, userids=userids),
                await bot_service.ensure_customers(conn=conn, external_userids=external_userids),
            )
        advisors, customers = people
        ids = await bot_service.insert_messages(
            conn=conn,
            rows=[
                _message_row(a, advisors=advisors, customers=customers)
                for pos, a in enumerate(analysed)
                if first[a.key] == pos
            ],
        )
        consequences = _Consequences()
        records: list[StoredMessage] = []
        for pos, a in enumerate(analysed):
            message_id = ids.get(a.key)
            if message_id is None or first[a.key] != pos:
                results.append(StoreResult(stored=False))
                continue
            record = _stored_record(a, message_id)
            records.append(record)
            # Other domains' hooks see what was stored, inside this transaction.
            for hook in deps.hooks.on_message:
                await hook.fn(record, conn)
            customer = customers.get(a.draft.external_userid or "")
            results.append(
                await _consequences(
                    a,
                    record=record,
                    customer_name=customer.name if customer else None,
                    into=consequences,
                    conn=conn,
                    deps=deps,
                )
            )
        await consequences.write(conn)
        # The read's hooks last, right before the commit: the admin dashboard's adds to
        # a day's counters, rows every read of every worker updates, and another
        # worker's read waits for them from that update until this commit.
        if records:
            for read_hook in deps.hooks.on_messages:
                await read_hook.fn(records, conn)
    return results


def _message_row(
    a: _Analysed,
    *,
    advisors: Mapping[str, int],
    customers: Mapping[str, bot_service.CustomerRef],
) -> dict[str, Any]:
    draft, analysis = a.draft, a.analysis
    customer = customers.get(draft.external_userid) if draft.external_userid else None
    return {
        "msgid": draft.msgid,
        "source": draft.source.value,
        "direction": draft.direction.value,
        "sender_id": draft.sender_id,
        "sender_role": draft.sender_role,
        "receiver_ids": list(draft.receiver_ids),
        "roomid": draft.roomid,
        "msgtime": draft.msgtime,
        "msgtype": draft.msgtype,
        "action": draft.action,
        "masked_text": a.masked,
        "original_sealed": a.sealed,
        "intent": a.intent,
        "sentiment": analysis.sentiment if analysis else None,
        "has_violation": analysis.has_violation if analysis else False,
        "analysis": analysis.to_dict() if analysis else None,
        "customer_id": customer.id if customer else None,
        "advisor_id": advisors[draft.advisor_userid] if draft.advisor_userid else None,
        "ingested_by": draft.ingested_by,
    }


def _stored_record(a: _Analysed, message_id: int) -> StoredMessage:
    draft, analysis = a.draft, a.analysis
    violations = analysis.violations if analysis else ()
    return StoredMessage(
        id=message_id,
        source=draft.source.value,
        msgid=draft.msgid,
        direction=draft.direction,
        sender_role=draft.sender_role,
        customer=draft.external_userid,
        advisor=draft.advisor_userid,
        roomid=draft.roomid,
        msgtime=draft.msgtime,
        msgtype=draft.msgtype,
        text_masked=a.masked,
        intent=a.intent,
        intent_score=analysis.intent_score if analysis and a.intent else None,
        sentiment=analysis.sentiment if analysis else None,
        violation_categories=tuple(sorted({v.category for v in violations})),
        has_violation=analysis.has_violation if analysis else False,
    )


def _notice(
    *, deps: StoreDeps, idem_key: str, touser: str, content: str, content_at_rest: str
) -> dict[str, Any]:
    """The outbox row of an app message to a member (``_notify``, as a row to insert)."""
    key = f"notify:{idem_key}"
    write = outbox.app_text(agent_id=deps.agent_id, touser=touser, content=content_at_rest)
    sealed = None
    if content_at_rest != content:
        sent = outbox.app_text(agent_id=deps.agent_id, touser=touser, content=content)
        sealed = deps.keyring.seal_text(
            json.dumps(dict(sent.payload), ensure_ascii=False), aad=outbox_payload_aad(key)
        )
    return {
        "idem_key": key,
        "api": write.api,
        "payload": dict(write.payload),
        "payload_sealed": sealed,
        "secret_kind": write.via,
        "origin": f"bot.alert:{idem_key}"[: outbox.ORIGIN_MAX],
    }


async def _consequences(
    a: _Analysed,
    *,
    record: StoredMessage,
    customer_name: str | None,
    into: _Consequences,
    conn: BaseDBAsyncClient,
    deps: StoreDeps,
) -> StoreResult:
    """The review case and alerts a stored message calls for, added to ``into``."""
    draft, analysis = a.draft, a.analysis
    violations = analysis.violations if analysis else ()
    has_violation = record.has_violation
    alerts: list[str] = []
    speaks_to_customers = (
        draft.direction in (Direction.ADVISOR_TO_CUSTOMER, Direction.GROUP)
        and draft.sender_role == "advisor"
    )
    case_opened = False
    if violations and speaks_to_customers and draft.advisor_userid:
        case_opened = True
        categories = sorted({v.category for v in violations})
        into.cases.append(
            {
                "message_id": record.id,
                "advisor_userid": draft.advisor_userid,
                "categories": categories,
                "severity": "violation" if has_violation else "review",
            }
        )
        if has_violation:
            first = next(v for v in violations if v.severity == "violation")
            label = CATEGORY_LABELS.get(first.category, first.category)
            basis = first.basis or "机构销售行为管理规定"
            key = bounded_key(f"violation:{draft.source}:{draft.msgid}")
            into.alerts.append(
                {
                    "idem_key": key,
                    "kind": "violation",
                    "recipient_userid": draft.advisor_userid,
                    "advisor_userid": draft.advisor_userid,
                    "external_userid": draft.external_userid,
                    "msgid": draft.msgid,
                    "detail": {"categories": categories, "rule_id": first.rule_id, "basis": basis},
                }
            )
            in_group = bool(draft.roomid and not draft.external_userid)

            def violation_text(label_of: Any) -> str:
                who = (
                    "群聊中"
                    if in_group
                    else "发给" + label_of(customer_name, draft.external_userid)
                )
                return (
                    f"【合规提醒】您 {_local_time(draft)} {who}的消息"
                    f"「{_excerpt(analysis)}」触发「{label}」"
                    f"（依据：{basis}；规则 {first.rule_id or first.source}），"
                    "已提交合规复核。请勿承诺收益、混同存款或代客操作。"
                    f"（消息编号 {_message_ref(draft)}）"
                )

            into.notices.append(
                _notice(
                    deps=deps,
                    idem_key=key,
                    touser=draft.advisor_userid,
                    content=violation_text(customer_label),
                    content_at_rest=violation_text(customer_label_at_rest),
                )
            )
            alerts.append(key)

    intent = a.intent
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
            key = bounded_key(f"{intent}:{draft.source}:{draft.msgid}:{userid}")
            into.alerts.append(
                {
                    "idem_key": key,
                    "kind": str(intent),
                    "recipient_userid": userid,
                    "advisor_userid": userid,
                    "external_userid": draft.external_userid,
                    "msgid": draft.msgid,
                    "detail": {"sentiment": record.sentiment},
                }
            )
            texts = [
                (
                    f"【客户提醒】{label_of(customer_name, draft.external_userid)} "
                    f"{_local_time(draft)} 的消息"
                    f"「{_excerpt(analysis)}」显示{ALERT_INTENTS[intent]}，请及时跟进。"
                    f"（消息编号 {_message_ref(draft)}）"
                )
                for label_of in (customer_label, customer_label_at_rest)
            ]
            into.notices.append(
                _notice(
                    deps=deps,
                    idem_key=key,
                    touser=userid,
                    content=texts[0],
                    content_at_rest=texts[1],
                )
            )
            alerts.append(key)
    return StoreResult(
        stored=True,
        record_id=record.id,
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
        raw_sealed = fields_sealed = None
        if draft.kind == "unknown":
            # We cannot tell what an unknown payload carries: all of it sealed.
            raw_sealed = deps.keyring.seal_text(draft.raw_xml, aad=f"event:{draft.event_key}")
            fields_json: dict[str, Any] = {"MsgType": f.get("MsgType")}
        else:
            fields_json, private = split_event_fields(f)
            if private:
                fields_json[SEALED_FIELD_NAMES] = sorted(private)
                fields_sealed = deps.keyring.seal_text(
                    json.dumps(private, ensure_ascii=False, sort_keys=True),
                    aad=event_fields_aad(draft.event_key),
                )
        event = await bot_service.insert_event(
            conn=conn,
            event_key=draft.event_key,
            kind=draft.kind,
            event=draft.event,
            change_type=draft.change_type,
            occurred_at=draft.occurred_at,
            fields_json=fields_json,
            fields_sealed=fields_sealed,
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
    original_follow = _follow_entry(ctx.contact, userid)
    follow, follow_sealed = _protect_follow(
        original_follow,
        keyring=deps.keyring,
        external_userid=external,
        userid=userid,
    )
    at = draft.occurred_at
    change = draft.change_type

    async def index_phones() -> None:
        # The numbers the advisor noted, findable by the console's search (never in clear).
        if original_follow is not None:
            await bot_customers.index_follow_phones(
                conn=conn,
                keyring=deps.keyring,
                customer_id=customer.id,
                advisor_id=advisor.id,
                external_userid=external,
                userid=userid,
                phones=bot_customers.phones_in_follow(original_follow),
            )

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
            originals_sealed=follow_sealed,
        )
        await index_phones()
    elif change == "edit_external_contact":
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=at,
            follow=follow,
            originals_sealed=follow_sealed,
        )
        await index_phones()
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
        key = bounded_key(f"churn:{draft.event_key}")
        await bot_service.raise_alert(
            conn=conn,
            idem_key=key,
            kind="churn",
            recipient_userid=manager or userid,
            advisor_userid=userid,
            external_userid=external,
            detail={"manager_known": manager is not None},
        )
        when = at.astimezone(SHANGHAI).strftime("%m-%d %H:%M")
        texts = [
            (
                f"【流失预警】{label_of(customer.name, external)} 于 {when} "
                f"删除了客户经理 {advisor.name or userid}，请尽快安排挽回。"
            )
            for label_of in (customer_label, customer_label_at_rest)
        ]
        await _notify(
            conn=conn,
            deps=deps,
            idem_key=key,
            touser=manager or userid,
            content=texts[0],
            content_at_rest=texts[1],
        )
        return [key]
    elif change == "transfer_fail":
        key = bounded_key(f"transfer_fail:{draft.event_key}")
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


# ---------------------------------------------------------------- field keys


class FieldKeyMismatchError(SettingsError):
    """The configured field keys are not the ones this database's data was sealed with."""


def _key_remedy(settings: Settings) -> str:
    if settings.crypto.keys:
        return (
            "set SIYU_CRYPTO__KEYS to the keys the data was written with (to rotate, add a "
            "new key id beside the old ones and make it SIYU_CRYPTO__ACTIVE_KEY_ID)"
        )
    path = settings.data_dir / "field-keys.json"
    return (
        f"restore the key file {path} from your backup, or set SIYU_CRYPTO__KEYS to the "
        "keys the data was written with"
    )


def key_mismatch(
    *, recorded: Mapping[str, str], configured: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(recorded key ids not configured, key ids configured with another key)."""
    missing = sorted(k for k in recorded if k not in configured)
    differ = sorted(
        k
        for k in recorded
        if k in configured and not hmac.compare_digest(recorded[k], configured[k])
    )
    return missing, differ


def _mismatch_message(
    *, missing: list[str], differ: list[str], settings: Settings, where: str
) -> str:
    problems = []
    if missing:
        problems.append(f"key id(s) {', '.join(missing)} sealed data here but are not configured")
    if differ:
        problems.append(
            f"key id(s) {', '.join(differ)} are configured with a different key than the one "
            "the data was sealed with"
        )
    return (
        f"the field keys do not match {where}: {'; '.join(problems)}. Nothing was written. "
        f"To fix: {_key_remedy(settings)}. `siyu keys check` lists what is recorded."
    )


async def check_field_keys(*, keyring: Keyring, settings: Settings) -> dict[str, str]:
    """Refuse a keyring that differs from the one the database was sealed with.

    Every key id ever used is recorded with its ``key_check`` (an HMAC, never the key).
    A recorded id missing from the keyring, or present with another key, would make old
    rows unreadable (they fail as if tampered) and new rows unreadable by the other
    processes: :class:`FieldKeyMismatchError`, before anything is written.  A new key id
    (a rotation) is recorded and accepted.  Returns ``key id → key_check`` as recorded now.
    """
    configured = keyring.key_checks()
    recorded = await bot_service.field_key_checks()
    missing, differ = key_mismatch(recorded=recorded, configured=configured)
    if not recorded:
        # A database sealed before keys were recorded: prove the keyring on its newest
        # sealed message before trusting it (a key file recreated since then is caught).
        missing, differ = await _check_against_sealed_data(keyring)
    if missing or differ:
        raise FieldKeyMismatchError(
            _mismatch_message(
                missing=missing, differ=differ, settings=settings, where="the database"
            )
        )
    for kid in sorted(set(configured) - set(recorded)):
        # Another process may record the same id first; then its check must match ours.
        stored = await bot_service.record_field_key(key_id=kid, key_check=configured[kid])
        if not hmac.compare_digest(stored, configured[kid]):
            raise FieldKeyMismatchError(
                _mismatch_message(missing=[], differ=[kid], settings=settings, where="the database")
            )
        log.info("field key recorded", extra={"key_id": kid})
    return {**configured, **recorded}


async def _check_against_sealed_data(keyring: Keyring) -> tuple[list[str], list[str]]:
    newest = await bot_service.newest_sealed_message()
    if newest is None:
        return [], []
    source, msgid, sealed = newest
    kid = sealed_key_id(sealed)
    if kid is None:
        return [], []
    if kid not in keyring.keys:
        return [kid], []
    try:
        keyring.open(sealed, aad=message_aad(source, msgid))
    except DecryptionError:
        return [], [kid]
    return [], []


def stream_keys_key(stream: InboundStream) -> str:
    """Where the key checks of the stream's sealed entries are published in Redis."""
    return f"{stream.stream}:field-keys"


async def publish_field_keys(*, stream: InboundStream, checks: Mapping[str, str]) -> None:
    """Copy the database's key checks to Redis, for roles that have no database."""
    if checks:
        await stream.redis.hset(stream_keys_key(stream), mapping=dict(checks))  # type: ignore[misc]


async def check_stream_keys(*, stream: InboundStream, keyring: Keyring, settings: Settings) -> None:
    """The receiver's check (it has no database): its keys against the published checks.

    A receiver sealing entries under a known key id with another key would queue what
    no worker can open; a key id the workers do not know yet (a rotation rolling out)
    is fine — workers leave such entries pending until they have the key.
    """
    raw = await stream.redis.hgetall(stream_keys_key(stream))  # type: ignore[misc]
    recorded = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    _missing, differ = key_mismatch(recorded=recorded, configured=keyring.key_checks())
    if differ:
        raise FieldKeyMismatchError(
            _mismatch_message(
                missing=[], differ=differ, settings=settings, where="the workers' (in Redis)"
            )
        )
