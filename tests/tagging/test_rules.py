"""Auto-tag rules: validated on save, dry run, message/event hooks, the schedule job, expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from core.audit import Actor
from core.models import AuditEntry
from tagging import flows, hooks, rules, service
from tagging.models import CustomerTag, CustomerTagHistory, Tag, TagRule, TagSource
from tagging.schemas import GroupIn, TagIn
from tests.tagging.test_sync import event, run_hook

OPS = Actor("operator", "7", "运营小王")


def record(msgid: str, sender: str, to: str, text: str, *, at_ms: int | None = None) -> dict:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": at_ms or int(time.time() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


async def _tags(*names: str) -> list[int]:
    group = await flows.do_create_group(spec=GroupIn(name="自动"), actor=OPS)
    return [
        (await flows.do_create_tag(spec=TagIn(group_id=group.id, name=n), actor=OPS)).id
        for n in names
    ]


def rule(name: str, trigger: str, when: dict[str, Any], **then: Any) -> rules.RuleIn:
    return rules.RuleIn.model_validate(
        {"name": name, "trigger": trigger, "when": when, "then": then, "enabled": True}
    )


async def test_rules_are_validated_on_save_and_bad_ones_change_nothing(db: None) -> None:
    (tag,) = await _tags("关注养老")
    bad = [
        (rule("r", "message", {"intent": "no_such_intent"}, add=[tag]), "intent must be one of"),
        (rule("r", "message", {"min_count": 2}, add=[tag]), "needs an intent"),
        (rule("r", "message", {"keywords": ["养老"]}, add=[999]), "tag 999 does not exist"),
        (rule("r", "event", {"change_type": "add_external_contact", "x": 1}, add=[tag]), "when"),
        (rule("r", "schedule", {"audience": 'tag:"关注养老" AND ('}, add=[tag]), "audience"),
    ]
    for spec, message in bad:
        with pytest.raises(rules.RuleError) as info:
            await rules.do_save_rule(spec=spec, actor=OPS)
        assert message in info.value.message
    with pytest.raises(rules.RuleError) as info:
        await rules.do_save_rule(
            spec=rule("r", "schedule", {"audience": 'tag:"关注养老" AND ('}, add=[tag]), actor=OPS
        )
    assert info.value.position == 16
    with pytest.raises(ValueError, match="both added and removed"):
        rule("r", "message", {"keywords": ["x"]}, add=[tag], remove=[tag])
    assert not await TagRule.all().exists()
    assert not await AuditEntry.filter(action="tagging.rule.save").exists()


async def test_message_rule_tags_after_the_second_message_with_its_evidence(edge: Any) -> None:
    (tag,) = await _tags("关注养老")
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    spec = rule(
        "养老两次", "message", {"keywords": ["养老"], "min_count": 2, "within_days": 14}, add=[tag]
    )
    saved, dry = await rules.do_save_rule(spec=spec, actor=OPS)
    assert dry.count == 0 and dry.warning is None

    now_ms = int(time.time() * 1000)
    first = [record("r1", ext, userid, "养老的产品有哪些？", at_ms=now_ms - 60_000)]
    status, _ = await edge.api("POST", "/api/v1/archive/messages", json=first)
    assert status == 200
    await edge.process_all()
    assert not await CustomerTag.all().exists()  # one mention is not enough

    second = [
        record("r2", userid, ext, "我们有养老目标基金。", at_ms=now_ms - 30_000),  # advisor's
        record("r3", ext, userid, "那个养老的再介绍一下", at_ms=now_ms),
    ]
    await edge.api("POST", "/api/v1/archive/messages", json=second)
    await edge.process_all()
    (applied,) = await CustomerTag.all()
    assert applied.source == TagSource.RULE and applied.applied_by == f"rule:{saved.id}"
    evidence = {m.id for m in await bot_models.Message.filter(msgid__in=["r1", "r3"])}
    assert applied.reason["rule_id"] == saved.id
    assert set(applied.reason["message_ids"]) == evidence

    # A third mention (or a redelivery) changes nothing: one row, one history entry.
    await edge.api("POST", "/api/v1/archive/messages", json=[record("r4", ext, userid, "养老")])
    await edge.process_all()
    assert await CustomerTagHistory.all().count() == 1

    # The dry run of the same rule now counts this customer.
    again = await rules.dry_run(spec)
    assert again.count == 1 and again.sample and "…" in again.sample[0]


async def test_intent_rule_uses_the_analysed_intent(edge: Any) -> None:
    (tag,) = await _tags("理财咨询")
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    await rules.do_save_rule(
        spec=rule("咨询", "message", {"intent": "product_inquiry"}, add=[tag]), actor=OPS
    )
    await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=[record("i1", ext, userid, "你们那款理财现在收益多少？")],
    )
    await edge.process_all()
    stored = await bot_models.Message.get(msgid="i1")
    assert stored.intent == "product_inquiry"
    assert await CustomerTag.filter(tag_id=tag).count() == 1


async def test_event_rule_tags_contacts_added_through_a_channel(db: None) -> None:
    (tag,) = await _tags("渠道A")
    async with in_transaction() as conn:
        await bot_service.upsert_customer(conn=conn, external_userid="wmEVT0000000000000001")
    await rules.do_save_rule(
        spec=rule(
            "渠道A", "event", {"change_type": "add_external_contact", "state": "chanA"}, add=[tag]
        ),
        actor=OPS,
    )
    other = event(
        "e0", "change_external_contact", "add_external_contact", customer="wmEVT0000000000000001"
    )
    await run_hook(other)  # no State: not this channel
    assert not await CustomerTag.all().exists()
    ev = event(
        "e1",
        "change_external_contact",
        "add_external_contact",
        customer="wmEVT0000000000000001",
        advisor="u1",
    )
    ev = type(ev)(**{**ev.__dict__, "state": "chanA"})
    await run_hook(ev)
    await run_hook(ev)  # redelivered: still one application
    (applied,) = await CustomerTag.all()
    assert applied.reason["change_type"] == "add_external_contact"
    assert await CustomerTagHistory.all().count() == 1


async def test_schedule_rule_streams_over_its_audience_and_expiry_removes(db: None) -> None:
    vip, due = await _tags("高净值", "即将到期")
    async with in_transaction() as conn:
        for i in range(rules.BATCH + 20):
            c = await bot_service.upsert_customer(conn=conn, external_userid=f"wmSCH{i:017d}")
            if i % 2 == 0:
                await (
                    bot_models.Customer.filter(id=c.id)
                    .using_db(conn)
                    .update(attributes={"risk_level": "C4"})
                )
    spec = rule(
        "高风险到期",
        "schedule",
        {"audience": "attr.risk_level >= C3"},
        add=[due],
        expires_after_days=7,
    )
    saved, dry = await rules.do_save_rule(spec=spec, actor=OPS)
    assert dry.count == 260 and dry.total == rules.BATCH + 20 and dry.warning is None
    assert len(dry.sample) == rules.SAMPLE
    assert await rules.rules_tick() == 260
    assert await rules.rules_tick() == 0  # idempotent
    row = await CustomerTag.filter(tag_id=due).first()
    assert row is not None and row.expires_at is not None
    stored = await TagRule.get(id=saved.id)
    assert stored.last_run_applied == 0 and stored.last_run_at is not None

    later = datetime.now(UTC) + timedelta(days=8)
    assert await rules.expire_tags(now=later) == 260
    assert not await CustomerTag.filter(tag_id=due).exists()
    assert await CustomerTagHistory.filter(action="remove", actor="expiry").count() == 260

    # A rule that would tag everyone is saved with a warning.
    _, everyone = await rules.do_save_rule(
        spec=rule("全部", "schedule", {"audience": 'NOT tag:"高净值"'}, add=[vip]), actor=OPS
    )
    assert everyone.warning and "every customer" in everyone.warning


async def test_schedule_rule_adds_and_removes_set_wise_and_marks_synced_tags(db: None) -> None:
    """siyu-only tags go in per batch (one history row per customer); a tag WeCom
    knows is applied customer by customer, each with its mark_tag per relation."""
    local, old = await _tags("到期提醒", "旧客群")
    synced = await flows.do_create_group(
        spec=GroupIn(name="企微同步", sync_to_wecom=True), actor=OPS
    )
    wecom_tag = await flows.do_create_tag(spec=TagIn(group_id=synced.id, name="到期"), actor=OPS)
    await Tag.filter(id=wecom_tag.id).update(wecom_tag_id="etTAG1", push_pending=False)
    async with in_transaction() as conn:
        adv = await bot_service.upsert_advisor(conn=conn, userid="adv-li")
        for i in range(rules.BATCH + 5):
            c = await bot_service.upsert_customer(conn=conn, external_userid=f"wmSET{i:017d}")
            await (
                bot_models.Customer.filter(id=c.id)
                .using_db(conn)
                .update(attributes={"risk_level": "C5" if i % 5 == 0 else "C1"})
            )
            if i < 3:
                await bot_service.upsert_follow(
                    conn=conn,
                    customer=c,
                    advisor=adv,
                    status=bot_models.RelationStatus.ACTIVE,
                    at=bot_service.now(),
                )
            tag = await service.get_tag(conn=conn, tag_id=old)
            assert tag is not None
            await flows.tag_customer(
                conn=conn,
                external_userid=c.external_userid,
                tag=tag,
                source=TagSource.IMPORT,
                applied_by="import:test",
                customer_id=c.id,
            )
    spec = rule(
        "高风险",
        "schedule",
        {"audience": "attr.risk_level = C5"},
        add=[local, wecom_tag.id],
        remove=[old],
    )
    saved, _ = await rules.do_save_rule(spec=spec, actor=OPS)
    matched = (rules.BATCH + 5 + 4) // 5  # every fifth customer
    assert await rules.rules_tick() == 3 * matched
    assert await CustomerTag.filter(tag_id=local).count() == matched
    assert await CustomerTag.filter(tag_id=wecom_tag.id).count() == matched
    assert await CustomerTag.filter(tag_id=old).count() == rules.BATCH + 5 - matched
    history = await CustomerTagHistory.filter(actor=f"rule:{saved.id}").all()
    assert len(history) == 3 * matched
    assert {(h.tag_id, h.action) for h in history} == {
        (local, "add"),
        (wecom_tag.id, "add"),
        (old, "remove"),
    }
    assert all(h.reason["rule_id"] == saved.id for h in history)
    # Customer 0 (C5) follows adv-li: the synced tag was marked in WeCom for that relation.
    marks = await bot_models.OutboxItem.filter(origin__startswith="tagging.mark:").all()
    assert len(marks) == 1 and marks[0].api == "externalcontact/mark_tag"
    assert await rules.rules_tick() == 0  # nothing left to change


async def test_rules_api(edge: Any) -> None:
    (tag,) = await _tags("关注养老")
    body = {
        "name": "养老",
        "trigger": "message",
        "when": {"keywords": ["养老"]},
        "then": {"add": [tag]},
    }
    status, dry = await edge.api("POST", "/api/v1/tag-rules/dry-run", json=body)
    assert status == 200 and dry["count"] == 0
    status, saved = await edge.api("POST", "/api/v1/tag-rules", json=body)
    assert status == 200 and saved["enabled"] is False
    status, listed = await edge.api("GET", "/api/v1/tag-rules")
    assert [r["name"] for r in listed["rules"]] == ["养老"]
    bad = {**body, "when": {"intent": "nope"}}
    status, err = await edge.api("POST", "/api/v1/tag-rules", json=bad)
    assert status == 400 and err["error"]["code"] == "invalid_rule"
    bad = {**body, "trigger": "schedule", "when": {"audience": "tag:"}}
    status, err = await edge.api("POST", "/api/v1/tag-rules", json=bad)
    assert status == 400 and err["error"]["position"] == 4


def test_hooks_are_registered() -> None:
    from tagging import DOMAIN

    # Message rules run once per read (``on_messages``), events one at a time.
    assert DOMAIN.hooks["on_messages"] is hooks.on_messages
    assert "on_message" not in DOMAIN.hooks
    assert DOMAIN.hooks["on_event"] is hooks.on_event
    assert {j.name for j in DOMAIN.jobs} == {"tagging-sync", "tagging-rules"}
    assert service is not None


async def test_a_broken_rule_or_an_unknown_customer_never_fails_the_pipeline(db: None) -> None:
    (tag,) = await _tags("渠道B")
    async with in_transaction() as conn:
        await bot_service.upsert_customer(conn=conn, external_userid="wmOK00000000000000001")
    broken, _ = await rules.do_save_rule(
        spec=rule("坏", "event", {"change_type": "add_external_contact"}, add=[tag]), actor=OPS
    )
    await rules.do_save_rule(
        spec=rule("好", "event", {"change_type": "add_external_contact"}, add=[tag]), actor=OPS
    )
    # Stored rules outlive their validation (e.g. a change type WeCom retired).
    await TagRule.filter(id=broken.id).update(
        spec={"when": {"change_type": "retired"}, "then": {"add": [tag]}}
    )
    unknown = event("u1", "change_external_contact", "add_external_contact", customer="wmNOTSTORED")
    await run_hook(unknown)  # no customer row: nothing tagged, nothing raised
    known = event(
        "u2", "change_external_contact", "add_external_contact", customer="wmOK00000000000000001"
    )
    await run_hook(known)
    (applied,) = await CustomerTag.all()
    assert applied.applied_by != f"rule:{broken.id}"


def _stored(n: int, customer: str, text: str) -> Any:
    from bot.hooks import StoredMessage
    from bot.schemas import Direction

    return StoredMessage(
        id=n,
        source="archive",
        msgid=f"m{n}",
        direction=Direction.CUSTOMER_TO_ADVISOR,
        sender_role="customer",
        customer=customer,
        advisor="lina",
        roomid=None,
        msgtime=datetime.now(UTC),
        msgtype="text",
        text_masked=text,
        intent=None,
        intent_score=None,
        sentiment="neutral",
        violation_categories=(),
        has_violation=False,
    )


async def test_message_rules_are_read_once_per_storing_transaction(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read's messages share one transaction: the rules are read once for all of them,
    and a rule saved after that transaction applies to the next one.  The message hook
    is the read's (``on_messages``): the same transaction calls it again for the rows a
    failed read stores message by message."""
    (tag,) = await _tags("关注养老")
    ext = "wmONCE0000000000000001"
    async with in_transaction() as conn:
        await bot_service.upsert_customer(conn=conn, external_userid=ext)
    reads: list[str] = []
    read_enabled = rules._read_enabled

    async def counted(conn: Any, trigger: str) -> list[TagRule]:
        reads.append(trigger)
        return await read_enabled(conn, trigger)

    monkeypatch.setattr(rules, "_read_enabled", counted)
    async with in_transaction() as conn:
        await hooks.on_messages([_stored(n + 1, ext, "养老的产品") for n in range(3)], conn)
        await hooks.on_messages([_stored(4, ext, "养老的产品")], conn)
    assert reads == ["message"]
    assert not await CustomerTag.all().exists()  # no rule yet

    await rules.do_save_rule(
        spec=rule("养老", "message", {"keywords": ["养老"]}, add=[tag]), actor=OPS
    )
    async with in_transaction() as conn:
        await hooks.on_messages([_stored(5, ext, "养老的产品"), _stored(6, ext, "养老")], conn)
    assert reads == ["message", "message"]
    (applied,) = await CustomerTag.filter(tag_id=tag)
    # The first of the read that matches applies it, its own id as evidence.
    assert applied.reason["message_ids"] == [5]
    assert await CustomerTagHistory.filter(tag_id=tag).count() == 1
