"""Auto-tag rules: declarative, stored, validated on save, applied with their reason.

A rule is JSON of three parts::

    {"trigger": "message",
     "when": {"intent": "product_inquiry", "keywords": ["养老"], "min_count": 2, "within_days": 14},
     "then": {"add": [12], "remove": [], "expires_after_days": 30}}

- ``message`` rules run in the pipeline's ``on_messages`` hook on every analysed customer
  message of a read, inside the storing transaction (no network: a WeCom ``mark_tag`` is an
  outbox row).  Conditions: intent, sentiment, keywords in the *masked* text, and how
  many such messages within how many days (the evidence: their message ids).
- ``event`` rules run in ``on_event``: a 客户联系 change (e.g. ``add_external_contact``
  through a channel ``State``, ``del_follow_user``).
- ``schedule`` rules are an audience expression (``tagging.audience``: tags, attributes,
  days to a maturity) evaluated by the ``tagging-rules`` job, streaming over matching
  customers in id order, a batch at a time — never all of them in memory.

Every application goes through ``apply_customer_tag`` under the (customer, tag) unique
key, so re-running a rule or redelivering a message tags nobody twice, and each
application is recorded with ``rule:<id>`` and its reason.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from bot.hooks import StoredEvent, StoredMessage
from bot.models import Customer, Message
from compliance_nlp.types import INTENTS, SENTIMENTS
from core import audit
from core.audit import Actor
from tagging import audience, flows, service
from tagging.models import CustomerTag, Tag, TagRule, TagSource

log = logging.getLogger(__name__)

#: Customers per transaction when a schedule rule streams over its audience.
BATCH = 500
SAMPLE = 10
_CONTACT_CHANGES = (
    "add_external_contact",
    "add_half_external_contact",
    "edit_external_contact",
    "del_external_contact",
    "del_follow_user",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageWhen(_Strict):
    intent: str | None = None
    sentiment: str | None = None
    keywords: list[str] = Field(default_factory=list, max_length=20)
    sender_role: Literal["customer", "advisor"] = "customer"
    min_count: int = Field(default=1, ge=1, le=100)
    within_days: int = Field(default=14, ge=1, le=365)

    @model_validator(mode="after")
    def _check(self) -> MessageWhen:
        if self.intent is not None and self.intent not in INTENTS:
            raise ValueError(f"intent must be one of {', '.join(INTENTS)}")
        if self.sentiment is not None and self.sentiment not in SENTIMENTS:
            raise ValueError(f"sentiment must be one of {', '.join(SENTIMENTS)}")
        if any(not k.strip() or len(k) > 30 for k in self.keywords):
            raise ValueError("keywords must be 1..30 characters each")
        if self.intent is None and self.sentiment is None and not self.keywords:
            raise ValueError("a message rule needs an intent, a sentiment or keywords")
        return self


class EventWhen(_Strict):
    change_type: Literal[_CONTACT_CHANGES]  # type: ignore[valid-type]
    # The 渠道活码 State the contact was added through (add_external_contact only).
    state: str | None = Field(default=None, max_length=30)


class ScheduleWhen(_Strict):
    audience: str = Field(min_length=1, max_length=2000)


class Then(_Strict):
    add: list[int] = Field(default_factory=list, max_length=20)
    remove: list[int] = Field(default_factory=list, max_length=20)
    expires_after_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _check(self) -> Then:
        if not self.add and not self.remove:
            raise ValueError("a rule must add or remove at least one tag")
        if set(self.add) & set(self.remove):
            raise ValueError("a tag cannot be both added and removed")
        return self


class RuleIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    trigger: Literal["message", "event", "schedule"]
    when: dict[str, Any]
    then: Then
    enabled: bool = False

    def parsed_when(self) -> MessageWhen | EventWhen | ScheduleWhen:
        if self.trigger == "message":
            return MessageWhen.model_validate(self.when)
        if self.trigger == "event":
            return EventWhen.model_validate(self.when)
        return ScheduleWhen.model_validate(self.when)


@dataclass(frozen=True)
class DryRun:
    count: int
    total: int
    sample: list[str]  # masked external_userids
    warning: str | None


class RuleError(flows.TaggingError):
    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__("invalid_rule", message)
        self.position = position


async def check_rule(spec: RuleIn) -> MessageWhen | EventWhen | ScheduleWhen:
    """Validate a rule (its condition, its tags, its audience); no side effects."""
    try:
        when = spec.parsed_when()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RuleError(f"when{'.' + where if where else ''}: {first['msg']}") from None
    for tag_id in (*spec.then.add, *spec.then.remove):
        if await service.get_tag(tag_id=tag_id) is None:
            raise RuleError(f"then: tag {tag_id} does not exist")
    if isinstance(when, ScheduleWhen):
        try:
            await flows.check_audience(expr=when.audience)
        except audience.ExpressionError as exc:
            raise RuleError(f"when.audience: {exc.message}", exc.position) from None
    return when


# ---------------------------------------------------------------- dry run


async def dry_run(spec: RuleIn, *, now: datetime | None = None) -> DryRun:
    """How many customers the rule would tag now, a masked sample, a warning if all."""
    from bot.outbox import mask_external_userid

    when = await check_rule(spec)
    now = now or datetime.now(UTC)
    total = await Customer.all().count()
    ids: list[str]
    if isinstance(when, ScheduleWhen):
        node = audience.parse(when.audience)
        n = await audience.count(node)
        ids = [r.external_userid for r in await audience.preview(node, limit=SAMPLE)]
    elif isinstance(when, MessageWhen):
        matched = await _message_matches(when, now=now)
        n = len(matched)
        ids = [mask_external_userid(e) for e in sorted(matched)[:SAMPLE]]
    else:
        q = Customer.filter(follows__state=when.state) if when.state else Customer.all()
        n = await q.distinct().count()
        ids = [
            mask_external_userid(str(e))
            for e in await q.distinct()
            .order_by("external_userid")
            .limit(SAMPLE)
            .values_list("external_userid", flat=True)
        ]
    warning = None
    if total and n >= total:
        warning = f"this rule would tag every customer ({total}); check its conditions"
    return DryRun(n, total, ids, warning)


def _message_filter(when: MessageWhen, *, since: datetime) -> Q:
    q = Q(sender_role=when.sender_role, msgtime__gte=since, customer_id__isnull=False)
    if when.intent is not None:
        q &= Q(intent=when.intent)
    if when.sentiment is not None:
        q &= Q(sentiment=when.sentiment)
    if when.keywords:
        any_kw = Q(masked_text__contains=when.keywords[0])
        for kw in when.keywords[1:]:
            any_kw |= Q(masked_text__contains=kw)
        q &= any_kw
    return q


async def _message_matches(when: MessageWhen, *, now: datetime) -> set[str]:
    since = now - timedelta(days=when.within_days)
    counts: dict[str, int] = {}
    rows = Message.filter(_message_filter(when, since=since)).values_list(
        "customer__external_userid", flat=True
    )
    for ext in await rows:
        counts[str(ext)] = counts.get(str(ext), 0) + 1
    return {e for e, c in counts.items() if c >= when.min_count}


# ---------------------------------------------------------------- saving


async def do_save_rule(*, spec: RuleIn, actor: Actor) -> tuple[TagRule, DryRun]:
    """Validate, dry-run and save (or replace by name); audited.  Returns the dry run."""
    result = await dry_run(spec)
    async with in_transaction() as conn:
        rule = await TagRule.get_or_none(name=spec.name, using_db=conn)
        body = {"when": spec.when, "then": spec.then.model_dump()}
        if rule is None:
            rule = await TagRule.create(
                using_db=conn,
                name=spec.name,
                trigger=spec.trigger,
                spec=body,
                enabled=spec.enabled,
                created_by=actor.ref,
            )
        else:
            rule.trigger = spec.trigger
            rule.spec = body
            rule.enabled = spec.enabled
            await rule.save(using_db=conn)
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.rule.save",
            target=f"tag_rule:{rule.id}",
            detail={"enabled": spec.enabled, "dry_run_count": result.count},
        )
    return rule, result


async def do_set_enabled(*, rule_id: int, enabled: bool, actor: Actor) -> TagRule:
    """Enable or pause a rule; a rule that no longer validates is not enabled."""
    rule = await TagRule.get_or_none(id=rule_id)
    if rule is None:
        raise flows.NotFound(f"tag rule {rule_id}")
    if enabled:
        try:
            await check_rule(spec_of(rule))
        except ValidationError as exc:
            raise RuleError(str(exc.errors()[0]["msg"])) from None
    async with in_transaction() as conn:
        rule = await TagRule.get(id=rule_id, using_db=conn)
        if rule.enabled == enabled:
            return rule
        rule.enabled = enabled
        await rule.save(using_db=conn, update_fields=["enabled", "updated_at"])
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.rule.enable" if enabled else "tagging.rule.disable",
            target=f"tag_rule:{rule.id}",
        )
    return rule


def spec_of(rule: TagRule) -> RuleIn:
    return RuleIn(
        name=rule.name,
        trigger=rule.trigger,  # type: ignore[arg-type]
        when=rule.spec["when"],
        then=Then.model_validate(rule.spec["then"]),
        enabled=rule.enabled,
    )


# ---------------------------------------------------------------- applying


async def _apply(
    *,
    conn: BaseDBAsyncClient,
    rule: TagRule,
    then: Then,
    external_userid: str,
    reason: dict[str, Any],
    now: datetime,
    customer_id: int | None = None,
    tags: dict[int, Tag | None] | None = None,
) -> int:
    """Apply ``then`` to one customer.  ``customer_id`` and ``tags`` (preloaded by a
    caller streaming over many customers) save a lookup each per customer."""
    if customer_id is None:
        customer_id = await service.customer_id_of(conn=conn, external_userid=external_userid)
    if customer_id is None:
        return 0  # not stored (an event bot could not resolve): nothing to tag, no rollback
    if tags is None:
        tags = await _load_tags(conn, then)
    changed = 0
    expires = now + timedelta(days=then.expires_after_days) if then.expires_after_days else None
    for tag_id in then.add:
        tag = tags.get(tag_id)
        if tag is None:
            continue  # deleted since the rule was saved: nothing to apply
        change = await flows.tag_customer(
            conn=conn,
            external_userid=external_userid,
            tag=tag,
            source=TagSource.RULE,
            applied_by=f"rule:{rule.id}",
            reason={"rule_id": rule.id, **reason},
            expires_at=expires,
            customer_id=customer_id,
        )
        changed += change.changed
    for tag_id in then.remove:
        tag = tags.get(tag_id)
        if tag is None:
            continue
        change = await flows.untag_customer(
            conn=conn,
            external_userid=external_userid,
            tag=tag,
            source=TagSource.RULE,
            actor_ref=f"rule:{rule.id}",
            reason={"rule_id": rule.id, **reason},
            customer_id=customer_id,
        )
        changed += change.changed
    return changed


async def _load_tags(conn: BaseDBAsyncClient, then: Then) -> dict[int, Tag | None]:
    return {
        tag_id: await service.get_tag(conn=conn, tag_id=tag_id)
        for tag_id in (*then.add, *then.remove)
    }


# The enabled rules per storing transaction: the pipeline stores a read in one transaction
# (``on_messages`` once, each event's ``on_event`` in turn), so reading the rules per call
# cost a query each (about a tenth of a worker's time per message).  Read once per
# transaction, the read's messages are judged by the rules as they stood when it began,
# as if the read had been stored at that instant; a rule saved meanwhile applies from the
# next read on.  Weak keys: the entry goes with the transaction.
_enabled_in: weakref.WeakKeyDictionary[BaseDBAsyncClient, dict[str, list[TagRule]]] = (
    weakref.WeakKeyDictionary()
)


async def _enabled(conn: BaseDBAsyncClient, trigger: str) -> list[TagRule]:
    if not isinstance(conn, TransactionalDBClient):  # autocommit: nothing to tie a cache to
        return await _read_enabled(conn, trigger)
    cached = _enabled_in.setdefault(conn, {})
    if trigger not in cached:
        cached[trigger] = await _read_enabled(conn, trigger)
    return cached[trigger]


async def _read_enabled(conn: BaseDBAsyncClient, trigger: str) -> list[TagRule]:
    return await TagRule.filter(trigger=trigger, enabled=True).using_db(conn).order_by("id")


W = TypeVar("W", MessageWhen, EventWhen)


def _parsed(rule: TagRule, shape: type[W]) -> tuple[RuleIn, W] | None:
    """A stored rule that no longer validates (e.g. the intent model's labels changed) is
    skipped with a log line: raising here would roll back and dead-letter the message."""
    try:
        spec = spec_of(rule)
        return spec, shape.model_validate(spec.when)
    except ValidationError:
        log.warning("stored rule no longer valid; skipped", extra={"rule": rule.id})
        return None


def _matches(when: MessageWhen, record: StoredMessage) -> bool:
    if record.sender_role != when.sender_role:
        return False
    if when.intent is not None and record.intent != when.intent:
        return False
    if when.sentiment is not None and record.sentiment != when.sentiment:
        return False
    return not when.keywords or any(k in record.text_masked for k in when.keywords)


async def on_messages(records: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
    """Message rules for a read's stored messages, in the storing transaction.

    The same as judging each message alone, in the order read, right after storing it:
    for every rule a message matches, its evidence is the customer's messages that match
    the rule in its window — the rows stored before and the read's messages up to this
    one, never a later one of the read — newest first, ``min_count + 4`` of them (the
    message itself always in); with ``min_count`` of them, ``then`` is applied.  The
    evidence is read once per rule for the whole read: a rule's conditions are on the
    messages, never on tags, so what one message's rules apply changes no other
    message's evidence.
    """
    mine = [(pos, r) for pos, r in enumerate(records) if r.customer is not None]
    if not mine:
        return
    rules = await _enabled(conn, "message")
    if not rules:
        return
    judged: list[tuple[TagRule, RuleIn, MessageWhen, list[tuple[int, StoredMessage]]]] = []
    for rule in rules:
        parsed = _parsed(rule, MessageWhen)
        if parsed is None:
            continue
        spec, when = parsed
        matching = [(pos, r) for pos, r in mine if _matches(when, r)]
        if matching:
            judged.append((rule, spec, when, matching))
    if not judged:
        return
    customer_ids = await _customer_ids(
        conn, {str(r.customer) for _, _, _, matching in judged for _, r in matching}
    )
    position = {r.id: pos for pos, r in enumerate(records)}
    in_read = Counter(str(r.customer) for _, r in mine)
    plan: list[tuple[int, int, list[int]]] = []  # (position in the read, rule, evidence)
    tags: list[dict[int, Tag | None]] = []
    for index, (_, spec, when, matching) in enumerate(judged):
        keep = max(when.min_count, 1) + 4
        newest = await _newest_matching(
            conn, when, [r for _, r in matching], customer_ids, keep=keep, extra=in_read
        )
        for pos, record in matching:
            since = record.msgtime - timedelta(days=when.within_days)
            found = [
                i
                for i, t in newest.get(str(record.customer), ())
                if t >= since and position.get(i, -1) <= pos
            ]
            ids = sorted({*found[:keep], record.id})
            if len(ids) >= when.min_count:
                plan.append((pos, index, ids))
        tags.append(await _load_tags(conn, spec.then) if any(p[1] == index for p in plan) else {})
    # Applied in the order storing message by message would: message, then rule.
    for pos, index, ids in sorted(plan, key=lambda p: (p[0], p[1])):
        rule, spec, _, _ = judged[index]
        record = records[pos]
        await _apply(
            conn=conn,
            rule=rule,
            then=spec.then,
            external_userid=str(record.customer),
            reason={"message_ids": ids[-20:]},
            now=record.msgtime,
            customer_id=customer_ids.get(str(record.customer)),
            tags=tags[index],
        )


async def _customer_ids(conn: BaseDBAsyncClient, external_userids: set[str]) -> dict[str, int]:
    rows = (
        await Customer.filter(external_userid__in=sorted(external_userids))
        .using_db(conn)
        .values_list("external_userid", "id")
    )
    return {str(e): int(i) for e, i in rows}  # type: ignore[call-overload]


async def _newest_matching(
    conn: BaseDBAsyncClient,
    when: MessageWhen,
    matching: Sequence[StoredMessage],
    customer_ids: dict[str, int],
    *,
    keep: int,
    extra: Counter[str],
) -> dict[str, list[tuple[int, datetime]]]:
    """Each customer's newest messages matching ``when`` since the earliest window of
    ``matching``, as (id, msgtime), newest first: ``keep`` plus the customer's ``extra``
    (their messages in the read, which a message's evidence may have to leave out).

    One query for the read.  The newest messages of a window are the newest overall
    that fall in it, so each message's evidence is cut from these.
    """
    ids = {customer_ids[str(r.customer)] for r in matching if str(r.customer) in customer_ids}
    if not ids:
        return {}
    since = min(r.msgtime for r in matching) - timedelta(days=when.within_days)
    rows = (
        await Message.filter(_message_filter(when, since=since), customer_id__in=sorted(ids))
        .using_db(conn)
        .order_by("customer_id", "-msgtime", "-id")
        .values_list("customer_id", "id", "msgtime")
    )
    external = {v: k for k, v in customer_ids.items()}
    newest: dict[str, list[tuple[int, datetime]]] = {}
    for customer_id, message_id, msgtime in rows:
        customer = external[int(customer_id)]  # type: ignore[call-overload]
        found = newest.setdefault(customer, [])
        if len(found) < keep + extra[customer]:
            found.append((int(message_id), msgtime))  # type: ignore[call-overload]
    return newest


async def on_event(record: StoredEvent, conn: BaseDBAsyncClient) -> None:
    if record.event != "change_external_contact" or not record.customer:
        return
    for rule in await _enabled(conn, "event"):
        parsed = _parsed(rule, EventWhen)
        if parsed is None:
            continue
        spec, when = parsed
        if when.change_type != record.change_type:
            continue
        if when.state is not None and record.state != when.state:
            continue
        await _apply(
            conn=conn,
            rule=rule,
            then=spec.then,
            external_userid=record.customer,
            reason={"event_id": record.id, "change_type": record.change_type},
            now=record.occurred_at,
        )


# ---------------------------------------------------------------- the job


async def run_schedule_rule(rule: TagRule, *, now: datetime | None = None) -> int:
    """Apply a schedule rule to its audience, streaming in id order; returns changes."""
    now = now or datetime.now(UTC)
    spec = spec_of(rule)
    when = ScheduleWhen.model_validate(spec.when)
    node = audience.parse(when.audience)
    conn = Tortoise.get_connection("default")
    clause, params = await audience.where_clause(node, conn=conn)
    # Only customers the rule would change: re-runs stream over what is new, not the
    # whole audience again (the rule is idempotent either way).
    pending, extra = _needs_change(spec.then, conn=conn, bound=len(params))
    clause = f"({clause}) AND {pending}"
    params = [*params, *extra]
    changed = 0
    after = 0
    while True:
        batch = await _next_batch(conn, clause, params, after=after)
        if not batch:
            break
        async with in_transaction() as tx:
            tags = await _load_tags(tx, spec.then)
            changed += await _apply_batch(
                tx,
                rule=rule,
                then=spec.then,
                batch=batch,
                reason={"audience": when.audience[:200]},
                now=now,
                tags=tags,
            )
        after = batch[-1][0]
    rule.last_run_at = now
    rule.last_run_applied = changed
    await rule.save(update_fields=["last_run_at", "last_run_applied", "updated_at"])
    return changed


async def _apply_batch(
    tx: BaseDBAsyncClient,
    *,
    rule: TagRule,
    then: Then,
    batch: Sequence[tuple[int, str]],
    reason: dict[str, Any],
    now: datetime,
    tags: dict[int, Tag | None],
) -> int:
    """``then`` for a batch of customers, set-wise where WeCom need not hear of it.

    A tag of a group that syncs with WeCom is applied customer by customer
    (``flows.tag_customer``: each change queues its ``mark_tag`` per advisor relation);
    a siyu-only tag is inserted (or deleted) for the whole batch at once, with one
    history row per customer changed — the same rows, a few statements instead of
    three per customer.
    """
    by_id = dict(batch)
    ids = list(by_id)
    ref = f"rule:{rule.id}"
    full_reason = {"rule_id": rule.id, **reason}
    reason_json = json.dumps(full_reason, ensure_ascii=False)
    expires = now + timedelta(days=then.expires_after_days) if then.expires_after_days else None
    changed = 0
    for tag_id, add in [*((t, True) for t in then.add), *((t, False) for t in then.remove)]:
        tag = tags.get(tag_id)
        if tag is None:
            continue  # deleted since the rule was saved
        if flows._group_syncs(tag.group):
            for cid, ext in batch:
                if add:
                    change = await flows.tag_customer(
                        conn=tx,
                        external_userid=ext,
                        tag=tag,
                        source=TagSource.RULE,
                        applied_by=ref,
                        reason=full_reason,
                        expires_at=expires,
                        customer_id=cid,
                    )
                else:
                    change = await flows.untag_customer(
                        conn=tx,
                        external_userid=ext,
                        tag=tag,
                        source=TagSource.RULE,
                        actor_ref=ref,
                        reason=full_reason,
                        customer_id=cid,
                    )
                changed += change.changed
            continue
        having = {
            int(c)  # type: ignore[call-overload]
            for c in await CustomerTag.filter(customer_id__in=ids, tag_id=tag_id)
            .using_db(tx)
            .values_list("customer_id", flat=True)
        }
        if add:
            todo = [cid for cid in ids if cid not in having]
            if not todo:
                continue
            columns = (
                "created_at",
                "updated_at",
                "customer_id",
                "tag_id",
                "source",
                "applied_by",
                "applied_at",
                "reason",
                "expires_at",
            )
            # A message rule may tag one of them at this moment: its row stands, and
            # RETURNING tells which rows are this batch's (their history follows).
            done = await _insert(
                tx,
                "tagging_customer_tag",
                columns,
                [(now, now, cid, tag_id, "rule", ref, now, reason_json, expires) for cid in todo],
                conflict="(customer_id, tag_id)",
                returning="customer_id",
            )
        else:
            done = [cid for cid in ids if cid in having]
            if not done:
                continue
            await CustomerTag.filter(customer_id__in=done, tag_id=tag_id).using_db(tx).delete()
        action = "add" if add else "remove"
        await _insert(
            tx,
            "tagging_customer_tag_history",
            (
                "created_at",
                "updated_at",
                "customer_id",
                "tag_id",
                "action",
                "source",
                "actor",
                "reason",
                "at",
            ),
            [(now, now, cid, tag_id, action, "rule", ref, reason_json, now) for cid in done],
        )
        changed += len(done)
    return changed


#: INSERT … RETURNING came with SQLite 3.35 (2021); an older library takes the ORM's way.
_SQLITE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


async def _insert(
    tx: BaseDBAsyncClient,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: str = "",
    returning: str = "",
) -> list[int]:
    """One multi-row INSERT of a batch (the ORM builds a model per row: most of the
    schedule job's time); ``returning`` one integer column of the rows inserted.

    Table, columns and conflict target are this module's constants; every value is bound.
    """
    if not rows:
        return []
    postgres = tx.capabilities.dialect == "postgres"
    if returning and not postgres and not _SQLITE_RETURNING:
        return await _insert_one_by_one(tx, table, columns, rows, conflict, returning)
    width = len(columns)
    marks = []
    for r in range(len(rows)):
        if postgres:
            marks.append("(" + ", ".join(f"${r * width + i + 1}" for i in range(width)) + ")")
        else:
            marks.append("(" + ", ".join("?" * width) + ")")
    sql = (
        f'INSERT INTO "{table}" ({_quoted(columns)}) '  # noqa: S608 - constants
        f"VALUES {', '.join(marks)}"
        + (f" ON CONFLICT {conflict} DO NOTHING" if conflict else "")
        + (f' RETURNING "{returning}"' if returning else "")
    )
    params = [v for row in rows for v in row]
    if not returning:
        await tx.execute_query(sql, params)
        return []
    # execute_query_dict fetches: Tortoise's execute_query runs an INSERT without
    # reading what it returns on PostgreSQL.
    found = await tx.execute_query_dict(sql, params)
    return [int(r[returning]) for r in found]


async def _insert_one_by_one(
    tx: BaseDBAsyncClient,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: str,
    returning: str,
) -> list[int]:
    out = []
    at = columns.index(returning)
    for row in rows:
        sql = (
            f'INSERT INTO "{table}" ({_quoted(columns)}) '  # noqa: S608 - constants
            f"VALUES ({', '.join('?' * len(columns))})"
            + (f" ON CONFLICT {conflict} DO NOTHING" if conflict else "")
        )
        inserted, _ = await tx.execute_query(sql, list(row))
        if inserted:
            out.append(int(row[at]))
    return out


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _needs_change(then: Then, *, conn: BaseDBAsyncClient, bound: int) -> tuple[str, list[Any]]:
    postgres = conn.capabilities.dialect == "postgres"
    parts: list[str] = []
    params: list[Any] = []

    def mark(value: int) -> str:
        params.append(value)
        return f"${bound + len(params)}" if postgres else "?"

    has = (
        "EXISTS (SELECT 1 FROM tagging_customer_tag x WHERE x.customer_id = c.id AND x.tag_id = {})"
    )
    parts += [f"NOT {has.format(mark(t))}" for t in then.add]
    parts += [has.format(mark(t)) for t in then.remove]
    return "(" + " OR ".join(parts) + ")", params


async def _next_batch(
    conn: BaseDBAsyncClient, clause: str, params: Sequence[Any], *, after: int
) -> list[tuple[int, str]]:
    postgres = conn.capabilities.dialect == "postgres"
    n = len(params)
    after_mark, limit_mark = (f"${n + 1}", f"${n + 2}") if postgres else ("?", "?")
    _, rows = await conn.execute_query(
        # Keyset pagination over the audience: the clause is the compiler's fixed
        # fragments and placeholders, every value bound.
        f"SELECT c.id, c.external_userid FROM bot_customer c WHERE {clause} "  # noqa: S608
        f"AND c.id > {after_mark} ORDER BY c.id LIMIT {limit_mark}",
        [*params, after, BATCH],
    )
    return [(int(r["id"]), str(r["external_userid"])) for r in rows]


async def expire_tags(*, now: datetime | None = None) -> int:
    """Remove rule tags whose time is up (``expires_after_days``), recorded as such."""
    now = now or datetime.now(UTC)
    removed = 0
    while True:
        due = (
            await CustomerTag.filter(expires_at__lte=now)
            .order_by("id")
            .limit(BATCH)
            .values_list("id", "customer_id", "tag_id")
        )
        if not due:
            return removed
        async with in_transaction() as conn:
            for _, customer_id, tag_id in due:
                if await service.remove_customer_tag(
                    conn=conn,
                    customer_id=int(customer_id),
                    tag_id=int(tag_id),
                    source=TagSource.RULE,
                    actor="expiry",
                    reason={"expired": True},
                    at=now,
                ):
                    removed += 1


async def rules_tick() -> int:
    done = await expire_tags()
    for rule in await TagRule.filter(trigger="schedule", enabled=True).order_by("id"):
        try:
            done += await run_schedule_rule(rule)
        except audience.ExpressionError as exc:
            # A tag the audience names was deleted since: the rule waits for an edit.
            log.warning("schedule rule skipped", extra={"rule": rule.id, "error": exc.message})
    return done
