"""Tables the tagging domain owns: the tag library, customer tags and their history,
WeCom sync bookkeeping, saved audiences.

Customers and advisors belong to ``bot``; a customer tag references the customer row
(one Tortoise app, so relations cross domains) but never writes it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from bot.models import Customer, Timestamped


class Origin(StrEnum):
    """Where a group or tag was created: decides who wins a conflict (see tagging.sync)."""

    SIYU = "siyu"
    WECOM = "wecom"


class TagSource(StrEnum):
    """Who put a tag on a customer."""

    MANUAL = "manual"  # an operator, in the console, API or CLI
    RULE = "rule"  # an auto-tag rule
    WECOM = "wecom"  # an advisor, in WeCom (follow_user[].tags)
    IMPORT = "import"  # a core-system import


class TagGroup(Timestamped):
    """A tag group (标签组); mirrors a WeCom corp tag group when ``wecom_group_id`` is set."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    order = fields.IntField(default=0)
    colour = fields.CharField(max_length=16, default="")
    description = fields.CharField(max_length=255, default="")
    owner = fields.CharField(max_length=64, default="")
    origin = fields.CharEnumField(Origin, default=Origin.SIYU, max_length=8)
    # siyu-only groups stay local unless marked; WeCom-origin groups always sync.
    sync_to_wecom = fields.BooleanField(default=False)
    wecom_group_id = fields.CharField(max_length=64, null=True, unique=True)
    # WeCom strategy (规则组) id where WeCom has one; 0/None for corp-wide groups.
    strategy_id = fields.IntField(null=True)
    # A local change is queued for WeCom: a pull must not undo it before it lands.
    push_pending = fields.BooleanField(default=False)
    synced_at = fields.DatetimeField(null=True)
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tagging_group"


class Tag(Timestamped):
    """A tag (标签) in a group; mirrors a WeCom corp tag when ``wecom_tag_id`` is set."""

    id = fields.BigIntField(primary_key=True)
    group: fields.ForeignKeyRelation[TagGroup] = fields.ForeignKeyField(
        "models.TagGroup", related_name="tags", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=64)
    order = fields.IntField(default=0)
    colour = fields.CharField(max_length=16, default="")
    description = fields.CharField(max_length=255, default="")
    owner = fields.CharField(max_length=64, default="")
    origin = fields.CharEnumField(Origin, default=Origin.SIYU, max_length=8)
    wecom_tag_id = fields.CharField(max_length=64, null=True, unique=True)
    push_pending = fields.BooleanField(default=False)
    synced_at = fields.DatetimeField(null=True)
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tagging_tag"


class CustomerTag(Timestamped):
    """A tag a customer carries now: who or what applied it, when, and why."""

    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="tags", on_delete=fields.CASCADE
    )
    tag: fields.ForeignKeyRelation[Tag] = fields.ForeignKeyField(
        "models.Tag", related_name="customers", on_delete=fields.CASCADE
    )
    source = fields.CharEnumField(TagSource, max_length=8)
    # "operator:12", "api_key:ab12", "rule:5", "wecom:<advisor userid>", "import:<file>".
    applied_by = fields.CharField(max_length=96)
    applied_at = fields.DatetimeField()
    # For a rule: {"rule_id": 5, "message_ids": [..]}; ids and reasons only, no text.
    reason: Any = fields.JSONField(default=dict)
    # The advisor relation it came from (WeCom tags are per relation).
    advisor_userid = fields.CharField(max_length=64, null=True)
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tagging_customer_tag"
        unique_together = (("customer", "tag"),)


class CustomerTagHistory(Timestamped):
    """Every add and removal of a customer tag, kept after the tag is gone."""

    id = fields.BigIntField(primary_key=True)
    customer_id = fields.BigIntField(db_index=True)
    tag_id = fields.BigIntField(db_index=True)
    action = fields.CharField(max_length=8)  # add | remove
    source = fields.CharEnumField(TagSource, max_length=8)
    actor = fields.CharField(max_length=96)
    reason: Any = fields.JSONField(default=dict)
    at = fields.DatetimeField()

    class Meta:
        table = "tagging_customer_tag_history"


