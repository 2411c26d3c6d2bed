"""Tables the sop domain owns: campaigns and their versions and steps (what marketing
builds and compliance approves), enrolments and touches (what the engine plans and
sends), and customers' opt-outs.

Customers and advisors belong to ``bot``; enrolments and touches name them by their
WeCom ids (``external_userid`` / ``userid``) rather than by foreign key, so the engine
can plan and read them in bulk without joining the edge's tables, and a touch keeps
naming its customer after the relation is gone.

A campaign runs one version at a time: ``Campaign.current_version`` is the approved
version the engine plans from; ``Campaign.latest_version`` is the newest one (a draft
or one waiting for approval while the current version keeps running).  Each touch
names the version and step it was planned from, so results stay attributable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model

from bot.models import Timestamped


class Segment(StrEnum):
    BANK = "bank"
    SECURITIES = "securities"
    INSURANCE = "insurance"
    CONSUMER_FINANCE = "consumer_finance"
    ALL = "all"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class VersionStatus(StrEnum):
    DRAFT = "draft"  # being edited; never runs
    PENDING_APPROVAL = "pending_approval"  # submitted; waits for compliance
    APPROVED = "approved"  # compliance approved; marketing may activate it
    REJECTED = "rejected"  # compliance rejected; edit and submit again
    ACTIVE = "active"  # the campaign's current version
    SUPERSEDED = "superseded"  # was current; a newer version replaced it


class Reentry(StrEnum):
    NEVER = "never"  # a customer enrols once per campaign, ever
    AFTER_EXIT = "after_exit"  # again once the previous enrolment ended
    ALWAYS = "always"  # every trigger enrols, even while enrolled


class Anchor(StrEnum):
    ENTRY = "entry"  # offset from the enrolment's entry
    PREVIOUS = "previous"  # offset from the previous step's due time


class Delivery(StrEnum):
    WELCOME = "welcome"  # send_welcome_msg with the WelcomeCode (20 s after add)
    MASS_SEND = "mass_send"  # add_msg_template; the advisor confirms in WeCom
    REMINDER = "reminder"  # an app message to the advisor, batched into digests


class EnrolmentState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"


class TouchState(StrEnum):
    PLANNED = "planned"
    DUE = "due"
    SENDING = "sending"
    SENT = "sent"
    CONFIRMED = "confirmed"
    SKIPPED = "skipped"
    FAILED = "failed"


class OptOutSource(StrEnum):
    CUSTOMER_REPLY = "customer_reply"  # the customer's 退订 reply
    OPERATOR = "operator"


class Campaign(Timestamped):
    """A journey marketing builds: what every version shares (name, owner, status)."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    description = fields.CharField(max_length=255, default="")
    # "operator:12" (or "api_key:ab12"); ``owner_name`` is the name shown.
    owner = fields.CharField(max_length=96)
    owner_name = fields.CharField(max_length=128, default="")
    segment = fields.CharEnumField(Segment, default=Segment.ALL, max_length=16)
    status = fields.CharEnumField(
        CampaignStatus, default=CampaignStatus.DRAFT, max_length=16, db_index=True
    )
    # The version the engine plans from (0 before any version was activated).
    current_version = fields.IntField(default=0)
    # The newest version (the one the builder edits).
    latest_version = fields.IntField(default=1)
    activated_at = fields.DatetimeField(null=True)
    paused_at = fields.DatetimeField(null=True)
    archived_at = fields.DatetimeField(null=True)

    class Meta:
        table = "sop_campaign"


