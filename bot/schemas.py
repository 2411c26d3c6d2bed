"""Shapes passed between the receiver, the stream and the pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


# A callback's payload on the stream: ``{"xml": <decrypted XML>, CALLBACK_FIELDS: <its
# fields as bot.wecom.xmlsafe.parse_xml gives them>}``.  The receiver parsed the XML to
# answer WeCom; the worker reads the fields rather than parsing it again.  The stored
# original is the XML alone (``bot.pipeline.original_of``).  An entry without them (queued
# by an earlier release) is parsed again.
CALLBACK_FIELDS = "fields"


@dataclass(frozen=True)
class QueuedItem:
    """One entry read from the inbound stream."""

    stream_id: str
    source: Source
    dedup_key: str
    payload: dict[str, Any]
    received_at: datetime
    deliveries: int = 1
    # ``payload`` as the stream entry held it (``bot.stream.encode_payload``): storing
    # seals this text as the message's original rather than encoding the payload again.
    payload_json: str | None = field(default=None, repr=False, compare=False)


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
    # Who handed an archive record in through the API ("api_key:<key id>"), if anyone.
    ingested_by: str | None = None

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


# ------------------------------------------------------------------ API shapes
# The pydantic models the edge's /api/v1 handlers validate with and answer in; the
# OpenAPI document is generated from them (core.apidoc).


class ContextTurnIn(BaseModel):
    """One earlier turn of the conversation, oldest first (masked text is enough)."""

    role: Literal["advisor", "customer"]
    text: str


class ComplianceCheckIn(BaseModel):
    """A line to check before it is sent, with the visible thread before it."""

    text: str = Field(description="the line, at most 100,000 characters (longer: 413)")
    role: Literal["advisor", "customer"] = "advisor"
    context: list[ContextTurnIn] | None = Field(
        default=None,
        max_length=50,
        description="the turns before the line, oldest first; 100,000 characters in all",
    )


class PiiOut(BaseModel):
    type: Literal["phone", "bank_card", "id_card", "email"]
    start: int
    end: int


class FindingOut(BaseModel):
    category: str = Field(description="compliance_nlp's category, e.g. guaranteed_return")
    severity: Literal["violation", "review"]
    start: int = Field(description="offset of the span in the text as given")
    end: int
    evidence: str = Field(description="the span's text, personal numbers masked")
    rule_id: str
    source: Literal["rule", "model"]
    basis: str = Field(description="the regulation the rule rests on")
    score: float | None = None
    context_index: int | None = Field(
        default=None, description="the context turn that gave the line this meaning"
    )
    context_evidence: str | None = None
    suggestion: str | None = Field(
        default=None, description="a compliant rewording, where the rule data has one"
    )


class AnalysisOut(BaseModel):
    intent: str | None
    intent_score: float | None
    sentiment: Literal["negative", "neutral", "positive"]
    violations: list[FindingOut]
    pii: list[PiiOut]
    masked_text: str


class ArchiveRecordIn(BaseModel):
    """A decrypted 会话存档 record as WeCom's finance SDK gives it (other fields kept)."""

    model_config = ConfigDict(extra="allow")

    msgid: str
    action: Literal["send", "recall", "switch"] = "send"
    sender: str | None = Field(default=None, alias="from")
    tolist: list[str] = []
    roomid: str = ""
    msgtime: int = Field(default=0, description="milliseconds since the epoch")
    msgtype: str = ""


class ArchiveBatchIn(BaseModel):
    """Records as ``{"records": [...]}`` (a bare array and JSON lines are accepted too)."""

    records: list[ArchiveRecordIn] = Field(max_length=10_000)


class IngestErrorOut(BaseModel):
    index: int
    msgid: str | None = None
    error: str


class IngestReportOut(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    errors: list[IngestErrorOut]
