"""Tables owned by the WeCom edge: who is who, what was said, what happened.

Only ``bot.service`` queries these tables; other domains go through it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class Timestamped(Model):
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        abstract = True


class Advisor(Timestamped):
    """A WeCom member (客户经理/投顾/代理人) who follows customers."""

    id = fields.BigIntField(primary_key=True)
    userid = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=128, default="")
    department = fields.CharField(max_length=255, default="")
    # From user/get's direct_leader: who hears about churn.
    manager_userid = fields.CharField(max_length=64, null=True)
    status = fields.CharField(max_length=16, default="active")
    synced_at = fields.DatetimeField(null=True)

    class Meta:
        table = "bot_advisor"


class Customer(Timestamped):
    """An external contact (外部联系人)."""

    id = fields.BigIntField(primary_key=True)
    external_userid = fields.CharField(max_length=64, unique=True)
    unionid = fields.CharField(max_length=64, null=True, db_index=True)
    name = fields.CharField(max_length=128, default="")
    # 1 = WeChat user, 2 = WeCom user (externalcontact/get "type").
    contact_type = fields.SmallIntField(default=1)
    corp_name = fields.CharField(max_length=255, default="")
    gender = fields.SmallIntField(default=0)
    # Institution attributes (risk level, AUM band, maturities) imported by API.
    attributes: Any = fields.JSONField(default=dict)
    # Set when externalcontact/get failed; the reconcile job fetches it later.
    needs_sync = fields.BooleanField(default=False)
    synced_at = fields.DatetimeField(null=True)

    class Meta:
        table = "bot_customer"


class RelationStatus(StrEnum):
    ACTIVE = "active"
    LOST = "lost"  # the customer deleted the advisor (del_follow_user)
    REMOVED = "removed"  # the advisor deleted the customer (del_external_contact)


class FollowRelation(Timestamped):
    """One advisor following one customer: WeCom's follow_user entry."""

    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="follows", on_delete=fields.CASCADE
    )
    advisor: fields.ForeignKeyRelation[Advisor] = fields.ForeignKeyField(
        "models.Advisor", related_name="follows", on_delete=fields.CASCADE
    )
    # Advisors type phone numbers and ID numbers into these: the clear copy is masked
    # (compliance_nlp.pii), the original sealed and bound to the (customer, advisor) pair.
    remark = fields.CharField(max_length=255, default="")
    description = fields.CharField(max_length=512, default="")
    remark_sealed = fields.TextField(null=True)
    description_sealed = fields.TextField(null=True)
    added_at = fields.DatetimeField(null=True)
    add_way = fields.IntField(null=True)
    # 渠道: the State of the 联系我 QR code the customer scanned.
    state = fields.CharField(max_length=64, default="")
    status = fields.CharEnumField(RelationStatus, default=RelationStatus.ACTIVE, max_length=16)
    status_changed_at = fields.DatetimeField(null=True)
    # The field key id this relation's phone numbers were last indexed under
    # (CustomerPhone); NULL: never — a row stored before the index existed.
    phones_key_id = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "bot_follow_relation"
        unique_together = (("customer", "advisor"),)


class CustomerPhone(Timestamped):
    """A phone number an advisor noted for a customer: findable, not readable.

    WeCom's follow_user entry carries the advisor's ``remark_mobiles``, and advisors
    type numbers into the remark and description.  The number is stored sealed (bound
    to its row's customer and advisor), masked for display (「138****5678」) and as a
    keyed blind index (``Keyring.blind_index``, HMAC under a key derived from the field
    key, never a plain hash), so the console finds a customer by an exact number.
    """

    id = fields.BigIntField(primary_key=True)
    customer: fields.ForeignKeyRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="phones", on_delete=fields.CASCADE
    )
    advisor: fields.ForeignKeyRelation[Advisor] = fields.ForeignKeyField(
        "models.Advisor", related_name="customer_phones", on_delete=fields.CASCADE
    )
    # remark_mobiles | remark | description: where in the follow entry it was found.
    source = fields.CharField(max_length=16)
    phone_bidx = fields.CharField(max_length=64, db_index=True)
    phone_masked = fields.CharField(max_length=32)
    phone_sealed = fields.TextField()

    class Meta:
        table = "bot_customer_phone"
        unique_together = (("customer", "advisor", "source", "phone_bidx"),)


class GroupChat(Timestamped):
    id = fields.BigIntField(primary_key=True)
    chat_id = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=255, default="")
    owner_userid = fields.CharField(max_length=64, default="")
    member_count = fields.IntField(default=0)
    status = fields.CharField(max_length=16, default="active")

    class Meta:
        table = "bot_group_chat"