class CampaignVersion(Timestamped):
    """One version of a campaign: trigger, audience, steps, exits, goal, approval."""

    id = fields.BigIntField(primary_key=True)
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="versions", on_delete=fields.CASCADE
    )
    version = fields.IntField()
    status = fields.CharEnumField(VersionStatus, default=VersionStatus.DRAFT, max_length=20)
    # {"kind": "customer_added"|"tag_added"|"tag_removed"|"intent"|"attribute_date"
    #  |"inactivity"|"manual", ...params} or None (audience only).
    trigger: Any = fields.JSONField(null=True)
    # A tagging audience expression (tagging.audience) or None (trigger only).
    audience = fields.TextField(null=True)
    reentry = fields.CharEnumField(Reentry, default=Reentry.NEVER, max_length=16)
    # [{"kind": "replied"}, {"kind": "tag_added", "tag": "..."}, {"kind": "opted_out"},
    #  {"kind": "relation_deleted"}, {"kind": "goal"}]
    exit_conditions: Any = fields.JSONField(default=list)
    # e.g. {"intent": "purchase_intent"}; None when the campaign has no goal.
    goal: Any = fields.JSONField(null=True)
    # {"code", "name", "risk_level": "R1".."R5"} or None: suitability at send time.
    product: Any = fields.JSONField(null=True)
    # Customers' local time zone for at_time / windows.
    timezone = fields.CharField(max_length=40, default="Asia/Shanghai")
    created_by = fields.CharField(max_length=96, default="")
    submitted_by = fields.CharField(max_length=96, null=True)
    submitted_at = fields.DatetimeField(null=True)
    # The compliance decision (approve or reject; ``status`` says which).
    approved_by = fields.CharField(max_length=96, null=True)
    approved_at = fields.DatetimeField(null=True)
    approval_comment = fields.TextField(default="")
    activated_at = fields.DatetimeField(null=True)
    # Compliance findings of every step's content at the last save:
    # [{"step": 1, "field": "text", "severity": "violation"|"review", "category",
    #   "spans": [[start, end]], "basis": ..., "rule_id": ...}, ...]
    findings: Any = fields.JSONField(default=list)

    class Meta:
        table = "sop_campaign_version"
        unique_together = (("campaign", "version"),)


class CampaignStep(Model):
    """One touch of a version: when (relative to entry or the previous step), how, what."""

    id = fields.BigIntField(primary_key=True)
    version: fields.ForeignKeyRelation[CampaignVersion] = fields.ForeignKeyField(
        "models.CampaignVersion", related_name="steps", on_delete=fields.CASCADE
    )
    position = fields.IntField()  # 1..n
    name = fields.CharField(max_length=64, default="")
    anchor = fields.CharEnumField(Anchor, default=Anchor.ENTRY, max_length=8)
    offset_days = fields.IntField(default=0)
    offset_minutes = fields.IntField(default=0)
    # "HH:MM" customer-local; None = at the offset itself.
    at_time = fields.CharField(max_length=5, null=True)
    # The send window (outside it = quiet hours).
    window_start = fields.CharField(max_length=5, default="08:00")
    window_end = fields.CharField(max_length=5, default="21:00")
    skip_weekends = fields.BooleanField(default=False)
    skip_holidays = fields.BooleanField(default=False)
    delivery = fields.CharEnumField(Delivery, default=Delivery.MASS_SEND, max_length=16)
    # {"kind": "text"|"image"|"link"|"miniprogram"|"file", "text": ...,
    #  "media": {...}, "link": {...}, "miniprogram": {...}}
    content: Any = fields.JSONField(default=dict)

    class Meta:
        table = "sop_campaign_step"
        unique_together = (("version", "position"),)


class Enrolment(Model):
    """A customer in a campaign (one version), from entry to completion or exit."""

    id = fields.BigIntField(primary_key=True)
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="enrolments", on_delete=fields.CASCADE
    )
    version: fields.ForeignKeyRelation[CampaignVersion] = fields.ForeignKeyField(
        "models.CampaignVersion", related_name="enrolments", on_delete=fields.CASCADE
    )
    customer = fields.CharField(max_length=64)  # external_userid
    advisor = fields.CharField(max_length=64)  # userid
    entered_at = fields.DatetimeField()
    # What enrolled them: "tag_added:<tag>", "intent:<intent>", "manual:<operator>", ...
    trigger_ref = fields.CharField(max_length=160, default="")
    state = fields.CharEnumField(EnrolmentState, default=EnrolmentState.ACTIVE, max_length=16)
    # replied | tag_added | tag_removed | opted_out | relation_deleted | goal | paused | ...
    exit_reason = fields.CharField(max_length=64, null=True)
    exited_at = fields.DatetimeField(null=True)
    goal_reached_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "sop_enrolment"
        indexes = (("campaign", "customer", "state"),)
        # A trigger seen twice enrols once (migration 0002).
        unique_together = (("campaign", "customer", "trigger_ref"),)


