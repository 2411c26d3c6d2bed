"""会话存档 (message archive) records: validation, normalisation, ingest.

Advisor–customer chats reach us only through the archive (WeCom never sends
them by callback).  An institution's own puller, our puller
(``bot.archive_puller``) and the sandbox all hand us decrypted records in
WeCom's archive JSON shape; they enter the same stream as callbacks.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.schemas import Direction, MessageDraft, Source, is_external_id
from bot.stream import MAX_ENQUEUE_BATCH, EnqueueResult, InboundStream
from compliance_nlp import AnalyzerConfig

# A whole record as JSON text; WeCom's largest text message is a few thousand.
MAX_RECORD_CHARS = 256 * 1024
# The words one record may give the compliance check (compliance_nlp refuses more,
# and a text it refuses could never be stored: analysis comes before storage).
MAX_TEXT_CHARS = AnalyzerConfig().max_chars
# WeCom's records nest three or four levels (mixed, news); far deeper is not a record.
MAX_RECORD_DEPTH = 32
# Columns the ids end up in (bot.models): Message.msgid, Message.sender_id,
# Message.roomid, Advisor.userid / Customer.external_userid, Message.msgtype.
MAX_MSGID_CHARS = 128
MAX_USERID_CHARS = 64
MAX_MSGTYPE_CHARS = 32
# Milliseconds; later than year 9999 cannot be a datetime.
MAX_MS = 253_402_300_799_999


class RecordError(ValueError):
    """An archive record that cannot be accepted; the message says which field."""


def _req_str(rec: dict[str, Any], name: str, *, max_chars: int) -> str:
    v = rec.get(name)
    if not isinstance(v, str) or not v:
        raise RecordError(f"field {name!r} must be a non-empty string")
    if len(v) > max_chars:
        raise RecordError(f"field {name!r} is {len(v)} characters long; at most {max_chars}")
    return v


def _check_values(rec: dict[str, Any]) -> None:
    """Every string encodable (no lone surrogate), storable (no NUL), numbers finite.

    JSON's ``"\\ud800"`` escape gives a string that is not Unicode text: it cannot be
    sealed or stored, so the record is refused here with the field named, instead of
    failing the whole call (or the worker) later.  PostgreSQL text and JSON cannot
    hold U+0000 nor NaN.  Walked without recursion, so no depth can crash it.
    """
    stack: list[tuple[str, Any, int]] = [("", rec, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_RECORD_DEPTH:
                raise RecordError(f"record nested deeper than {MAX_RECORD_DEPTH} levels")
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in pairs:
                if isinstance(k, str):
                    sub = f"{path}.{_printable(k)}" if path else _printable(k)
                    _check_text(sub, k, what="name")
                else:
                    sub = f"{path}[{k}]"
                stack.append((sub, v, depth + 1))
        elif isinstance(value, str):
            _check_text(path, value, what="value")
        elif isinstance(value, float) and not math.isfinite(value):
            raise RecordError(f"field {path!r} is not a finite number")


def _clean_json(rec: dict[str, Any]) -> str | None:
    """The record as compact JSON when every value passes ``_check_values`` as a whole;
    None when one may not (the walk then names the field, or finds it fine after all).

    A few C calls instead of a walk that builds every field's path: one ``json.dumps``
    refuses NaN and infinities, encoding its text refuses a lone surrogate anywhere,
    and a NUL is written as ``\\u0000`` (a text holding that very escape goes to the
    walk too, which lets it through).  Only the depth is counted in Python, over the
    containers alone.
    """
    try:
        text = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    if "\\u0000" in text:
        return None
    stack: list[tuple[Any, int]] = [(rec, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_RECORD_DEPTH:
            return None
        children = value.values() if isinstance(value, dict) else value
        stack += [(v, depth + 1) for v in children if isinstance(v, dict | list)]
    return text


def _printable(name: str) -> str:
    """A field name fit for an error message: encodable, and short."""
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name if len(name) <= 40 else name[:40] + "…"


def _check_text(path: str, text: str, *, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(
            f"field {path!r} {what} holds a lone surrogate (e.g. \\ud800): not valid Unicode"
        ) from None
    if "\x00" in text:
        raise RecordError(f"field {path!r} {what} holds a NUL character (\\u0000)")


def validate_record(rec: Any) -> dict[str, Any]:
    """Check the shape WeCom's archive gives; return the record unchanged.

    Everything the worker would fail on for good is refused here, per record:
    ids longer than the columns they are stored in, text the compliance check
    refuses, text that cannot be encoded, oversize records.  Accepted records
    then cannot become entries that fail on every delivery.
    """
    if not isinstance(rec, dict):
        raise RecordError("record must be a JSON object")
    text_json = _clean_json(rec)
    if text_json is None:  # something to refuse, or to look at closer: the walk names it
        _check_values(rec)
        text_json = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
    size = len(text_json)
    if size > MAX_RECORD_CHARS:
        raise RecordError(f"record is {size} characters as JSON; at most {MAX_RECORD_CHARS}")
    _req_str(rec, "msgid", max_chars=MAX_MSGID_CHARS)
    action = rec.get("action", "send")
    if action not in ("send", "recall", "switch"):
        raise RecordError("field 'action' must be one of send, recall, switch")
    if action == "switch":
        # 切换企业日志: {msgid, action, time, user}.
        _req_str(rec, "user", max_chars=MAX_USERID_CHARS)
        at = rec.get("time")
        if not isinstance(at, int) or isinstance(at, bool) or not 0 < at <= MAX_MS:
            raise RecordError("field 'time' must be a positive integer (ms) for a switch record")
        return rec
    _req_str(rec, "from", max_chars=MAX_USERID_CHARS)
    tolist = rec.get("tolist")
    if not isinstance(tolist, list) or not all(isinstance(t, str) for t in tolist):
        raise RecordError("field 'tolist' must be a list of strings")
    for i, t in enumerate(tolist):
        if len(t) > MAX_USERID_CHARS:
            raise RecordError(
                f"field 'tolist[{i}]' is {len(t)} characters long; at most {MAX_USERID_CHARS}"
            )
    msgtime = rec.get("msgtime")
    if not isinstance(msgtime, int) or isinstance(msgtime, bool) or not 0 < msgtime <= MAX_MS:
        raise RecordError("field 'msgtime' must be a positive integer (milliseconds)")
    msgtype = _req_str(rec, "msgtype", max_chars=MAX_MSGTYPE_CHARS)
    roomid = rec.get("roomid", "")
    if roomid is not None and not isinstance(roomid, str):
        raise RecordError("field 'roomid' must be a string")
    if roomid and len(roomid) > MAX_USERID_CHARS:
        raise RecordError(
            f"field 'roomid' is {len(roomid)} characters long; at most {MAX_USERID_CHARS}"
        )
    if msgtype == "text":
        body = rec.get("text")
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            raise RecordError("a text record needs 'text.content' as a string")
    text = _record_text(rec)
    if len(text) > MAX_TEXT_CHARS:
        raise RecordError(
            f"the record's text is {len(text)} characters; the compliance check takes "
            f"at most {MAX_TEXT_CHARS}"
        )
    return rec


def _record_text(rec: dict[str, Any]) -> str:
    """The words a record carries, for analysis; media without words give ''."""
    msgtype = rec.get("msgtype", "")
    body = rec.get(msgtype)
    if not isinstance(body, dict):
        return ""
    if msgtype in ("text", "markdown"):
        return str(body.get("content", ""))
    if msgtype == "link":
        return " ".join(str(body.get(k, "")) for k in ("title", "description")).strip()
    if msgtype == "file":
        return str(body.get("filename", ""))
    if msgtype == "mixed":
        parts = []
        for item in body.get("item", []) or []:
            if isinstance(item, dict) and item.get("type") == "text":
                content = item.get("content", "")
                if isinstance(content, str) and content.startswith("{"):
                    try:
                        content = json.loads(content).get("content", "")
                    except (ValueError, RecursionError):  # not JSON after all: the text as is
                        pass
                parts.append(str(content))
        return "\n".join(parts)
    if msgtype == "news":
        items = (body.get("info") or {}).get("item", [])
        return "\n".join(
            f"{i.get('title', '')} {i.get('description', '')}".strip()
            for i in items
            if isinstance(i, dict)
        )
    return ""


# The queued payload's key beside "record": who sent it through the API.
SENDER_KEY = "sender"
MAX_SENDER_CHARS = 80


def record_to_draft(rec: dict[str, Any], *, sender: str | None = None) -> MessageDraft:
    action = rec.get("action", "send")
    ingested_by = sender[:MAX_SENDER_CHARS] if isinstance(sender, str) and sender else None
    if action == "switch":
        user = rec["user"]
        return MessageDraft(
            msgid=rec["msgid"],
            source=Source.ARCHIVE,
            direction=Direction.INTERNAL,
            sender_id=user,
            sender_role="member",
            receiver_ids=(),
            roomid=None,
            msgtime=datetime.fromtimestamp(rec["time"] / 1000, tz=UTC),
            msgtype="switch",
            action="switch",
            text="",
            advisor_userid=user,
            ingested_by=ingested_by,
        )
    sender = rec["from"]
    tolist = tuple(rec.get("tolist") or ())
    roomid = rec.get("roomid") or None
    sender_external = is_external_id(sender)
    if roomid:
        direction = Direction.GROUP
    elif sender_external:
        direction = Direction.CUSTOMER_TO_ADVISOR
    elif any(is_external_id(t) for t in tolist):
        direction = Direction.ADVISOR_TO_CUSTOMER
    else:
        direction = Direction.INTERNAL
    advisor = None if sender_external else sender
    external = sender if sender_external else None
    if not roomid:
        if advisor is None:
            advisor = next((t for t in tolist if not is_external_id(t)), None)
        if external is None:
            external = next((t for t in tolist if is_external_id(t)), None)
    msgtype = rec["msgtype"]
    content = (
        {
            k: v
            for k, v in (rec.get(msgtype) or {}).items()
            if k
            in (
                "md5sum",
                "filesize",
                "sdkfileid",
                "fileext",
                "pre_msgid",
                "play_length",
            )
        }
        if isinstance(rec.get(msgtype), dict)
        else {}
    )
    return MessageDraft(
        msgid=rec["msgid"],
        source=Source.ARCHIVE,
        direction=direction,
        sender_id=sender,
        sender_role="customer" if sender_external else "advisor",
        receiver_ids=tolist,
        roomid=roomid,
        msgtime=datetime.fromtimestamp(rec["msgtime"] / 1000, tz=UTC),
        msgtype=msgtype,
        action=action,
        text=_record_text(rec),
        content=content,
        advisor_userid=advisor,
        external_userid=external,
        ingested_by=ingested_by,
    )


@dataclass
class IngestReport:
    accepted: int = 0
    duplicate: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "rejected": len(self.rejected),
            "errors": self.rejected,
        }


def _msgid_for_report(rec: Any) -> str | None:
    """The record's msgid as it may be echoed: printable, and cut when over-long."""
    msgid = rec.get("msgid") if isinstance(rec, dict) else None
    if not isinstance(msgid, str):
        return None
    msgid = msgid.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return msgid if len(msgid) <= MAX_MSGID_CHARS else msgid[:MAX_MSGID_CHARS] + "…"


