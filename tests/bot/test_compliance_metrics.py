"""Compliance is visible in the metrics: findings, review cases, alerts by kind."""

from __future__ import annotations

from bot.keys import METRICS
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


def _value(edge: Edge, name: str, **labels: str) -> float:
    got = edge.app[METRICS].registry.get_sample_value(name, labels or None)
    return float(got or 0.0)


async def test_findings_cases_and_alerts_are_counted_once(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    records = [
        record("cm1", userid, ext, "这个产品保本保收益，年化肯定不低于5%，放心买"),
        record("cm2", ext, userid, "我要投诉你们，马上把理财全部赎回"),
        record("cm3", userid, ext, "好的，明天见"),
    ]
    await edge.api("POST", "/api/v1/archive/messages", json=records)
    await edge.process_all()
    assert (
        _value(
            edge,
            "siyu_compliance_findings_total",
            category="guaranteed_return",
            severity="violation",
        )
        >= 1
    )
    assert _value(edge, "siyu_review_cases_opened_total") == 1
    assert _value(edge, "siyu_alerts_total", kind="violation") == 1
    customer_alerts = _value(edge, "siyu_alerts_total", kind="complaint") + _value(
        edge, "siyu_alerts_total", kind="redemption_intent"
    )
    assert customer_alerts >= 1
    # A redelivery stores nothing and counts nothing.
    before = _value(edge, "siyu_review_cases_opened_total")
    await edge.api("POST", "/api/v1/archive/messages", json=records)
    await edge.process_all()
    assert _value(edge, "siyu_review_cases_opened_total") == before
    text = await (await edge.session.get(f"{edge.base}/metrics")).text()
    assert "siyu_compliance_findings_total" in text