class Touch(Model):
    """One planned contact: a step for an enrolment, from planned to sent or skipped."""

    id = fields.BigIntField(primary_key=True)
    enrolment: fields.ForeignKeyRelation[Enrolment] = fields.ForeignKeyField(
        "models.Enrolment", related_name="touches", on_delete=fields.CASCADE
    )
    step: fields.ForeignKeyRelation[CampaignStep] = fields.ForeignKeyField(
        "models.CampaignStep", related_name="touches", on_delete=fields.CASCADE
    )
    version: fields.ForeignKeyRelation[CampaignVersion] = fields.ForeignKeyField(
        "models.CampaignVersion", related_name="touches", on_delete=fields.CASCADE
    )
    # Denormalised from the enrolment: pausing a campaign stops its touches in one
    # indexed UPDATE, and results group by campaign without a join.
    campaign: fields.ForeignKeyRelation[Campaign] = fields.ForeignKeyField(
        "models.Campaign", related_name="touches", on_delete=fields.CASCADE
    )
    customer = fields.CharField(max_length=64)
    advisor = fields.CharField(max_length=64)
    due_at = fields.DatetimeField()  # UTC
    state = fields.CharEnumField(TouchState, default=TouchState.PLANNED, max_length=16)
    # Why skipped or failed: quiet_hours, opted_out, quota, relation_deleted,
    # unsuitable, compliance, late, paused, exited, wecom:<errcode>, ...
    reason = fields.CharField(max_length=64, null=True)
    outbox_id = fields.BigIntField(null=True)
    msgid = fields.CharField(max_length=128, null=True)  # add_msg_template's msgid
    jobid = fields.CharField(max_length=128, null=True)  # e.g. an app message's id
    reminded_at = fields.DatetimeField(null=True)  # the advisor got it (digest or task)
    sent_at = fields.DatetimeField(null=True)
    confirmed_at = fields.DatetimeField(null=True)
    replied_at = fields.DatetimeField(null=True)
    # Sent by the advisor rather than by the engine (migration 0004): "sidebar" when the
    # advisor sent the content from the chat sidebar, with who ("operator:12"); sent_at
    # is then that moment, not the digest's.
    sent_via = fields.CharField(max_length=16, null=True)
    sent_by = fields.CharField(max_length=96, null=True)
    attempts = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "sop_touch"
        unique_together = (("enrolment", "step"),)
        indexes = (
            ("state", "due_at"),
            ("version", "step", "state"),
            ("campaign", "state"),
            # The engine's lookups (migration 0002): by outbox row, by mass-send task.
            ("outbox_id",),
            ("msgid",),
            # The scheduler's claim by advisor (migration 0003).
            ("advisor", "state", "due_at"),
        )


class OptOut(Timestamped):
    """A customer who asked for no more campaign touches (or an operator's opt-out)."""

    id = fields.BigIntField(primary_key=True)
    customer = fields.CharField(max_length=64, unique=True)  # external_userid
    source = fields.CharEnumField(OptOutSource, max_length=16)
    reason = fields.CharField(max_length=255, default="")
    # "operator:12", "customer:<external_userid>" (column "by_actor": BY is an SQL keyword).
    by = fields.CharField(max_length=96, default="", source_field="by_actor")

    class Meta:
        table = "sop_opt_out"
