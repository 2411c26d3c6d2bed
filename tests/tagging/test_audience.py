"""Audience expressions: parse errors with positions, injection attempts, counts per dialect."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from core.audit import Actor
from tagging import audience, flows
from tagging.models import TagSource
from tagging.schemas import GroupIn, TagEdit, TagIn

OPS = Actor("operator", "7", "运营小王")
TODAY = date(2026, 12, 6)

EXPR = 'tag:"高净值" AND (tag:"关注养老" OR attr.risk_level >= C3) AND NOT tag:"已退订"'


@pytest.mark.parametrize(
    ("expr", "position", "message"),
    [
        ('tag:"高净值" AND (tag:"关注养老"', 25, "unexpected end"),
        ('tag:"高净值" AND', 13, "unexpected end"),
        ('tag:"a" AND AND tag:"b"', 12, "AND"),
        ('tag:"a")', 7, ")"),
        ("", 0, "empty"),
        ('tag:"a" ; DROP TABLE bot_customer', 8, ";"),
        ("attr.risk_level) OR (1=1", 15, ")"),
        ('tag:"a" OR 1=1', 11, "1"),
    ],
)
def test_syntax_errors_name_their_position(expr: str, position: int, message: str) -> None:
    with pytest.raises(audience.ExpressionError) as info:
        audience.parse(expr)
    assert info.value.position == position
    assert message in info.value.message


def test_the_ast_of_a_representative_expression() -> None:
    node = audience.parse(EXPR + " AND attr.maturity_date WITHIN 7d")
    assert isinstance(node, audience.And)
    assert node.items[0] == audience.TagTerm("高净值", 0)
    assert isinstance(node.items[1], audience.Or)
    assert node.items[1].items[1] == audience.AttrCmp("risk_level", ">=", "C3", 29)
    assert node.items[2] == audience.Not(audience.TagTerm("已退订", 60))
    assert node.items[3] == audience.AttrWithin("maturity_date", 7, 74)
    # Keywords are case-insensitive; a quote inside a tag name is escaped.
    assert audience.parse('tag:"a\\"b" and not tag:"c"') == audience.And(
        (audience.TagTerm('a"b', 0), audience.Not(audience.TagTerm("c", 19)))
    )


def test_too_long_or_too_many_terms_is_refused() -> None:
    with pytest.raises(audience.ExpressionError, match="longer"):
        audience.parse('tag:"a" OR ' * 300 + 'tag:"a"')
    with pytest.raises(audience.ExpressionError, match="terms"):
        audience.parse(" OR ".join(['tag:"a"'] * 65))


async def _seed() -> dict[str, int]:
    """Five customers with tags and attributes; returns tag ids by name."""
    group = await flows.do_create_group(spec=GroupIn(name="画像"), actor=OPS)
    tags = {}
    for name in ("高净值", "关注养老", "已退订", "'; DROP TABLE bot_customer; --"):
        tags[name] = (
            await flows.do_create_tag(spec=TagIn(group_id=group.id, name=name[:30]), actor=OPS)
        ).id
    people: list[tuple[str, str, dict[str, Any], list[str]]] = [
        (
            "wmAUD00000000000000001",
            "张三丰",
            {"risk_level": "C4", "maturity_date": "2026-12-10"},
            ["高净值"],
        ),
        ("wmAUD00000000000000002", "李四", {"risk_level": "C2", "age": 61}, ["高净值", "关注养老"]),
        ("wmAUD00000000000000003", "王五", {"risk_level": "C5"}, ["高净值", "已退订"]),
        (
            "wmAUD00000000000000004",
            "赵六",
            {"risk_level": "C1", "maturity_date": "2027-03-01"},
            ["高净值"],
        ),
        ("wmAUD00000000000000005", "钱七", {}, ["'; DROP TABLE bot_customer; --"]),
    ]
    async with in_transaction() as conn:
        for ext, name, attrs, names in people:
            customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
            await (
                bot_models.Customer.filter(id=customer.id)
                .using_db(conn)
                .update(name=name, attributes=attrs)
            )
            for n in names:
                tag = await flows.service.get_tag(conn=conn, tag_id=tags[n])
                assert tag is not None
                await flows.tag_customer(
                    conn=conn,
                    external_userid=ext,
                    tag=tag,
                    source=TagSource.IMPORT,
                    applied_by="import:test",
                )
    return tags


async def _count(expr: str) -> int:
    return await audience.count(audience.parse(expr), today=TODAY)


async def test_counts_and_previews_match_the_data(db: None) -> None:
    await _seed()
    assert await _count(EXPR) == 2  # 张三丰 (C4) and 李四 (关注养老); 王五 unsubscribed
    assert await _count('tag:"高净值"') == 4
    assert await _count('NOT tag:"高净值"') == 1
    assert await _count("attr.risk_level >= C3") == 2
    assert await _count("attr.risk_level < C3") == 2
    assert await _count("NOT attr.risk_level = C1") == 4  # missing attribute counts as not equal
    assert await _count("attr.age >= 60") == 1
    assert await _count("attr.maturity_date WITHIN 7d") == 1
    assert await _count("attr.maturity_date WITHIN 120d") == 2
    assert await _count('attr.maturity_date > "2027-01-01"') == 1
    # A tag whose name looks like SQL is just a name.
    assert await _count('tag:"\'; DROP TABLE bot_customer; --"') == 1
    assert await bot_models.Customer.all().count() == 5

    rows = await audience.preview(audience.parse(EXPR), limit=1, today=TODAY)
    assert len(rows) == 1
    assert rows[0].name == "张**" and rows[0].external_userid == "wmAU…0001"


async def test_unknown_names_and_bad_values_are_refused_with_positions(db: None) -> None:
    await _seed()
    cases = [
        ('tag:"高净值" AND tag:"不存在"', 14, "unknown tag"),
        ('tag:"高净值" OR attr.salary > 3', 13, "unknown attribute"),
        ("attr.risk_level >= C9", 0, "C1"),
        ("attr.risk_level = \"C3' OR '1'='1\"", 0, "C1"),
        ("attr.age > abc", 0, "number"),
        ("attr.risk_level WITHIN 7d", 0, "date"),
        ('attr.birthday > "tomorrow"', 0, "date"),
    ]
    for expr, position, message in cases:
        with pytest.raises(audience.ExpressionError) as info:
            await _count(expr)
        assert info.value.position == position, expr
        assert message in info.value.message, expr


async def test_a_preview_refuses_an_unknown_tag_though_it_finds_rows(db: None) -> None:
    """A preview reads its tags' live ids inside its one query; a name that is not
    there is still an error at its position — with no rows, and with rows found by
    the rest of the expression."""
    await _seed()
    for expr, position in (
        ('tag:"高净值" AND tag:"不存在"', 14),
        ('tag:"高净值" OR tag:"不存在"', 13),
        ('NOT tag:"不存在"', 4),
    ):
        with pytest.raises(audience.ExpressionError, match="unknown tag") as info:
            await audience.preview(audience.parse(expr), limit=5, today=TODAY)
        assert info.value.position == position, expr
    assert len(await audience.preview(audience.parse('tag:"高净值"'), limit=5, today=TODAY)) == 4


async def test_a_preview_follows_tags_renamed_or_deleted_since_the_last_one(db: None) -> None:
    """A preview reuses the tag ids the last one found, checked in its own query: a
    name that now means another tag, or no tag, is answered as it is now."""
    tags = await _seed()

    async def shown(expr: str) -> list[str]:
        rows = await audience.preview(audience.parse(expr), limit=10, today=TODAY)
        return [r.name for r in rows]

    assert await shown('tag:"高净值"') == ["张**", "李*", "王*", "赵*"]
    assert await shown('tag:"已退订"') == ["王*"]
    # The two names swap tags: the ids remembered for them are now each other's.
    await flows.do_edit_tag(tag_id=tags["高净值"], edit=TagEdit(name="临时"), actor=OPS)
    await flows.do_edit_tag(tag_id=tags["已退订"], edit=TagEdit(name="高净值"), actor=OPS)
    await flows.do_edit_tag(tag_id=tags["高净值"], edit=TagEdit(name="已退订"), actor=OPS)
    assert await shown('tag:"高净值"') == ["王*"]
    assert await shown('tag:"已退订"') == ["张**", "李*", "王*", "赵*"]
    # Nobody matching is told apart from a name that went away.
    assert await shown('tag:"高净值" AND tag:"关注养老"') == []
    await flows.do_delete_tag(tag_id=tags["关注养老"], actor=OPS)
    with pytest.raises(audience.ExpressionError, match="unknown tag"):
        await shown('tag:"高净值" AND tag:"关注养老"')
    with pytest.raises(audience.ExpressionError, match="unknown tag"):
        await shown('tag:"已退订" OR tag:"关注养老"')
    never = audience.parse('tag:"已退订" AND NOT tag:"已退订"')
    assert await audience.preview(never, limit=5) == []


async def test_api_count_preview_and_saved_audiences(edge: Any) -> None:
    await _seed()
    status, body = await edge.api("GET", "/api/v1/audiences/count", params={"expr": 'tag:"高净值"'})
    assert (status, body) == (200, {"count": 4})
    status, body = await edge.api(
        "GET", "/api/v1/audiences/count", params={"expr": 'tag:"高净值" AND (tag:"关注养老"'}
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_expression"
    assert body["error"]["position"] == 25 and body["error"]["message"]
    status, body = await edge.api(
        "GET", "/api/v1/audiences/preview", params={"expr": 'tag:"高净值"', "limit": "2"}
    )
    assert status == 200 and body["count"] == 4 and len(body["customers"]) == 2
    assert all("…" in c["external_userid"] for c in body["customers"])
    status, _ = await edge.api(
        "GET", "/api/v1/audiences/preview", params={"expr": 'tag:"高净值"', "limit": "5000"}
    )
    assert status == 400

    status, saved = await edge.api(
        "POST", "/api/v1/audiences", json={"name": "养老高净值", "expr": EXPR}
    )
    assert status == 200 and saved["name"] == "养老高净值"
    status, body = await edge.api(
        "POST", "/api/v1/audiences", json={"name": "坏的", "expr": 'tag:"没有"'}
    )
    assert status == 400 and body["error"]["position"] == 0
    status, body = await edge.api("GET", "/api/v1/audiences")
    assert [a["name"] for a in body["audiences"]] == ["养老高净值"]


async def test_inactive_counts_customers_silent_for_n_days(db: None) -> None:
    await _seed()
    now = datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC)

    async def said(ext: str, days_ago: int, role: str = "customer") -> None:
        customer = await bot_models.Customer.get(external_userid=ext)
        await bot_models.Message.create(
            msgid=f"{ext}-{days_ago}-{role}",
            source="archive",
            direction="customer_to_advisor" if role == "customer" else "advisor_to_customer",
            sender_id=ext,
            sender_role=role,
            msgtime=now - timedelta(days=days_ago),
            msgtype="text",
            customer=customer,
        )

    await said("wmAUD00000000000000001", 3)
    await said("wmAUD00000000000000002", 40)
    await said("wmAUD00000000000000003", 1, role="advisor")  # the advisor spoke, not them
    assert await _count("inactive:30d") == 4
    assert await _count('inactive:30d AND tag:"高净值"') == 3
    assert await _count("NOT inactive:60d") == 2


async def test_holdings_maturity_and_product_risk(db: None) -> None:
    await _seed()
    holdings = {
        "wmAUD00000000000000001": [
            {"product_code": "F1", "risk_level": "R4", "maturity_date": "2026-12-09"},
            {"product_code": "F2", "risk_level": "R2", "maturity_date": "2027-06-01"},
        ],
        "wmAUD00000000000000002": [
            {"product_code": "F3", "risk_level": "R2", "maturity_date": "2026-12-20"}
        ],
    }
    for ext, items in holdings.items():
        customer = await bot_models.Customer.get(external_userid=ext)
        await bot_models.Customer.filter(id=customer.id).update(
            attributes={**customer.attributes, "holdings": items}
        )
    # A customer whose holdings are malformed (not a list) is simply not matched.
    c3 = await bot_models.Customer.get(external_userid="wmAUD00000000000000003")
    await bot_models.Customer.filter(id=c3.id).update(attributes={"holdings": "oops"})

    assert await _count("holding.maturity_date WITHIN 7d") == 1
    assert await _count("holding.maturity_date WITHIN 30d") == 2
    assert await _count("holding.risk_level >= R4") == 1
    assert await _count('holding.product_code = "F3"') == 1
    assert await _count('holding.risk_level <= R2 AND NOT tag:"已退订"') == 2
    for expr, message in (
        ("holding.coupon > 3", "unknown holding field"),
        ("holding.risk_level >= R9", "R1"),
        ("holding.risk_level WITHIN 7d", "WITHIN needs a date"),
    ):
        with pytest.raises(audience.ExpressionError, match=message) as info:
            await _count(expr)
        assert info.value.position == 0


async def test_random_expressions_count_and_select_as_their_logic_says(db: None) -> None:
    """Counts (a list subquery on SQLite) and previews (EXISTS) against the expression
    evaluated in Python, where a missing attribute never matches — also under NOT."""
    import random

    await _seed()
    people = {c.id: c for c in await bot_models.Customer.all().prefetch_related("tags__tag")}
    truth_tags = {cid: {ct.tag.name for ct in c.tags} for cid, c in people.items()}
    attrs = {cid: c.attributes for cid, c in people.items()}
    order = ["C1", "C2", "C3", "C4", "C5"]
    atoms: list[tuple[str, Any]] = [
        ('tag:"高净值"', lambda cid: "高净值" in truth_tags[cid]),
        ('tag:"关注养老"', lambda cid: "关注养老" in truth_tags[cid]),
        ('tag:"已退订"', lambda cid: "已退订" in truth_tags[cid]),
        (
            "attr.risk_level >= C3",
            lambda cid: attrs[cid].get("risk_level") in order[2:],
        ),
        ("attr.risk_level = C1", lambda cid: attrs[cid].get("risk_level") == "C1"),
        ("attr.age >= 60", lambda cid: attrs[cid].get("age", -1) >= 60),
        (
            "attr.maturity_date WITHIN 7d",
            lambda cid: "2026-12-06" <= attrs[cid].get("maturity_date", "") <= "2026-12-13",
        ),
    ]
    rng = random.Random(12)

    def build(depth: int) -> tuple[str, Any]:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice(atoms)
        kind = rng.choice(["AND", "OR", "NOT"])
        if kind == "NOT":
            text, fn = build(depth - 1)
            return f"NOT ({text})", lambda cid, fn=fn: not fn(cid)
        (lt, lf), (rt, rf) = build(depth - 1), build(depth - 1)
        if kind == "AND":
            return f"({lt} AND {rt})", lambda cid, lf=lf, rf=rf: lf(cid) and rf(cid)
        return f"({lt} OR {rt})", lambda cid, lf=lf, rf=rf: lf(cid) or rf(cid)

    for _ in range(40):
        text, fn = build(3)
        want = sorted(cid for cid in people if fn(cid))
        node = audience.parse(text)
        assert await audience.count(node, today=TODAY) == len(want), text
        rows = await audience.preview(node, limit=10, today=TODAY)
        by_id = {people[cid].external_userid for cid in want}
        masked = {audience.mask_name(people[cid].name) for cid in want}
        assert len(rows) == len(by_id), text
        assert {r.name for r in rows} <= masked, text


async def test_a_preview_masks_in_the_database_as_python_does(db: None) -> None:
    """The preview's columns are masked by SQL; they agree with ``mask_external_userid``
    and ``mask_name`` on both databases, for short and long, CJK and emoji values."""
    from bot.outbox import mask_external_userid

    people = [
        ("wm1", ""),
        ("wm12345678", "李"),
        ("wm123456789", "张三"),
        ("wmAUDMASK00000000000001", "欧阳娜娜子"),
        ("wmAUDMASK😀0000000000002", "😀x"),
        ("wmAUDMASK00000000000003", "Ann"),
    ]
    for ext, name in people:
        await bot_models.Customer.create(external_userid=ext, name=name, attributes={})
    rows = await audience.preview(audience.parse("NOT attr.age = 999"), limit=10, today=TODAY)
    assert [(r.external_userid, r.name) for r in rows] == [
        (mask_external_userid(ext), audience.mask_name(name)) for ext, name in people
    ]
    assert rows[3] == ("wmAU…0001", "欧***")


async def test_a_kept_count_follows_tags_and_fields_changed_since_it_was_compiled(
    db: None,
) -> None:
    """A count and a preview are compiled once per expression and kept; each run reads
    the live tag ids and the fields' stamp in its own query, so a renamed or deleted
    tag, and a custom field edited or retired since, are answered as they are now."""
    from tagging import attributes, fields

    tags = await _seed()
    await attributes.do_add_field(
        spec=attributes.FieldIn(name="segment", type="enum", enum_values=("A", "B")), actor=OPS
    )
    await bot_models.Customer.filter(external_userid="wmAUD00000000000000001").update(
        attributes={"risk_level": "C4", "segment": "B"}
    )
    expr = 'tag:"高净值" AND attr.segment = "B"'
    assert await audience.count(expr, today=TODAY) == 1
    assert await audience.count(expr, today=TODAY) == 1  # kept: one query, same answer
    assert audience.parse(expr) is audience.parse(expr)
    # The tag's name moves to another tag: the kept statement's ids are stale.
    await flows.do_edit_tag(tag_id=tags["高净值"], edit=TagEdit(name="临时"), actor=OPS)
    await flows.do_edit_tag(tag_id=tags["关注养老"], edit=TagEdit(name="高净值"), actor=OPS)
    assert await audience.count(expr, today=TODAY) == 0
    assert await audience.count('tag:"高净值"', today=TODAY) == 1
    # An enum value withdrawn, then the field retired: refused at its position.
    await bot_models.Customer.filter(external_userid="wmAUD00000000000000001").update(
        attributes={"risk_level": "C4", "segment": "A"}
    )
    assert await audience.count('attr.segment = "A"', today=TODAY) == 1
    await fields.do_edit_field(
        name="segment", edit=fields.FieldEdit(enum_values=("A", "C")), actor=OPS
    )
    with pytest.raises(audience.ExpressionError, match="one of A, C") as refused:
        await audience.count(expr, today=TODAY)
    assert refused.value.position == 14
    await fields.do_retire_field(name="segment", actor=OPS)
    for run in (audience.count, audience.preview):
        with pytest.raises(audience.ExpressionError, match="retired") as refused:
            await run('attr.segment = "A"', **({"limit": 5} if run is audience.preview else {}))
        assert refused.value.position == 0
    await flows.do_delete_tag(tag_id=tags["关注养老"], actor=OPS)
    with pytest.raises(audience.ExpressionError, match="unknown tag"):
        await audience.count('tag:"高净值"', today=TODAY)
