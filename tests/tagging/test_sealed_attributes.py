"""Sensitive attributes sealed at rest, custom fields added at run time, import history."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bot import models as bot_models
from core.audit import Actor
from core.crypto import Keyring
from core.models import AuditEntry
from tagging import attributes, audience
from tagging.models import AttributeImport, ImportReject, SealedAttribute

OPS = Actor("operator", "3", "管理员老王")
EXT = "wmSEAL0000000000000001"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": os.urandom(32)}, "k1")


async def _customer(ext: str = EXT, **attrs: Any) -> bot_models.Customer:
    return await bot_models.Customer.create(external_userid=ext, attributes=attrs)


async def _import(keyring: Keyring, *rows: dict[str, Any]) -> attributes.ImportReport:
    return await attributes.do_import_attributes(rows=list(rows), actor=OPS, keyring=keyring)


async def _count(expr: str) -> int:
    return await audience.count(audience.parse(expr))


async def test_aum_is_sealed_its_band_kept_clear_and_a_rerun_changes_nothing(
    db: None, keyring: Keyring
) -> None:
    customer = await _customer()
    report = await _import(keyring, {"external_userid": EXT, "attributes": {"aum": "1200000"}})
    assert (report.accepted, report.unchanged, report.rejected) == (1, 0, [])
    stored = await bot_models.Customer.get(id=customer.id)
    assert stored.attributes == {"aum_band": "50万-300万"}  # no AUM in the clear
    row = await SealedAttribute.get(customer_id=customer.id, name="aum")
    assert "1200000" not in row.sealed and row.sealed.startswith("v1.k1.")
    assert attributes.open_value(keyring, row) == "1200000"

    again = await _import(keyring, {"external_userid": EXT, "attributes": {"aum": "1200000.00"}})
    assert (again.accepted, again.unchanged) == (0, 1)
    assert (await SealedAttribute.get(id=row.id)).sealed == row.sealed

    moved = await _import(keyring, {"external_userid": EXT, "attributes": {"aum": "12000000"}})
    assert moved.accepted == 1
    assert (await bot_models.Customer.get(id=customer.id)).attributes["aum_band"] == "1000万+"
    assert await SealedAttribute.filter(customer_id=customer.id).count() == 1

    # A band given beside the AUM must agree with it; the row is refused whole.
    bad = await _import(
        keyring, {"external_userid": EXT, "attributes": {"aum": "100", "aum_band": "1000万+"}}
    )
    assert bad.accepted == 0 and "disagrees" in bad.rejected[0]["error"]
    row = await SealedAttribute.get(customer_id=customer.id, name="aum")
    assert attributes.open_value(keyring, row) == "12000000"

    # A PIPL export names the sealed attribute and keeps it sealed.
    from tortoise import Tortoise

    from tagging import service

    out = await service.export_customer(
        conn=Tortoise.get_connection("default"), external_userid=EXT
    )
    assert [(a["name"], a["sealed"]) for a in out["sealed_attributes"]] == [("aum", True)]
    assert "12000000" not in str(out)

    # A sealed value is bound to its customer: copied onto another, it does not open.
    other = await _customer("wmSEAL0000000000000002")
    copy = await SealedAttribute.create(customer_id=other.id, name="aum", sealed=row.sealed)
    with pytest.raises(Exception, match="authentication failed"):
        attributes.open_value(keyring, copy)


async def test_audiences_use_the_band_and_refuse_the_sealed_value(
    db: None, keyring: Keyring
) -> None:
    await _customer()
    await _customer("wmSEAL0000000000000002")
    await _import(
        keyring,
        {"external_userid": EXT, "attributes": {"aum": "5000000"}},
        {"external_userid": "wmSEAL0000000000000002", "attributes": {"aum": "80000"}},
    )
    assert await _count('attr.aum_band >= "300万-1000万"') == 1
    assert await _count('attr.aum_band = "<50万"') == 1
    with pytest.raises(audience.ExpressionError, match="sealed.*aum_band") as info:
        await _count("attr.risk_level = C1 OR attr.aum > 1000000")
    assert info.value.position == 24
    with pytest.raises(audience.ExpressionError, match="holding.product_code"):
        await _count('attr.holdings = "F1"')


async def test_holdings_amounts_are_sealed_and_the_rest_still_targets(
    db: None, keyring: Keyring
) -> None:
    customer = await _customer()
    holdings = [
        {
            "product_code": "F1",
            "risk_level": "R4",
            "maturity_date": "2030-01-01",
            "amount": "250000",
        }
    ]
    report = await _import(keyring, {"external_userid": EXT, "attributes": {"holdings": holdings}})
    assert report.accepted == 1
    stored = await bot_models.Customer.get(id=customer.id)
    assert stored.attributes["holdings"] == [
        {"product_code": "F1", "risk_level": "R4", "maturity_date": "2030-01-01"}
    ]
    sealed = await SealedAttribute.get(customer_id=customer.id, name="holdings")
    assert attributes.open_value(keyring, sealed)[0]["amount"] == "250000"
    assert await _count("holding.risk_level >= R4") == 1
    bad = await _import(
        keyring,
        {"external_userid": EXT, "attributes": {"holdings": [{**holdings[0], "amount": "-1"}]}},
    )
    assert "amount" in bad.rejected[0]["error"]


async def test_custom_fields_are_added_at_run_time_and_checked(db: None, keyring: Keyring) -> None:
    await _customer()
    await _customer("wmSEAL0000000000000002")
    await attributes.do_add_field(
        spec=attributes.FieldIn(
            name="credit_limit",
            type="decimal",
            label="授信额度",
            minimum="0",
            maximum="5000000",
            sensitive=True,
            bands=("100000", "1000000"),
        ),
        actor=OPS,
    )
    await attributes.do_add_field(
        spec=attributes.FieldIn(
            name="interests", type="list", label="兴趣", enum_values=("高尔夫", "养老", "教育")
        ),
        actor=OPS,
    )
    await attributes.do_add_field(
        spec=attributes.FieldIn(name="kyc_date", type="date", minimum="2000-01-01", required=True),
        actor=OPS,
    )
    assert await AuditEntry.filter(action="tagging.attribute_field.create").count() == 3
    report = await _import(
        keyring,
        {
            "external_userid": EXT,
            "attributes": {
                "credit_limit": "200000",
                "interests": "养老|高尔夫",
                "kyc_date": "2021-05-01",
            },
        },
        # kyc_date is required and this customer has none.
        {"external_userid": "wmSEAL0000000000000002", "attributes": {"interests": "教育"}},
        {"external_userid": EXT, "attributes": {"interests": "滑雪"}},
        {"external_userid": EXT, "attributes": {"credit_limit": "9000000"}},
        {"external_userid": EXT, "attributes": {"kyc_date": "1999-12-31"}},
    )
    assert report.accepted == 1
    errors = {e["row"]: e["error"] for e in report.as_dict()["errors"]}
    assert errors == {
        2: "kyc_date: required",
        3: "interests[0]: must be one of 高尔夫, 养老, 教育",
        4: "credit_limit: above 5000000",
        5: "kyc_date: before 2000-01-01",
    }
    stored = await bot_models.Customer.get(external_userid=EXT)
    assert stored.attributes == {
        "credit_limit_band": "100000-1000000",
        "interests": ["养老", "高尔夫"],
        "kyc_date": "2021-05-01",
    }
    assert await _count('attr.interests = "养老"') == 1
    assert await _count('attr.interests != "养老"') == 1
    assert await _count('attr.credit_limit_band >= "100000-1000000"') == 1
    assert await _count('attr.kyc_date < "2022-01-01"') == 1
    with pytest.raises(audience.ExpressionError, match="use = \\(contains\\)"):
        await _count('attr.interests > "养老"')
    with pytest.raises(audience.ExpressionError, match="credit_limit_band"):
        await _count("attr.credit_limit >= 1")

    schema = await attributes.load_schema()
    bad_fields = [
        (attributes.FieldIn(name="aum", type="int"), "name", "已存在"),
        (attributes.FieldIn(name="Bad-Name", type="int"), "name", "小写"),
        (attributes.FieldIn(name="grade", type="enum"), "enum_values", "取值"),
        (attributes.FieldIn(name="x", type="int", minimum="5", maximum="1"), "maximum", "上限"),
        (attributes.FieldIn(name="x", type="string", bands=("1",)), "bands", "敏感"),
        (attributes.FieldIn(name="x", type="blob"), "type", "类型"),
    ]
    for spec, where, message in bad_fields:
        with pytest.raises(attributes.FieldError) as info:
            attributes.check_field(spec, schema)
        assert info.value.field == where and message in info.value.message


async def test_every_import_is_kept_with_its_rejects_but_never_their_values(
    db: None, keyring: Keyring
) -> None:
    await _customer()
    report = await _import(
        keyring,
        {"external_userid": EXT, "attributes": {"aum": "1000", "risk_level": "C2"}},
        {"external_userid": EXT, "attributes": {"risk_level": "C9", "aum": "777777"}},
        {"external_userid": "wmNOBODY00000000000009", "attributes": {"age": 40}},
    )
    batch = await AttributeImport.get(id=report.import_id)
    assert (batch.source, batch.actor, batch.status) == ("api", "operator:3", "done")
    assert (batch.rows, batch.accepted, batch.unchanged, batch.rejected) == (3, 1, 0, 2)
    rejects = await ImportReject.filter(batch_id=batch.id).order_by("row")
    assert [(r.row, r.error) for r in rejects] == [
        (2, "risk_level: must be one of C1, C2, C3, C4, C5"),
        (3, "unknown customer"),
    ]
    assert rejects[1].who == "wmNO…0009"
    assert all("777777" not in r.error and "777777" not in r.who for r in rejects)


async def test_clear_values_stored_before_sealing_are_sealed_once(
    db: None, keyring: Keyring
) -> None:
    legacy = await _customer(
        aum="2500000",
        risk_level="C3",
        holdings=[{"product_code": "F9", "risk_level": "R2", "amount": "10"}],
    )
    assert await attributes.do_seal_existing(keyring=keyring) == 1
    stored = await bot_models.Customer.get(id=legacy.id)
    assert stored.attributes == {
        "aum_band": "50万-300万",
        "risk_level": "C3",
        "holdings": [{"product_code": "F9", "risk_level": "R2"}],
    }
    rows = {r.name: r for r in await SealedAttribute.filter(customer_id=legacy.id)}
    assert attributes.open_value(keyring, rows["aum"]) == "2500000"
    assert attributes.open_value(keyring, rows["holdings"])[0]["amount"] == "10"
    assert await attributes.do_seal_existing(keyring=keyring) == 0


async def test_attribute_fields_api(edge: Any) -> None:
    status, body = await edge.api("GET", "/api/v1/customers/attribute-fields")
    assert status == 200
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["aum"]["sensitive"] and fields["aum"]["band"] == "aum_band"
    assert fields["risk_level"]["values"] == ["C1", "C2", "C3", "C4", "C5"]
    new = {
        "name": "deposit_total",
        "type": "decimal",
        "label": "存款余额",
        "sensitive": True,
        "bands": ["50000", "500000"],
    }
    status, created = await edge.api("POST", "/api/v1/customers/attribute-fields", json=new)
    assert status == 201 and created["band"] == "deposit_total_band"
    status, err = await edge.api("POST", "/api/v1/customers/attribute-fields", json=new)
    assert status == 409 and err["error"]["field"] == "name"
    bad = {**new, "name": "other", "type": "blob"}
    status, err = await edge.api("POST", "/api/v1/customers/attribute-fields", json=bad)
    assert status == 400 and err["error"]["code"] == "invalid_field"
    status, err = await edge.api(
        "POST", "/api/v1/customers/attribute-fields", json={**new, "surprise": 1}
    )
    assert status == 400
    # Imports know the field at once; its band is what audiences see.
    await _customer()
    status, report = await edge.api(
        "POST",
        "/api/v1/customers/attributes",
        json=[{"external_userid": EXT, "attributes": {"deposit_total": "120000"}}],
    )
    assert status == 200 and report["accepted"] == 1 and "import_id" in report
    stored = await bot_models.Customer.get(external_userid=EXT)
    assert stored.attributes == {"deposit_total_band": "50000-500000"}
    assert await _count('attr.deposit_total_band = "50000-500000"') == 1
