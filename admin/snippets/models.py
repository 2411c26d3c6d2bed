"""The reply library's table (migration 0004); only ``admin.snippets.service`` queries it."""

from __future__ import annotations

from tortoise import fields

from bot.models import Timestamped


class Snippet(Timestamped):
    """A reply an advisor may send as is: text, an image, a link card or a mini-program."""

    id = fields.BigIntField(primary_key=True)
    title = fields.CharField(max_length=64)
    topic = fields.CharField(max_length=32)
    segment = fields.CharField(max_length=32, default="")
    kind = fields.CharField(max_length=16)
    text = fields.TextField(default="")
    link_title = fields.CharField(max_length=128, default="")
    link_url = fields.CharField(max_length=1024, default="")
    link_desc = fields.CharField(max_length=512, default="")
    link_picurl = fields.CharField(max_length=1024, default="")
    mp_appid = fields.CharField(max_length=64, default="")
    mp_title = fields.CharField(max_length=64, default="")
    mp_page = fields.CharField(max_length=256, default="")
    image = fields.BinaryField(null=True)
    image_name = fields.CharField(max_length=128, default="")
    image_type = fields.CharField(max_length=32, default="")
    # WeCom temporary media: valid 3 days from the upload, then uploaded again.
    media_id = fields.CharField(max_length=128, null=True)
    media_uploaded_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=16, default="pending")
    status_reason = fields.TextField(default="")
    revision = fields.IntField(default=1)
    created_by = fields.CharField(max_length=128, default="")
    updated_by = fields.CharField(max_length=128, default="")
    approved_by = fields.CharField(max_length=128, default="")
    approved_at = fields.DatetimeField(null=True)
    approved_rules = fields.CharField(max_length=255, default="")
    checked_rules = fields.CharField(max_length=255, default="")
    checked_at = fields.DatetimeField(null=True)
    use_count = fields.BigIntField(default=0)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "admin_snippet"
        indexes = (("status", "topic"),)
