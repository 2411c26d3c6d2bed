"""会话存档 (message archive) records: validation, normalisation, ingest.

Advisor–customer chats reach us only through the archive (WeCom never sends
them by callback).  An institution's own puller, our puller
(``bot.archive_puller``) and the sandbox all hand us decrypted records in
WeCom's archive JSON shape; they enter the same stream as callbacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.schemas import Direction, MessageDraft, Source, is_external_id
from bot.stream import InboundStream

MAX_RECORD_CHARS = 256 * 1024


class RecordError(ValueError):
    """An archive record that cannot be accepted; the message says which field."""


def _req_str(rec: dict[str, Any], name: str) -> str:
    v = rec.get(name)
    if not isinstance(v, str) or not v:
        raise RecordError(f"field {name!r} must be a non-empty string")
    return v


def validate_record(rec: Any) -> dict[str, Any]:
    """Check the shape WeCom's archive gives; return the record unchanged."""
    if not isinstance(rec, dict):
        raise RecordError("record must be a JSON object")
    _req_str(rec, "msgid")
    action = rec.get("action", "send")
    if action not in ("send", "recall", "switch"):
        raise RecordError("field 'action' must be one of send, recall, switch")
    if action == "switch":
        # 切换企业日志: {msgid, action, time, user}.
        _req_str(rec, "user")
        if not isinstance(rec.get("time"), int):
            raise RecordError("field 'time' must be an integer (ms) for a switch record")
        return rec
    _req_str(rec, "from")
    tolist = rec.get("tolist")
    if not isinstance(tolist, list) or not all(isinstance(t, str) for t in tolist):
        raise RecordError("field 'tolist' must be a list of strings")
    msgtime = rec.get("msgtime")
    if not isinstance(msgtime, int) or isinstance(msgtime, bool) or msgtime <= 0:
        raise RecordError("field 'msgtime' must be a positive integer (milliseconds)")
    msgtype = _req_str(rec, "msgtype")
    roomid = rec.get("roomid", "")
    if roomid is not None and not isinstance(roomid, str):
        raise RecordError("field 'roomid' must be a string")
    if msgtype == "text":
        body = rec.get("text")
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            raise RecordError("a text record needs 'text.content' as a string")
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
                    except ValueError:
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


def record_to_draft(rec: dict[str, Any]) -> MessageDraft:
    action = rec.get("action", "send")
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


def archive_dedup_key(msgid: str) -> str:
    return f"arc:{msgid}"


async def ingest_records(stream: InboundStream, records: list[Any]) -> IngestReport:
    """Queue each valid record once; bad records are reported, not queued.

    Raises ``redis.RedisError`` if Redis fails: the caller reports failure and
    the sender retries (records already queued dedup on retry).
    """
    report = IngestReport()
    for index, rec in enumerate(records):
        try:
            validate_record(rec)
        except RecordError as exc:
            msgid = rec.get("msgid") if isinstance(rec, dict) else None
            report.rejected.append({"index": index, "msgid": msgid, "error": str(exc)})
            continue
        result = await stream.enqueue(
            source=Source.ARCHIVE,
            dedup_key=archive_dedup_key(rec["msgid"]),
            payload={"record": rec},
        )
        if result.outcome == "queued":
            report.accepted += 1
        else:
            report.duplicate += 1
    return report
