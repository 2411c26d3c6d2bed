"""Sealing and opening a stored message's original: the text as it was sent, before masking.

Only a compliance reviewer's audited unmask (admin's review flow) opens one.  For a
message that came through the queue the sealed original is the queued payload (callback
XML or archive record) bound to the message by its AAD, so the text is read from it
exactly as the pipeline read it.  A line that never went through the queue — an
advisor's override in the chat sidebar (source ``sidebar``) — seals the text it was
judged on, under the same AAD, so it is opened the same way.
"""

from __future__ import annotations

import json

from bot import models
from bot.flows import message_aad
from bot.pipeline import normalise
from bot.schemas import MessageDraft, QueuedItem, Source
from core.crypto import Keyring

# Sources whose sealed original is ``{"text": …}`` rather than a queued payload.
TEXT_SOURCES = frozenset({"sidebar"})


def seal_text_original(keyring: Keyring, *, source: str, msgid: str, text: str) -> str:
    """A line stored outside the queue, sealed as its message's original."""
    if source not in TEXT_SOURCES:
        raise ValueError(f"source {source!r} seals its queued payload, not a text")
    return keyring.seal_text(
        json.dumps({"text": text}, ensure_ascii=False), aad=message_aad(source, msgid)
    )


def original_text(message: models.Message, *, keyring: Keyring) -> str:
    """The message's text as sent; "" for a message with no text or no sealed original.

    Raises ``core.crypto.DecryptionError`` (or ``UnknownKeyId``) when the keyring cannot
    open it: the caller records the failed attempt.
    """
    if message.original_sealed is None:
        return ""
    payload = json.loads(
        keyring.open_text(message.original_sealed, aad=message_aad(message.source, message.msgid))
    )
    if message.source in TEXT_SOURCES:
        return str(payload.get("text") or "")
    draft = normalise(
        QueuedItem(
            stream_id="",
            source=Source(message.source),
            dedup_key=message.msgid,
            payload=payload,
            received_at=message.msgtime,
        )
    )
    return draft.text if isinstance(draft, MessageDraft) else ""
