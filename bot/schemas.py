"""Shapes passed between the receiver, the stream and the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class Source(StrEnum):
    CALLBACK = "callback"
    ARCHIVE = "archive"


class Direction(StrEnum):
    ADVISOR_TO_CUSTOMER = "advisor_to_customer"
    CUSTOMER_TO_ADVISOR = "customer_to_advisor"
    GROUP = "group"  # 客户群: one sender, many readers
    INTERNAL = "internal"  # member to member
    MEMBER_TO_APP = "member_to_app"  # what members send to the self-built app


# WeCom external contact ids: wm…/wo… (customers), wb… (robots).
EXTERNAL_ID_PREFIXES = ("wm", "wo")


def is_external_id(userid: str) -> bool:
    return userid.startswith(EXTERNAL_ID_PREFIXES)


@dataclass(frozen=True)
class QueuedItem:
    """One entry read from the inbound stream."""

    stream_id: str
    source: Source
    dedup_key: str
    payload: dict[str, Any]
    received_at: datetime
    deliveries: int = 1


@dataclass(frozen=True)
class MessageDraft:
    """A message normalised from either a callback or an archive record."""

    msgid: str
    source: Source
    direction: Direction
    sender_id: str
    sender_role: str
    receiver_ids: tuple[str, ...]
    roomid: str | None
    msgtime: datetime
    msgtype: str
    action: str
    # Text given to the analyser; empty for media without words.
    text: str
    # Non-text content kept (md5sum, file names …): ids, not words.
    content: dict[str, Any] = field(default_factory=dict)
    advisor_userid: str | None = None
    external_userid: str | None = None

    @property
    def analysis_role(self) -> Literal["advisor", "customer"]:
        # Members writing to the app are staff: they are held to the advisor rules.
        return "customer" if self.sender_role == "customer" else "advisor"


@dataclass(frozen=True)
class EventDraft:
    event_key: str
    kind: str  # event | unknown
    event: str
    change_type: str
    occurred_at: datetime
    fields: dict[str, Any]
    raw_xml: str


@dataclass(frozen=True)
class StoreResult:
    stored: bool  # False: already stored earlier (a redelivery)
    record_id: int | None = None
    alerts: tuple[str, ...] = ()
    review_case: bool = False  # a review case was opened for this message
    findings: tuple[tuple[str, str], ...] = ()  # (category, severity) of each finding stored
    # What hooks saw (bot.hooks.StoredMessage | StoredEvent), for after_commit hooks.
    record: Any = None
