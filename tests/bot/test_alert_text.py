"""Alerts say which customer and which message, and two alerts never share a text."""

from __future__ import annotations

from bot import models
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


async def test_violation_alerts_are_distinct_and_name_customer_and_message(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    at = 1_790_000_000_000  # both in the same minute
    text = "这个产品保本保收益，放心买，我身份证号110101199003074514"
    records = [
        record("d1", userid, ext, text, at_ms=at),
        record("d2", userid, ext, text, at_ms=at + 1000),
    ]
    status, _ = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200
    await edge.process_all()
    alerts = await models.Alert.filter(kind="violation").order_by("id")
    assert len(alerts) == 2
    contents = [
        (await models.OutboxItem.get(idem_key=f"notify:{a.idem_key}")).payload["text"]["content"]
        for a in alerts
    ]
    # WeCom's duplicate check drops an identical text: each alert must differ.
    assert contents[0] != contents[1]
    customer = await models.Customer.get(external_userid=ext)
    for c in contents:
        assert "这个产品保本保收益" in c  # which message: a masked excerpt
        assert "110101199003074514" not in c
        assert ext not in c
        assert (customer.name and customer.name in c) or ext[-6:] in c


async def test_customer_alert_without_a_name_uses_a_readable_label(edge: Edge) -> None:
    userid, _ = a_relation(edge)
    ext = "wmUNKNOWNcustomer0000000000042"  # not known to WeCom: no name to fetch
    status, _ = await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=[record("r1", ext, userid, "我要投诉你们，马上把理财全部赎回")],
    )
    assert status == 200
    await edge.process_all()
    alerts = await models.Alert.filter(external_userid=ext)
    assert alerts
    for a in alerts:
        c = (await models.OutboxItem.get(idem_key=f"notify:{a.idem_key}")).payload["text"][
            "content"
        ]
        assert ext not in c and "000042" in c and "投诉" in c
