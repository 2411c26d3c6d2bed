"""The tag library: groups, tags, customer tags with their source, reason and history."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from core.audit import Actor
from core.models import AuditEntry
from tagging import flows, service
from tagging.models import CustomerTag, CustomerTagHistory, TagSource
from tagging.schemas import GroupIn, TagEdit, TagIn

OPS = Actor("operator", "7", "运营小王")


async def _customer(ext: str = "wmCUSTOMER000000000001", advisor: str | None = None) -> None:
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        if advisor:
            adv = await bot_service.upsert_advisor(conn=conn, userid=advisor)
            await bot_service.upsert_follow(
                conn=conn,
                customer=customer,
                advisor=adv,
                status=bot_models.RelationStatus.ACTIVE,
                at=bot_service.now(),
            )


async def test_groups_and_tags_are_created_with_their_fields_and_audited(db: None) -> None:
    group = await flows.do_create_group(
        spec=GroupIn(name="客户等级", order=2, colour="#AA0000", description="AUM 分层"), actor=OPS
    )
    tag = await flows.do_create_tag(
        spec=TagIn(group_id=group.id, name="高净值", colour="#00AA00"), actor=OPS
    )
    assert (group.name, group.order, group.colour, group.owner) == (
        "客户等级",
        2,
        "#AA0000",
        "operator:7",
    )
    assert group.origin == "siyu" and not group.sync_to_wecom and group.wecom_group_id is None
    stored = await service.get_tag(tag_id=tag.id)
    assert stored is not None and stored.group.id == group.id and stored.wecom_tag_id is None
    actions = [e.action for e in await AuditEntry.all().order_by("seq")]
    assert actions == ["tagging.group.create", "tagging.tag.create"]
    # A siyu-only group is never pushed to WeCom.
    assert not await bot_models.OutboxItem.all().exists()


async def test_bad_names_and_duplicates_are_refused_and_change_nothing(db: None) -> None:
    with pytest.raises(ValidationError, match="at most 30"):
        GroupIn(name="长" * 31)
    with pytest.raises(ValidationError, match="empty"):
        TagIn(group_id=1, name="   ")
    with pytest.raises(ValidationError, match="#RRGGBB"):
        GroupIn(name="a", colour="red")
    group = await flows.do_create_group(spec=GroupIn(name="兴趣"), actor=OPS)
    await flows.do_create_tag(spec=TagIn(group_id=group.id, name="养老"), actor=OPS)
    with pytest.raises(flows.TaggingError) as dup:
        await flows.do_create_tag(spec=TagIn(group_id=group.id, name="养老"), actor=OPS)
    assert dup.value.code == "duplicate_name"
    with pytest.raises(flows.TaggingError):
        await flows.do_create_group(spec=GroupIn(name="兴趣"), actor=OPS)
    with pytest.raises(flows.NotFound):
        await flows.do_create_tag(spec=TagIn(group_id=999, name="x"), actor=OPS)
    assert len(await service.live_tags()) == 1
    assert await AuditEntry.all().count() == 2


async def test_customer_tag_records_source_actor_reason_and_history(db: None) -> None:
    await _customer()
    group = await flows.do_create_group(spec=GroupIn(name="意向"), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="有赎回意向"), actor=OPS)

    first = await flows.do_tag_customer(
        external_userid="wmCUSTOMER000000000001", tag_id=tag.id, actor=OPS, reason="电话回访"
    )
    again = await flows.do_tag_customer(
        external_userid="wmCUSTOMER000000000001", tag_id=tag.id, actor=OPS
    )
    assert first.changed and not again.changed  # idempotent: one row, one history entry
    rows = await flows.customer_tags(external_userid="wmCUSTOMER000000000001")
    assert len(rows) == 1
    row = rows[0]
    assert row.source == TagSource.MANUAL and row.applied_by == "operator:7"
    assert row.reason == {"note": "电话回访"} and row.applied_at is not None

    # A rule's application keeps its id and the evidence (message ids).
    rule_tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="关注养老"), actor=OPS)
    async with in_transaction() as conn:
        change = await flows.tag_customer(
            conn=conn,
            external_userid="wmCUSTOMER000000000001",
            tag=rule_tag,
            source=TagSource.RULE,
            applied_by="rule:5",
            reason={"rule_id": 5, "message_ids": [11, 12]},
        )
    assert change.changed
    by_tag = {
        ct.tag.name: ct
        for ct in await flows.customer_tags(external_userid="wmCUSTOMER000000000001")
    }
    assert by_tag["关注养老"].reason == {"rule_id": 5, "message_ids": [11, 12]}

    removed = await flows.do_untag_customer(
        external_userid="wmCUSTOMER000000000001", tag_id=tag.id, actor=OPS, reason="已赎回"
    )
    assert removed.changed
    history = await service.history_of_customer(customer_id=row.customer_id)  # type: ignore[attr-defined]
    assert [(h.tag_id, h.action, h.source, h.actor) for h in history] == [
        (tag.id, "add", TagSource.MANUAL, "operator:7"),
        (rule_tag.id, "add", TagSource.RULE, "rule:5"),
        (tag.id, "remove", TagSource.MANUAL, "operator:7"),
    ]
    assert history[2].reason == {"note": "已赎回"}
    actions = [e.action for e in await AuditEntry.all().order_by("seq")]
    assert actions.count("tagging.customer_tag.add") == 1
    assert actions[-1] == "tagging.customer_tag.remove"
    # The audit entry names the customer masked, never in full.
    last = await AuditEntry.all().order_by("-seq").first()
    assert last is not None and "wmCUSTOMER000000000001" not in last.target


async def test_unknown_customer_is_refused_not_created(db: None) -> None:
    group = await flows.do_create_group(spec=GroupIn(name="g"), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="t"), actor=OPS)
    with pytest.raises(flows.NotFound):
        await flows.do_tag_customer(external_userid="wmNOBODY", tag_id=tag.id, actor=OPS)
    assert not await bot_models.Customer.filter(external_userid="wmNOBODY").exists()
    assert not await CustomerTagHistory.all().exists()


async def test_deleting_a_tag_removes_it_from_customers_with_history(db: None) -> None:
    await _customer("wmA0000000000000000001")
    await _customer("wmB0000000000000000002")
    group = await flows.do_create_group(spec=GroupIn(name="g"), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="t"), actor=OPS)
    for ext in ("wmA0000000000000000001", "wmB0000000000000000002"):
        await flows.do_tag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    assert await flows.do_delete_tag(tag_id=tag.id, actor=OPS) == 2
    assert not await CustomerTag.all().exists()
    removals = await CustomerTagHistory.filter(action="remove").count()
    assert removals == 2
    assert await service.get_tag(tag_id=tag.id) is None
    with pytest.raises(flows.NotFound):
        await flows.do_delete_tag(tag_id=tag.id, actor=OPS)


async def test_edit_changes_fields_and_refuses_a_taken_name(db: None) -> None:
    group = await flows.do_create_group(spec=GroupIn(name="g"), actor=OPS)
    a = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="a"), actor=OPS)
    await flows.do_create_tag(spec=TagIn(group_id=group.id, name="b"), actor=OPS)
    edited = await flows.do_edit_tag(
        tag_id=a.id, edit=TagEdit(name="a2", description="d", order=3), actor=OPS
    )
    assert (edited.name, edited.description, edited.order) == ("a2", "d", 3)
    with pytest.raises(flows.TaggingError):
        await flows.do_edit_tag(tag_id=a.id, edit=TagEdit(name="b"), actor=OPS)
    with pytest.raises(flows.TaggingError):
        await flows.do_edit_tag(tag_id=a.id, edit=TagEdit(), actor=OPS)
    stored = await service.get_tag(tag_id=a.id)
    assert stored is not None and stored.name == "a2"


async def test_export_names_only_that_customers_tags(db: None) -> None:
    await _customer("wmA0000000000000000001")
    await _customer("wmB0000000000000000002")
    group = await flows.do_create_group(spec=GroupIn(name="g"), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="t"), actor=OPS)
    other = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="other"), actor=OPS)
    await flows.do_tag_customer(external_userid="wmA0000000000000000001", tag_id=tag.id, actor=OPS)
    await flows.do_tag_customer(
        external_userid="wmB0000000000000000002", tag_id=other.id, actor=OPS
    )
    from tagging import DOMAIN

    assert DOMAIN.export_customer is not None
    async with in_transaction() as conn:
        out = await DOMAIN.export_customer(conn=conn, external_userid="wmA0000000000000000001")
    assert [t["tag"] for t in out["customer_tags"]] == ["t"]
    assert [h["tag_id"] for h in out["customer_tag_history"]] == [tag.id]


async def test_library_api(edge: Any) -> None:
    await _customer("wmAPI0000000000000000001")
    status, group = await edge.api("POST", "/api/v1/tags/groups", json={"name": "意向"})
    assert status == 201 and group["origin"] == "siyu"
    status, body = await edge.api("POST", "/api/v1/tags/groups", json={"name": "意向"})
    assert status == 409 and body["error"]["code"] == "duplicate_name"
    status, body = await edge.api(
        "POST", "/api/v1/tags", json={"group_id": group["id"], "name": "长" * 31}
    )
    assert status == 400 and "name" in body["error"]["message"]
    status, tag = await edge.api(
        "POST", "/api/v1/tags", json={"group_id": group["id"], "name": "有赎回意向"}
    )
    assert status == 201
    status, body = await edge.api("PATCH", "/api/v1/tags/999999", json={"name": "x"})
    assert status == 404
    status, body = await edge.api(
        "POST",
        "/api/v1/customer-tags",
        json={"external_userid": "wmAPI0000000000000000001", "tag_id": tag["id"], "reason": "来电"},
    )
    assert (status, body["changed"]) == (200, True)
    status, body = await edge.api("GET", "/api/v1/customers/wmAPI0000000000000000001/tags")
    assert status == 200
    assert body["tags"][0]["tag"] == "有赎回意向" and body["tags"][0]["source"] == "manual"
    assert body["history"][0]["action"] == "add"
    status, body = await edge.api("GET", "/api/v1/customers/wmNOBODY/tags")
    assert status == 404
    status, body = await edge.api("GET", "/api/v1/tags")
    assert [t["name"] for t in body["groups"][0]["tags"]] == ["有赎回意向"]
    status, body = await edge.api("DELETE", f"/api/v1/tags/groups/{group['id']}")
    assert status == 200 and body["customers"] == 1


async def test_an_operators_reason_keeps_no_personal_number_in_clear(db: None) -> None:
    await _customer("wmPII0000000000000000001")
    group = await flows.do_create_group(spec=GroupIn(name="g"), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="t"), actor=OPS)
    await flows.do_tag_customer(
        external_userid="wmPII0000000000000000001",
        tag_id=tag.id,
        actor=OPS,
        reason="客户来电 13812345678 要求",
    )
    (row,) = await CustomerTag.all()
    assert "13812345678" not in row.reason["note"] and "客户来电" in row.reason["note"]
    (history,) = await CustomerTagHistory.all()
    assert "13812345678" not in str(history.reason)