class SyncRequest(Timestamped):
    """A WeCom change seen by callback, to be pulled by the sync job (no network in a hook).

    ``key`` is the event's natural key, so a redelivered callback asks once.
    """

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=160, unique=True)
    # library (a change_external_tag) | contact (edit_external_contact: an advisor's tags)
    kind = fields.CharField(max_length=16)
    wecom_id = fields.CharField(max_length=64, default="")
    advisor_userid = fields.CharField(max_length=64, default="")
    change_type = fields.CharField(max_length=32, default="")
    attempts = fields.IntField(default=0)
    last_error = fields.CharField(max_length=255, default="")
    done_at = fields.DatetimeField(null=True, db_index=True)

    class Meta:
        table = "tagging_sync_request"


class SyncRun(Timestamped):
    """One pull or reconcile, and what it changed: the report an operator reads."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=16)  # pull | reconcile | contact
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    ok = fields.BooleanField(default=False)
    changes: Any = fields.JSONField(default=list)
    error = fields.CharField(max_length=255, default="")

    class Meta:
        table = "tagging_sync_run"


class Audience(Timestamped):
    """A saved audience: a name and an expression (tagging.audience)."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    expr = fields.TextField()
    created_by = fields.CharField(max_length=96, default="")

    class Meta:
        table = "tagging_audience"


class TagRule(Timestamped):
    """An auto-tag rule: declarative JSON (``tagging.rules.RuleSpec``), validated on save."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    trigger = fields.CharField(max_length=16, db_index=True)  # message | event | schedule
    spec: Any = fields.JSONField()
    enabled = fields.BooleanField(default=False)
    created_by = fields.CharField(max_length=96, default="")
    last_run_at = fields.DatetimeField(null=True)
    last_run_applied = fields.IntField(default=0)

    class Meta:
        table = "tagging_rule"


class AttributeField(Timestamped):
    """A custom attribute an institution adds at run time (beside the built-in ones in
    ``tagging.attributes``): its type and the checks an import applies to it."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    label = fields.CharField(max_length=64, default="")
    type = fields.CharField(max_length=8)  # string | int | decimal | date | enum | list
    required = fields.BooleanField(default=False)
    # Range: numbers for int/decimal, YYYY-MM-DD for dates (as text, exact).
    minimum = fields.CharField(max_length=40, null=True)
    maximum = fields.CharField(max_length=40, null=True)
    enum_values: Any = fields.JSONField(default=list)
    max_length = fields.IntField(default=64)
    masked_by_role = fields.BooleanField(default=False)
    # Stored sealed (AES-GCM), never in the clear; implies masked_by_role.
    sensitive = fields.BooleanField(default=False)
    # A sensitive number's band boundaries: the band is kept in the clear for audiences.
    bands: Any = fields.JSONField(default=list)
    created_by = fields.CharField(max_length=96, default="")
    description = fields.CharField(max_length=255, default="")
    # Retired: refused by imports, rules and audiences for new use; the values stay
    # stored and readable (the customer page still shows them).  Null while in use.
    retired_at = fields.DatetimeField(null=True)
    retired_by = fields.CharField(max_length=96, default="")

    class Meta:
        table = "tagging_attribute_field"


class SealedAttribute(Timestamped):
    """A sensitive attribute's value (AUM, holdings, a field marked sensitive), sealed
    with the field keys and bound to its customer and name."""

    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="sealed_attributes", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    sealed = fields.TextField()

    class Meta:
        table = "tagging_sealed_attribute"
        unique_together = (("customer", "name"),)


class AttributeImport(Timestamped):
    """One attribute import (an API call, a CSV file): who, when, what it did."""

    id = fields.BigIntField(primary_key=True)
    actor = fields.CharField(max_length=96)
    actor_name = fields.CharField(max_length=96, default="")
    source = fields.CharField(max_length=16)  # api | csv | console
    filename = fields.CharField(max_length=255, default="")
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=16, default="running")  # running | done | failed
    rows = fields.IntField(default=0)
    accepted = fields.IntField(default=0)
    unchanged = fields.IntField(default=0)
    rejected = fields.IntField(default=0)

    class Meta:
        table = "tagging_import"


class ImportReject(Timestamped):
    """A row an import refused: its number, the kind of key, the masked key, why.

    The row's values are not kept (they may be AUM or holdings): the number points
    the institution at the line of its own file.
    """

    id = fields.BigIntField(primary_key=True)
    batch: fields.ForeignKeyRelation[AttributeImport] = fields.ForeignKeyField(
        "models.AttributeImport", related_name="rejects", on_delete=fields.CASCADE
    )
    row = fields.IntField()
    key = fields.CharField(max_length=16, default="")
    who = fields.CharField(max_length=64, default="")
    error = fields.CharField(max_length=255)

    class Meta:
        table = "tagging_import_reject"
