"""Parse a decrypted WeCom callback into one typed, frozen :class:`Inbound`.

What a self-built app's callback URL receives (接收消息与事件, 客户联系 回调事件):

* messages members send to the app: text, image, voice, video, location, link;
* app events: subscribe/unsubscribe, enter_agent, LOCATION, click, view,
  scancode_*, pic_*, location_select, batch_job_result, change_contact,
  open_approval_change, taskcard_click, template_card_event, …;
* 客户联系 events: change_external_contact, change_external_chat,
  change_external_tag, and msgaudit_notify (会话存档 has new records: pull now).

Anything else (a MsgType or Event WeCom adds tomorrow, or a ChangeType we do not
know under a known event) is ``kind="unknown"`` with every field kept: the
pipeline stores it raw, it is never dropped.

Parsing only rejects what cannot be a WeCom callback at all (not XML, DTDs, no
MsgType, a CreateTime that is not an integer): :class:`ParseError`, HTTP 400.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bot.wecom.crypto import CallbackError, CallbackErrorReason
from bot.wecom.xmlsafe import XmlError, parse_xml

InboundKind = Literal["message", "event", "unknown"]

#: Message types WeCom sends to a self-built app (接收消息 → 消息格式).
MESSAGE_TYPES: frozenset[str] = frozenset({"text", "image", "voice", "video", "location", "link"})

#: Known events → the ChangeTypes we understand (``None``: the event has no ChangeType).
#: Event names are kept exactly as WeCom sends them (note the upper-case ``LOCATION``).
EVENT_CHANGE_TYPES: dict[str, frozenset[str] | None] = {
    # app events (接收事件)
    "subscribe": None,
    "unsubscribe": None,
    "enter_agent": None,
    "LOCATION": None,
    "click": None,
    "view": None,
    "scancode_push": None,
    "scancode_waitmsg": None,
    "pic_sysphoto": None,
    "pic_photo_or_album": None,
    "pic_weixin": None,
    "location_select": None,
    "batch_job_result": None,
    "open_approval_change": None,
    "sys_approval_change": None,
    "taskcard_click": None,
    "template_card_event": None,
    "template_card_menu_event": None,
    "share_agent_change": None,
    "share_chain_change": None,
    "change_contact": frozenset(
        {
            "create_user",
            "update_user",
            "delete_user",
            "create_party",
            "update_party",
            "delete_party",
            "update_tag",
        }
    ),
    # 客户联系 (customer contact) events
    "change_external_contact": frozenset(
        {
            "add_external_contact",
            "add_half_external_contact",
            "edit_external_contact",
            "del_external_contact",
            "del_follow_user",
            "transfer_fail",
        }
    ),
    "change_external_chat": frozenset({"create", "update", "dismiss"}),
    "change_external_tag": frozenset({"create", "update", "delete", "shuffle"}),
    "msgaudit_notify": None,
}

# Fields that identify *which* thing an event is about. WeCom's advice is to
# dedupe events by FromUserName + CreateTime, but for 客户联系 events FromUserName
# is always "sys": two customers added (to any advisors) in the same second would
# share that key and the second would be dropped as a "retry". So the key also
# covers the event, its ChangeType and these natural identifiers when present.
# A retry is the same plaintext, so it gets the same key; different customers,
# chats, tags or membership versions get different keys.
# Deliberately left out: WelcomeCode (a per-delivery token we cannot promise WeCom
# repeats verbatim on a retry) and free text.
_EVENT_IDENTITY_FIELDS: tuple[str, ...] = (
    "AgentID",
    "AgentId",
    "UserID",
    "NewUserID",
    "ExternalUserID",
    "ChatId",
    "Id",
    "TagId",
    "TagType",
    "StrategyId",
    "UpdateDetail",
    "JoinScene",
    "QuitScene",
    "MemChangeCnt",
    "MemChangeList",
    "LastMemVer",
    "CurMemVer",
    "Source",
    "FailReason",
    "AddUserItems",
    "DelUserItems",
    "AddPartyItems",
    "DelPartyItems",
    "EventKey",
    "TaskId",
    "ResponseCode",
    "BatchJob",
    "ApprovalInfo",
    "ScanCodeInfo",
    "SendPicsInfo",
    "SendLocationInfo",
)

_CREATE_TIME = re.compile(r"\d{1,11}")  # seconds; 11 digits reach year 5138, no overflow


class ParseError(CallbackError):
    """The decrypted callback is not something WeCom sends: HTTP 400."""

    def __init__(self, message: str, *, reason: CallbackErrorReason = "bad_callback") -> None:
        super().__init__(400, reason, message)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One decrypted callback, message or event.

    ``fields`` holds every element of the payload (nested ones as dict/list, see
    :mod:`bot.wecom.xmlsafe`); ``raw_xml`` is the decrypted text as received.
    Both are left out of ``repr`` because they carry message bodies and PII.
    """

    kind: InboundKind
    msg_type: str
    event: str | None
    change_type: str | None
    msg_id: str | None
    dedup_key: str
    from_user: str
    to_user: str
    agent_id: str | None
    create_time: datetime
    fields: dict[str, Any] = field(repr=False)
    raw_xml: str = field(repr=False)

    def text(self, name: str) -> str | None:
        """A leaf field's text, or ``None`` if absent or structured."""
        value = self.fields.get(name)
        return value if isinstance(value, str) else None

    def log_context(self) -> dict[str, str]:
        """Ids for structured logs: never content, never customer ids' payloads."""
        context = {"kind": self.kind, "msg_type": self.msg_type, "dedup_key": self.dedup_key}
        if self.event:
            context["event"] = self.event
        if self.change_type:
            context["change_type"] = self.change_type
        if self.msg_id:
            context["msg_id"] = self.msg_id
        return context