class Message(Timestamped):
    """A message after analysis: masked text in clear, the original sealed."""

    id = fields.BigIntField(primary_key=True)
    # WeCom's MsgId (callbacks) or the archive msgid; unique per source, so a
    # redelivered message is stored once.
    msgid = fields.CharField(max_length=128)
    source = fields.CharField(max_length=16)  # callback | archive
    direction = fields.CharField(max_length=32)  # see bot.schemas.Direction
    # Indexes (bot migrations): (roomid, msgtime), (customer_id, msgtime), msgtime,
    # has_violation, intent where set (0014), and the unique (source, msgid).
    sender_id = fields.CharField(max_length=64)
    sender_role = fields.CharField(max_length=16)  # advisor | customer | member | unknown
    receiver_ids: Any = fields.JSONField(default=list)
    roomid = fields.CharField(max_length=64, null=True)
    msgtime = fields.DatetimeField(db_index=True)
    msgtype = fields.CharField(max_length=32)
    action = fields.CharField(max_length=16, default="send")
    masked_text = fields.TextField(default="")
    original_sealed = fields.TextField(null=True)
    intent = fields.CharField(max_length=32, null=True)
    sentiment = fields.CharField(max_length=16, null=True)
    has_violation = fields.BooleanField(default=False, db_index=True)
    analysis: Any = fields.JSONField(null=True)
    customer: fields.ForeignKeyNullableRelation[Customer] = fields.ForeignKeyField(
        "models.Customer", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    advisor: fields.ForeignKeyNullableRelation[Advisor] = fields.ForeignKeyField(
        "models.Advisor", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    # Who handed it in through the API: "api_key:<key id>" (admin's key, named as the
    # audit log names a caller); NULL for the archive puller, callbacks and the CLI.
    ingested_by = fields.CharField(max_length=80, null=True)

    class Meta:
        table = "bot_message"
        unique_together = (("source", "msgid"),)


class Event(Timestamped):
    """A WeCom event (or a payload we could not classify), kept whole: partly sealed."""

    id = fields.BigIntField(primary_key=True)
    event_key = fields.CharField(max_length=128, unique=True)
    kind = fields.CharField(max_length=16)  # event | unknown
    event = fields.CharField(max_length=64, default="", db_index=True)
    change_type = fields.CharField(max_length=64, default="")
    occurred_at = fields.DatetimeField()
    # Only the fields of bot.flows.CLEAR_EVENT_FIELDS (ids, types, times, State …) are
    # in clear; the rest (a member's Mobile/Email/Address, Latitude/Longitude — PIPL
    # art. 28) is sealed in fields_sealed.  Unknown payloads are sealed whole in
    # raw_sealed because we cannot tell what they carry.
    fields_json: Any = fields.JSONField(default=dict)
    fields_sealed = fields.TextField(null=True)
    raw_sealed = fields.TextField(null=True)

    class Meta:
        table = "bot_event"


class ReviewCase(Timestamped):
    """A flagged advisor message waiting for a compliance reviewer."""

    id = fields.BigIntField(primary_key=True)
    message: fields.OneToOneRelation[Message] = fields.OneToOneField(
        "models.Message", related_name="review_case", on_delete=fields.CASCADE
    )
    advisor_userid = fields.CharField(max_length=64, db_index=True)
    categories: Any = fields.JSONField(default=list)
    severity = fields.CharField(max_length=16)
    # open | confirmed | false_positive | escalated (bot.service.REVIEW_STATUSES).
    status = fields.CharField(max_length=16, default="open", db_index=True)
    # The console operator the case is assigned to and the one who decided it: admin's
    # operators, kept by id and name because bot sits below admin (no foreign key).
    assignee_id = fields.BigIntField(null=True)
    assignee_name = fields.CharField(max_length=128, default="")
    decision_comment = fields.TextField(default="")
    decided_by = fields.CharField(max_length=128, default="")
    decided_at = fields.DatetimeField(null=True, db_index=True)
    # A confirmed case's category as a reviewer corrected it ("categories" keeps what
    # the pipeline found); the labelled export uses it (migration 0012).
    corrected_categories: Any = fields.JSONField(null=True)
    corrected_by = fields.CharField(max_length=128, default="")
    corrected_at = fields.DatetimeField(null=True)
    correction_comment = fields.TextField(default="")

    class Meta:
        table = "bot_review_case"
        # The queue: open cases, oldest first (migration 0007).
        indexes = (("status", "created_at"),)


class Alert(Timestamped):
    """Something an advisor or manager must hear about now."""

    id = fields.BigIntField(primary_key=True)
    # One alert per cause: "violation:<msgid>", "churn:<event key>" …
    idem_key = fields.CharField(max_length=160, unique=True)
    kind = fields.CharField(max_length=32, db_index=True)
    recipient_userid = fields.CharField(max_length=64, null=True, db_index=True)
    advisor_userid = fields.CharField(max_length=64, null=True)
    external_userid = fields.CharField(max_length=64, null=True)
    msgid = fields.CharField(max_length=128, null=True)
    detail: Any = fields.JSONField(default=dict)
    status = fields.CharField(max_length=16, default="open")

    class Meta:
        table = "bot_alert"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # a before-send check or an operator said no (reason in last_error)
    # The request may have reached WeCom and no answer came back (a timeout or a cut
    # connection after it left), for a write that must not be repeated blindly
    # (bot.outbox.resend_is_safe): an operator checks WeCom and retries or discards.
    UNKNOWN = "unknown"


class OutboxItem(Timestamped):
    """A WeCom write that must happen, drained by the dispatcher."""

    id = fields.BigIntField(primary_key=True)
    idem_key = fields.CharField(max_length=160, unique=True)
    api = fields.CharField(max_length=96)
    secret_kind = fields.CharField(max_length=16, default="app")
    # What may be read at rest (the customer named by a stand-in); when set,
    # payload_sealed holds what is sent, opened by the dispatcher at send time.
    payload: Any = fields.JSONField()
    payload_sealed = fields.TextField(null=True)
    state = fields.CharEnumField(OutboxState, default=OutboxState.PENDING, max_length=16)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    lease_until = fields.DatetimeField(null=True)
    # The claim token of the dispatcher that owns the row: every finish and lease
    # renewal is ``WHERE id = ? AND claim = ?``, so a dispatcher whose lease ran out
    # and was taken over changes nothing.
    claim = fields.CharField(max_length=32, null=True)
    # Since when a request for this row may have reached WeCom without an answer
    # (set just before a request leaves, cleared on any answer): decides whether a
    # stale or failed attempt may be sent again (bot.outbox.resend_is_safe).
    request_at = fields.DatetimeField(null=True)
    last_errcode = fields.IntField(null=True)
    last_error = fields.CharField(max_length=512, default="")
    result: Any = fields.JSONField(null=True)
    done_at = fields.DatetimeField(null=True)
    # Who asked and for what (bot.alert:…, sop.touch:42): selects the before-send
    # check and the on-settled callback (bot.outbox).
    origin = fields.CharField(max_length=96, default="", db_index=True)
    settled_at = fields.DatetimeField(null=True)
    # The on-settled callback has yet to succeed; the dispatcher retries it.
    notify_pending = fields.BooleanField(default=False, db_index=True)

    class Meta:
        table = "bot_outbox"
        # (state, next_attempt_at): the dispatcher's due-row query; (state, lease_until):
        # its stale-lease scan and the per-state gauge.
        indexes = (("state", "lease_until"), ("state", "next_attempt_at"))


class DeadLetter(Timestamped):
    """A stream entry that kept failing: kept for an operator, never dropped."""

    id = fields.BigIntField(primary_key=True)
    stream_id = fields.CharField(max_length=64, unique=True)
    source = fields.CharField(max_length=16)
    # Text, not a bounded string: an entry queued with an over-long key (before ingest
    # checked ids) must still be dead-lettered, or it would fail forever; the key is
    # also the AAD of the sealed payload, so it is kept whole, never cut.
    dedup_key = fields.TextField()
    # The stream entry's sealed payload, as it was queued.
    payload_sealed = fields.TextField()
    error = fields.CharField(max_length=1024, default="")
    deliveries = fields.IntField(default=0)
    status = fields.CharField(
        max_length=16, default="open", db_index=True
    )  # open | requeued | discarded

    class Meta:
        table = "bot_dead_letter"


class ArchiveCursor(Timestamped):
    """会话存档 seq cursor: advanced only after a batch is durably queued."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    seq = fields.BigIntField(default=0)
    # Fencing token: incremented by each pull's claim; the cursor moves only under the
    # latest claim (bot.service.claim_archive_cursor).
    fence = fields.BigIntField(default=0)

    class Meta:
        table = "bot_archive_cursor"


class FieldKey(Timestamped):
    """A field key data was sealed with: its id and an HMAC proving which key (never the key).

    A process whose configured key differs under a recorded id would write rows that
    nobody can open later, and fail to open the old ones as if tampered: it is refused
    at start (bot.flows.check_field_keys).
    """

    id = fields.BigIntField(primary_key=True)
    key_id = fields.CharField(max_length=64, unique=True)
    key_check = fields.CharField(max_length=64)

    class Meta:
        table = "bot_field_key"


class RulesOverlay(Timestamped):
    """A published version of the institution's rule overlay (``bot.rules_overlay``)."""

    id = fields.BigIntField(primary_key=True)
    version = fields.CharField(max_length=32, unique=True)
    # compliance_nlp.overlay's JSON document, as the console published it.
    document = fields.TextField()
    published_by = fields.CharField(max_length=128, default="")

    class Meta:
        table = "bot_rules_overlay"
