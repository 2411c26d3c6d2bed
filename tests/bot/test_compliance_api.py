"""POST /api/v1/compliance/check: the advisor's pre-send check."""

from __future__ import annotations

from tests.bot.harness import Edge


async def test_check_flags_a_promise_with_span_and_basis(edge: Edge) -> None:
    text = "这款理财保本保息，年化收益至少4.5%"
    status, body = await edge.api(
        "POST", "/api/v1/compliance/check", json={"text": text, "role": "advisor"}
    )
    assert status == 200
    cats = {v["category"] for v in body["violations"]}
    assert "guaranteed_return" in cats
    v = body["violations"][0]
    assert text[v["start"] : v["end"]] == v["evidence"] and v["basis"]


async def test_check_passes_a_disclaimer(edge: Edge) -> None:
    status, body = await edge.api(
        "POST",
        "/api/v1/compliance/check",
        json={"text": "本产品不保证本金和收益，请谨慎投资。", "role": "advisor"},
    )
    assert status == 200
    assert [v for v in body["violations"] if v["severity"] == "violation"] == []


async def test_check_masks_pii_for_customers(edge: Edge) -> None:
    status, body = await edge.api(
        "POST",
        "/api/v1/compliance/check",
        json={"text": "电话13912345678，热线95588", "role": "customer"},
    )
    assert status == 200
    assert "13912345678" not in body["masked_text"] and "95588" in body["masked_text"]


async def test_check_bad_input(edge: Edge) -> None:
    assert (await edge.api("POST", "/api/v1/compliance/check", json={"role": "advisor"}))[0] == 400
    assert (await edge.api("POST", "/api/v1/compliance/check", json={"text": "x", "role": "boss"}))[
        0
    ] == 400
    assert (
        await edge.api(
            "POST",
            "/api/v1/compliance/check",
            data=b"{oops",
            headers={"Content-Type": "application/json"},
        )
    )[0] == 400
    assert (await edge.api("POST", "/api/v1/compliance/check", json={"text": "x" * 100_001}))[
        0
    ] == 413