def parse_inbound(xml_text: str) -> Inbound:
    """Parse decrypted callback XML (the plaintext inside ``<Encrypt>``)."""
    try:
        fields = parse_xml(xml_text)
    except XmlError as exc:
        raise ParseError(f"decrypted callback: {exc}", reason=exc.reason) from exc
    return inbound_from_fields(fields, xml_text)


def inbound_from_fields(fields: dict[str, Any], xml_text: str) -> Inbound:
    """The :class:`Inbound` of ``xml_text`` from its fields as ``parse_xml`` gave them.

    The worker reads a callback the receiver parsed already: the receiver queues the
    fields beside the XML (``bot.schemas.CALLBACK_FIELDS``), sealed with it, and the
    worker starts from them instead of parsing the XML a second time.
    """
    msg_type = _required_text(fields, "MsgType")
    create_time = _parse_create_time(_required_text(fields, "CreateTime"))
    event = _optional_text(fields, "Event") if msg_type == "event" else None
    change_type = _optional_text(fields, "ChangeType")
    msg_id = _optional_text(fields, "MsgId")
    # WeCom spells it AgentID almost everywhere, but taskcard_click arrives as AgentId.
    agent_id = _optional_text(fields, "AgentID") or _optional_text(fields, "AgentId")

    kind = _classify(msg_type=msg_type, event=event, change_type=change_type)
    return Inbound(
        kind=kind,
        msg_type=msg_type,
        event=event,
        change_type=change_type,
        msg_id=msg_id,
        dedup_key=_dedup_key(kind=kind, msg_id=msg_id, fields=fields),
        from_user=_optional_text(fields, "FromUserName") or "",
        to_user=_optional_text(fields, "ToUserName") or "",
        agent_id=agent_id,
        create_time=create_time,
        fields=fields,
        raw_xml=xml_text,
    )


def _classify(*, msg_type: str, event: str | None, change_type: str | None) -> InboundKind:
    if msg_type in MESSAGE_TYPES:
        return "message"
    if msg_type != "event" or event is None or event not in EVENT_CHANGE_TYPES:
        return "unknown"
    known_changes = EVENT_CHANGE_TYPES[event]
    if known_changes is not None and change_type not in known_changes:
        return "unknown"
    return "event"


def _dedup_key(*, kind: InboundKind, msg_id: str | None, fields: dict[str, Any]) -> str:
    """The idempotency key the receiver uses (Redis SET NX) and the store keeps unique.

    * messages: ``msg:<MsgId>`` (WeCom: dedupe messages by MsgId);
    * known events: ``evt:<hash>`` over FromUserName, CreateTime, Event, ChangeType
      and the natural identifiers (see ``_EVENT_IDENTITY_FIELDS`` for why);
    * unknown payloads: ``msg:<MsgId>`` if they carry one, else ``raw:<hash>`` over
      every field, so a duplicate is possible but a loss is not.
    """
    if msg_id and kind in ("message", "unknown"):
        return f"msg:{msg_id}"
    if kind == "event":
        parts: list[tuple[str, Any]] = [
            (name, fields.get(name))
            for name in ("FromUserName", "CreateTime", "Event", "ChangeType")
        ]
        parts += [(name, fields[name]) for name in _EVENT_IDENTITY_FIELDS if name in fields]
        return f"evt:{_short_hash(parts)}"
    return f"raw:{_short_hash(sorted(fields.items()))}"


def _short_hash(value: object) -> str:
    canonical = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    # 96 bits: collisions are negligible among the events of one dedup window.
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=12).hexdigest()


def _required_text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"callback has no {name}")
    return value.strip()


def _optional_text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _parse_create_time(raw: str) -> datetime:
    if not _CREATE_TIME.fullmatch(raw):
        raise ParseError(f"CreateTime must be integer seconds since the epoch, got {raw[:32]!r}")
    return datetime.fromtimestamp(int(raw), tz=UTC)
