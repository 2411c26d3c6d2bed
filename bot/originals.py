"""Opening a stored message's sealed original: the text as it was sent, before masking.

Only a compliance reviewer's audited unmask (admin's review flow) calls this.  The
sealed original is the queued payload (callback XML or archive record) bound to the
message by its AAD, so the text is read from it exactly as the pipeline read it.
"""

from __future__ import annotations

import json

from bot import models
from bot.flows import message_aad
from bot.pipeline import normalise
from bot.schemas import MessageDraft, QueuedItem, Source
from core.crypto import Keyring


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