def archive_dedup_key(msgid: str) -> str:
    return f"arc:{msgid}"


# Records are queued a window at a time, concurrently within it: the stream coalesces
# concurrent enqueues into one script call (``bot.stream.MAX_ENQUEUE_BATCH`` items), so
# a window costs a Redis round trip and, under ``appendfsync always``, one AOF fsync per
# batch instead of one per record (several ms each: 1,000 records took 4 s).  A window
# bounds the memory one large import holds at once; records stay in their order.
INGEST_WINDOW = 4 * MAX_ENQUEUE_BATCH


async def ingest_records(
    stream: InboundStream, records: list[Any], *, sender: str | None = None
) -> IngestReport:
    """Queue each valid record once; bad records are reported, not queued.

    ``sender`` names who handed the records in (``api_key:<key id>``, as the audit log
    names a caller); the stored message keeps it.  A record already queued keeps the
    sender it came with first.

    Raises ``redis.RedisError`` if Redis fails: the caller reports failure and
    the sender retries (records already queued dedup on retry).
    """
    report = IngestReport()
    for start in range(0, len(records), INGEST_WINDOW):
        window = records[start : start + INGEST_WINDOW]
        outcomes = await asyncio.gather(
            *(_ingest_one(stream, rec, sender) for rec in window), return_exceptions=True
        )
        failure: BaseException | None = None
        for index, (rec, outcome) in enumerate(zip(window, outcomes, strict=True), start):
            if isinstance(
                outcome, RecordError | UnicodeError | ValueError | TypeError | RecursionError
            ):
                # Per record, never the whole call: the records after a bad one are
                # queued as well (Redis failures are not among these: they propagate).
                error = (
                    str(outcome)
                    if isinstance(outcome, RecordError)
                    else f"cannot be queued: {outcome}"
                )
                report.rejected.append(
                    {"index": index, "msgid": _msgid_for_report(rec), "error": error}
                )
            elif isinstance(outcome, BaseException):
                failure = failure or outcome
            elif outcome.outcome == "queued":
                report.accepted += 1
            else:
                report.duplicate += 1
        if failure is not None:
            raise failure
    return report


async def _ingest_one(stream: InboundStream, rec: Any, sender: str | None) -> EnqueueResult:
    validate_record(rec)
    payload: dict[str, Any] = {"record": rec}
    if sender:
        payload[SENDER_KEY] = sender
    return await stream.enqueue(
        source=Source.ARCHIVE, dedup_key=archive_dedup_key(rec["msgid"]), payload=payload
    )
