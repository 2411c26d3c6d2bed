"""Custom attribute fields edited and retired: loosening freely, tightening only while no
stored value breaks it, retirement blocked by what uses the field and reversible."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from bot import models as bot_models
from core.audit import Actor
from core.crypto import Keyring
from core.models import AuditEntry
from sop.models import Campaign, CampaignStatus, CampaignVersion, VersionStatus
from tagging import attributes, audience, fields
from tagging.models import Audience, TagRule

OPS = Actor("operator", "3", "管理员老王")
FIELDS = "/api/v1/customers/attribute-fields"


async def _customer(ext: str, **attrs: Any) -> bot_models.Customer:
    return await bot_models.Customer.create(external_userid=ext, attributes=attrs)


async def _add(edge: Any, **spec: Any) -> dict[str, Any]:
    status, body = await edge.api("POST", FIELDS, json=spec)
    assert status == 201, body
    return body


async def _audit(action: str) -> list[AuditEntry]:
    return await AuditEntry.filter(action=action).order_by("id")


async def test_edit_loosens_freely_and_tightens_only_when_no_stored_value_breaks(
    edge: Any,
) -> None:
    await _add(edge, name="tier", type="enum", label="等级", values=["普通", "白金"])
    await _add(edge, name="score", type="int", minimum="0", maximum="100")
    await _customer("wmFE01", tier="普通", score=5)
    await _customer("wmFE02", tier="普通", score=95)
    await _customer("wmFE03", tier="白金", score=50)

    # Label, description, required and a new value (inserted between) go through.
    status, body = await edge.api(
        "PATCH",
        f"{FIELDS}/tier",
        json={
            "label": "客户等级",
            "description": "来自 CRM 的会员等级",
            "required": True,
            "values": ["普通", "金卡", "白金"],
        },
    )
    assert status == 200, body
    assert body["label"] == "客户等级" and body["description"] == "来自 CRM 的会员等级"
    assert body["values"] == ["普通", "金卡", "白金"] and body["required"]
    # A value in use cannot go: the answer says how many customers hold it.
    status, err = await edge.api("PATCH", f"{FIELDS}/tier", json={"values": ["金卡", "白金"]})
    assert status == 409 and err["error"]["code"] == "values_break"
    assert err["error"]["breaking"] == 2 and err["error"]["by_check"]["enum_values"] == 2
    assert "2 位客户" in err["error"]["message"]
    # An unused one can; reordering the ranks of kept values cannot.
    status, body = await edge.api("PATCH", f"{FIELDS}/tier", json={"values": ["普通", "白金"]})
    assert status == 200 and body["values"] == ["普通", "白金"]
    status, err = await edge.api("PATCH", f"{FIELDS}/tier", json={"values": ["白金", "普通"]})
    assert status == 400 and err["error"]["field"] == "enum_values"
    # A type never changes.
    status, err = await edge.api("PATCH", f"{FIELDS}/tier", json={"type": "string"})
    assert status == 400 and err["error"]["field"] == "type"

    # A range: widening is free; narrowing counts the values outside, by side.
    status, _ = await edge.api("PATCH", f"{FIELDS}/score", json={"maximum": "200"})
    assert status == 200
    status, err = await edge.api(
        "PATCH", f"{FIELDS}/score", json={"minimum": "10", "maximum": "90"}
    )
    assert status == 409
    assert err["error"]["breaking"] == 2
    assert err["error"]["by_check"] == {"minimum": 1, "maximum": 1}
    status, body = await edge.api("PATCH", f"{FIELDS}/score", json={"minimum": "5"})
    assert status == 200 and body["minimum"] == "5"
    # Nothing refused was changed.
    schema = await attributes.load_schema()
    assert schema["score"].maximum == 200 and schema["score"].minimum == 5
    assert [e.target for e in await _audit("tagging.attribute_field.edit")] == [
        "attribute_field:tier",
        "attribute_field:tier",
        "attribute_field:score",
        "attribute_field:score",
    ]
    first = json.loads((await _audit("tagging.attribute_field.edit"))[0].detail)
    assert first["label"] == '["等级", "客户等级"]' and "values" not in first
    # Built-in fields are not edited; unknown ones are not found.
    status, err = await edge.api("PATCH", f"{FIELDS}/risk_level", json={"label": "x"})
    assert status == 400
    status, _ = await edge.api("PATCH", f"{FIELDS}/nope", json={"label": "x"})
    assert status == 404


async def test_restricting_a_list_and_shortening_texts_count_what_breaks(db: None) -> None:
    await attributes.do_add_field(
        spec=attributes.FieldIn(name="hobbies", type="list", max_length=20), actor=OPS
    )
    await _customer("wmFE11", hobbies=["高尔夫", "马术运动爱好者"])
    await _customer("wmFE12", hobbies=["高尔夫"])
    with pytest.raises(fields.FieldConflict) as refused:
        await fields.do_edit_field(
            name="hobbies", edit=fields.FieldEdit(enum_values=("高尔夫",)), actor=OPS
        )
    assert refused.value.detail["breaking"] == 1
    with pytest.raises(fields.FieldConflict) as refused:
        await fields.do_edit_field(name="hobbies", edit=fields.FieldEdit(max_length=4), actor=OPS)
    assert refused.value.detail["by_check"]["max_length"] == 1
    row = await fields.do_edit_field(
        name="hobbies", edit=fields.FieldEdit(enum_values=("高尔夫", "马术运动爱好者")), actor=OPS
    )
    assert row.enum_values == ["高尔夫", "马术运动爱好者"]


async def test_a_sealed_field_is_checked_value_by_value(db: None) -> None:
    keyring = Keyring({"k1": os.urandom(32)}, "k1")
    await attributes.do_add_field(
        spec=attributes.FieldIn(name="credit", type="decimal", sensitive=True), actor=OPS
    )
    await _customer("wmFE21")
    report = await attributes.do_import_attributes(
        rows=[{"external_userid": "wmFE21", "attributes": {"credit": "80000"}}],
        actor=OPS,
        keyring=keyring,
    )
    assert report.accepted == 1
    with pytest.raises(fields.FieldConflict) as refused:
        await fields.do_edit_field(
            name="credit", edit=fields.FieldEdit(maximum="50000"), actor=OPS, keyring=keyring
        )
    assert refused.value.detail["by_check"]["maximum"] == 1
    row = await fields.do_edit_field(
        name="credit", edit=fields.FieldEdit(maximum="100000"), actor=OPS, keyring=keyring
    )
    assert row.maximum == "100000"


async def test_retire_is_blocked_by_uses_then_hides_the_field_and_keeps_its_values(
    edge: Any,
) -> None:
    await _add(edge, name="branch_code", type="string", label="网点代码")
    await _customer("wmFE31", branch_code="SH01")
    await Audience.create(name="上海网点", expr='attr.branch_code = "SH01"')
    await TagRule.create(
        name="网点打标",
        trigger="schedule",
        spec={"when": {"audience": 'attr.branch_code = "SH01"'}, "then": {"add": []}},
    )
    campaign = await Campaign.create(name="网点活动", owner="operator:3")
    await CampaignVersion.create(
        campaign=campaign,
        version=1,
        status=VersionStatus.DRAFT,
        audience='NOT attr.branch_code = "BJ01"',
    )
    status, err = await edge.api("POST", f"{FIELDS}/branch_code/retire")
    assert status == 409 and err["error"]["code"] == "field_in_use"
    assert err["error"]["uses"] == [
        f"打标规则「网点打标」（#{(await TagRule.get(name='网点打标')).id}）",
        "已保存人群「上海网点」",
        f"SOP 活动「网点活动」（#{campaign.id}）",
    ]
    assert not (await attributes.load_schema())["branch_code"].retired
    # An archived campaign no longer counts; the rule and the audience are removed.
    campaign.status = CampaignStatus.ARCHIVED
    await campaign.save()
    await Audience.filter(name="上海网点").delete()
    await TagRule.filter(name="网点打标").delete()
    status, body = await edge.api("POST", f"{FIELDS}/branch_code/retire")
    assert status == 200 and body["retired"]

    # Out of new use: imports refuse it, expressions refuse it at its position...
    status, report = await edge.api(
        "POST",
        "/api/v1/customers/attributes",
        json=[{"external_userid": "wmFE31", "attributes": {"branch_code": "SH02"}}],
    )
    assert status == 200 and report["accepted"] == 0
    assert "retired" in report["errors"][0]["error"]
    status, err = await edge.api(
        "GET", "/api/v1/audiences/count", params={"expr": 'attr.branch_code = "SH01"'}
    )
    assert status == 400 and err["error"]["position"] == 0
    with pytest.raises(audience.ExpressionError, match="retired") as refused:
        await audience.count(audience.parse('attr.age > 1 OR attr.branch_code = "SH01"'))
    assert refused.value.position == 16
    # ...while the stored value stays, and the schema still lists the field as retired.
    stored = await bot_models.Customer.get(external_userid="wmFE31")
    assert stored.attributes == {"branch_code": "SH01"}
    status, listed = await edge.api("GET", FIELDS)
    assert {f["name"]: f["retired"] for f in listed["fields"]}["branch_code"] is True

    # Restored, it is in use again.
    status, body = await edge.api("POST", f"{FIELDS}/branch_code/restore")
    assert status == 200 and not body["retired"]
    status, got = await edge.api(
        "GET", "/api/v1/audiences/count", params={"expr": 'attr.branch_code = "SH01"'}
    )
    assert status == 200 and got["count"] == 1
    assert [e.action for e in await AuditEntry.filter(target="attribute_field:branch_code")] == [
        "tagging.attribute_field.create",
        "tagging.attribute_field.retire",
        "tagging.attribute_field.restore",
    ]
