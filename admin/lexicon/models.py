"""Tables of the lexicon compliance owns (migration 0003); only its service queries them."""

from __future__ import annotations

from typing import Any

from tortoise import fields

from bot.models import Timestamped


class LexiconEntry(Timestamped):
    """One entry of the working draft: a term, an exception, a basis, a rewording, a pack.

    ``kind`` decides which columns mean something:

    - ``term``: ``text`` flagged in ``category`` under ``basis`` (a shipped basis key or
      an institution ``basis`` entry's key), ``severity``, ``suggestion``;
    - ``exception``: ``text`` never flagged in ``categories`` (empty: any);
    - ``basis``: ``text`` is the key, ``body`` the regulation's wording;
    - ``rewording``: ``text`` a shipped rule id or a category, ``body`` the rewording;
    - ``segment``: ``text`` a segment whose pack is switched on.

    ``segment`` on a term or exception puts it in that segment's pack.
    """

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=16, unique=True)
    kind = fields.CharField(max_length=16)
    text = fields.CharField(max_length=200)
    body = fields.TextField(default="")
    category = fields.CharField(max_length=32, default="")
    categories: Any = fields.JSONField(default=list)
    basis = fields.CharField(max_length=32, default="")
    severity = fields.CharField(max_length=16, default="violation")
    segment = fields.CharField(max_length=32, default="")
    suggestion = fields.TextField(default="")
    note = fields.TextField(default="")
    updated_by = fields.CharField(max_length=128, default="")

    class Meta:
        table = "admin_lexicon_entry"
        unique_together = (("kind", "text", "segment"),)


class LexiconVersion(Timestamped):
    """A published version: who, when, why, the entries, the overlay, the dry run."""

    id = fields.BigIntField(primary_key=True)
    number = fields.IntField(unique=True)
    reason = fields.TextField()
    published_by_id = fields.BigIntField(null=True)
    published_by = fields.CharField(max_length=128, default="")
    entries: Any = fields.JSONField(default=list)
    document = fields.TextField()
    base_version = fields.CharField(max_length=128, default="")
    rollback_of = fields.IntField(null=True)
    effect: Any = fields.JSONField(null=True)

    class Meta:
        table = "admin_lexicon_version"
