from __future__ import annotations

from typing import Any

from tortoise import fields

from bot.models import Timestamped


class StubNote(Timestamped):
    id = fields.BigIntField(primary_key=True)
    message_id = fields.BigIntField(unique=True)
    customer = fields.CharField(max_length=64, null=True)
    text_masked = fields.TextField()
    outcome = fields.CharField(max_length=16, default="")
    wecom_answer: Any = fields.JSONField(null=True)

    class Meta:
        table = "stub_note"
