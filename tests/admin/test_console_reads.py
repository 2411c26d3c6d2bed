"""The console's written-out page reads return what the ORM's reads return.

The case page, the customer page and every signed-in request read through
``admin.rows`` / ``core.audit._target_entries`` (statements written once, rows hydrated
into the same models); each is held here to the ORM read it replaced, on both
backends, including the edges (no customer, a lead not synced, another page of audit).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from admin import review
from admin import service as admin_service
from admin.flows import NotFound
from admin.models import Operator
from bot import models
from bot import service as bot_service
from core import audit
from core.audit import Actor

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


async def _message(
    i: int, *, customer: models.Customer | None, advisor: models.Advisor
) -> models.Message:
    return await models.Message.create(
        msgid=f"pr-{i}",
        source="archive",
        direction="advisor_to_customer",
        sender_id=advisor.userid,
        sender_role="advisor",
        receiver_ids=[customer.external_userid if customer else "wmX"],
        msgtime=T0 + timedelta(minutes=i),
        msgtype="text",
        masked_text=f"第{i}句",
        analysis={"violations": [{"category": "guaranteed_return", "start": 0, "end": 1}]},
        has_violation=True,
        customer=customer,
        advisor=advisor,
    )


def _fields(row: object) -> dict[str, object]:
    meta = row._meta  # type: ignore[attr-defined]
    return {name: getattr(row, name) for name in meta.fields_db_projection}


async def test_case_read_is_the_prefetched_case(db: None) -> None:
    lead = await models.Advisor.create(userid="lead-1", name="周主管", department="2")
    adv = await models.Advisor.create(userid="adv-1", name="王经理", manager_userid="lead-1")
    cust = await models.Customer.create(external_userid="wm-pr-1", name="李女士")
    cases = []
    for i, who in enumerate([cust, None]):
        m = await _message(i, customer=who, advisor=adv)
        cases.append(
            await models.ReviewCase.create(
                message=m,
                advisor_userid=adv.userid,
                categories=["guaranteed_return"],
                severity="violation",
            )
        )
    for case in cases:
        mine = await review.review_case(case_id=case.id)
        orm = await bot_service.review_case(case_id=case.id)
        assert mine is not None and orm is not None
        assert _fields(mine) == _fields(orm)
        assert _fields(mine.message) == _fields(orm.message)
        for rel in ("customer", "advisor"):
            got, want = getattr(mine.message, rel), getattr(orm.message, rel)
            assert (got is None) == (want is None), rel
            if want is not None:
                assert _fields(got) == _fields(want)
    assert cases[1].id and (await review.review_case(case_id=cases[1].id)).message.customer is None  # type: ignore[union-attr]
    assert await review.review_case(case_id=10_000) is None
    # The advisor's other cases, newest first, the case itself left out.
    mine_earlier = await review.advisor_cases(advisor_userid="adv-1", exclude_id=cases[0].id)
    orm_earlier = await bot_service.advisor_cases(advisor_userid="adv-1", exclude_id=cases[0].id)
    assert [(c.id, c.categories, c.status, c.created_at) for c in mine_earlier] == [
        (c.id, c.categories, c.status, c.created_at) for c in orm_earlier
    ]
    assert [c.id for c in mine_earlier] == [cases[1].id]
    # The advisor and their lead in one read: synced, not synced, none, unknown.
    advisor, leader = await review.advisor_and_leader("adv-1")
    assert advisor == bot_service.AdvisorInfo("adv-1", "王经理", "", "lead-1")
    assert leader == bot_service.AdvisorInfo("lead-1", "周主管", "2", "")
    await models.Advisor.create(userid="adv-2", name="", manager_userid="lead-gone")
    assert (await review.advisor_and_leader("adv-2"))[1] == bot_service.AdvisorInfo(
        "lead-gone", "", "", ""
    )
    assert (await review.advisor_and_leader("lead-1"))[1] is None
    assert await review.advisor_and_leader("nobody") == (None, None)
    assert lead.id


async def test_operator_reads_are_the_orms(db: None) -> None:
    for name, role, status in [
        ("b-rev", "compliance", "active"),
        ("a-rev", "compliance", "active"),
        ("c-rev", "compliance", "disabled"),
        ("d-adm", "admin", "active"),
    ]:
        await Operator.create(
            name=name, display_name=name.upper(), role=role, status=status, password_hash="x"
        )
    for op in await Operator.all():
        mine = await admin_service.operator_by_id(operator_id=op.id)
        assert mine is not None and _fields(mine) == _fields(op)
    assert await admin_service.operator_by_id(operator_id=10_000) is None
    reviewers = await review.compliance_reviewers()
    assert [o.name for o in reviewers] == ["a-rev", "b-rev"]


async def test_target_entries_are_the_filtered_entries_and_use_the_index(db: None) -> None:
    actor = Actor("system", "test", "test")
    for i in range(30):
        async with in_transaction() as conn:
            await audit.append(
                conn=conn,
                actor=actor,
                action="case.decide",
                target=f"review_case:{i % 3}",
                detail={"i": i},
            )
    quick = await audit.entries(where=audit.AuditFilter(target="review_case:1"), limit=7)
    # A second condition takes the ORM's general read: the same entries.
    general = await audit.entries(
        where=audit.AuditFilter(target="review_case:1", since=T0 - timedelta(days=3650)), limit=7
    )
    assert quick == general
    assert [e.seq for e in quick] == sorted((e.seq for e in quick), reverse=True)
    assert len(quick) == 7 and {e.target for e in quick} == {"review_case:1"}
    # The plan reads the (target, seq) index, not the whole log.
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect == "postgres":
        async with in_transaction() as tx:
            await tx.execute_script("SET LOCAL enable_seqscan = off")
            plan = await tx.execute_query_dict(
                "EXPLAIN SELECT * FROM core_audit_log WHERE target = $1 ORDER BY seq DESC LIMIT 20",
                ["review_case:1"],
            )
        text = " ".join(str(next(iter(r.values()))) for r in plan)
    else:
        plan = await conn.execute_query_dict(
            "EXPLAIN QUERY PLAN SELECT * FROM core_audit_log WHERE target = ? "
            "ORDER BY seq DESC LIMIT 20",
            ["review_case:1"],
        )
        text = " ".join(str(r["detail"]) for r in plan)
    assert "idx_core_audit_target_seq" in text, text


async def test_customer_read_is_customer_rows_and_the_timeline_names_its_cases(db: None) -> None:
    from admin.customers import flows as customer_flows
    from bot import customers as bot_customers

    a = await models.Advisor.create(userid="adv-a", name="甲")
    b = await models.Advisor.create(userid="adv-b", name="乙")
    c = await models.Customer.create(external_userid="wm-pr-c", name="赵先生", attributes={"x": 1})
    lone = await models.Customer.create(external_userid="wm-pr-lone", name="")
    await models.FollowRelation.create(
        advisor=a, customer=c, remark="备注", added_at=T0, status="active"
    )
    await models.FollowRelation.create(advisor=b, customer=c, remark="", status="lost")
    for adv, masked in [(a, "138****0001"), (b, "138****0001"), (b, "139****0002")]:
        await models.CustomerPhone.create(
            customer=c,
            advisor=adv,
            source="remark_mobiles",
            phone_bidx=f"bidx-{adv.userid}-{masked}",
            phone_masked=masked,
            phone_sealed="sealed",
        )
    made = [await _message(i, customer=c, advisor=a if i % 2 else b) for i in range(6)]
    for reach in (None, frozenset({"adv-a"}), frozenset({"adv-b"}), frozenset()):
        for cid in (c.id, lone.id, 10_000):
            want = await bot_customers.customer_rows(ids=[cid], advisors=reach)
            got = await customer_flows.customer_row(customer_id=cid, advisors=reach)
            assert (got is None) == (not want), (reach, cid)
            if got is not None:
                assert got == want[0], (reach, cid)
    case = await models.ReviewCase.create(
        message=made[3], advisor_userid="adv-a", categories=["x"], severity="violation"
    )
    lines = await bot_customers.timeline_lines(
        customer_id=c.id, advisors=None, before_id=None, limit=10
    )
    assert [(m.id, m.case_id, m.case_status) for m in lines] == [
        (m.id, case.id if m.id == made[3].id else None, "open" if m.id == made[3].id else "")
        for m in reversed(made)
    ]


async def test_queue_reads_are_the_services(db: None) -> None:
    from dataclasses import replace

    from bot.flows import CATEGORY_LABELS

    leads = [await models.Advisor.create(userid=f"lead-{i}", name=f"主管{i}") for i in range(2)]
    advisors = [
        await models.Advisor.create(
            userid=f"adv-{i}", name="" if i == 3 else f"经理{i}", manager_userid=f"lead-{i % 3}"
        )
        for i in range(5)
    ]  # lead-2 is not synced; adv-3 has no name
    cust = await models.Customer.create(external_userid="wm-q", name="钱女士")
    cats = list(CATEGORY_LABELS)
    statuses = ["open", "escalated", "confirmed", "false_positive"]
    for i in range(40):
        adv = advisors[i % 5]
        m = await _message(100 + i, customer=cust if i % 4 else None, advisor=adv)
        case = await models.ReviewCase.create(
            message=m,
            advisor_userid=adv.userid if i % 13 else "adv-gone",
            categories=[cats[i % 3], cats[(i * 5) % len(cats)]],
            severity="violation" if i % 3 else "review",
            status=statuses[i % 4],
        )
        await models.ReviewCase.filter(id=case.id).update(created_at=T0 + timedelta(hours=i % 17))
    base = bot_service.ReviewFilter()
    filters = [
        base,
        replace(base, statuses=("open", "escalated")),
        replace(base, category=cats[0]),
        replace(base, category=cats[1], advisor_userid="adv-1", statuses=("open",)),
        replace(base, severity="review", team_leader="lead-0"),
        replace(base, team_leader="lead-2"),
        replace(base, since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=9)),
        replace(base, advisors=frozenset({"adv-0", "adv-2"})),
        replace(base, advisors=frozenset(), category=cats[2]),
    ]
    for where in filters:
        chosen = await review.queue_advisors(advisors=where.advisors)
        want_advisors = await bot_service.review_advisors(advisors=where.advisors)
        assert chosen.advisors == want_advisors, where
        leader_ids = sorted({a.manager_userid for a in want_advisors if a.manager_userid})
        infos = await bot_service.advisors_by_userid(userids=leader_ids)
        assert chosen.leaders == [(u, infos.get(u)) for u in leader_ids], where
        total, facets = await review.queue_counts(
            where=where,
            categories=cats,
            managers={a.userid: a.manager_userid for a in chosen.advisors},
        )
        want_rows, want_total = await bot_service.review_cases(where=where, offset=0, limit=500)
        assert total == want_total, where
        assert facets == await bot_service.review_facets(where=where, categories=cats), where
        for offset, limit in ((0, 7), (5, 50)):
            got = await review.queue_page(where=where, offset=offset, limit=limit)
            want = want_rows[offset : offset + limit]
            assert [_fields(c) for c in got] == [_fields(c) for c in want], where
            assert [_fields(c.message) for c in got] == [_fields(c.message) for c in want]
            assert [_fields(c.message.customer) if c.message.customer else None for c in got] == [
                _fields(c.message.customer) if c.message.customer else None for c in want
            ]
    assert leads


async def test_panel_reads_are_the_orms(db: None) -> None:
    """The customer page's panels (tagging, SOP) read written out: the same models."""
    from sop import panels as sop_panels
    from sop.models import Campaign, CampaignVersion, Enrolment
    from tagging import service as tagging_service
    from tagging.models import (
        AttributeField,
        CustomerTag,
        CustomerTagHistory,
        SealedAttribute,
        Tag,
        TagGroup,
        TagSource,
    )

    c = await models.Customer.create(external_userid="wm-pn-1", name="孙女士")
    other = await models.Customer.create(external_userid="wm-pn-2", name="")
    group = await TagGroup.create(name="风险偏好")
    tags = [await Tag.create(group=group, name=f"标签{i}", colour="#1677ff") for i in range(3)]
    for i, tag in enumerate(tags[:2]):
        await CustomerTag.create(
            customer=c,
            tag=tag,
            source=TagSource.RULE if i else TagSource.MANUAL,
            applied_by=f"rule:{i}" if i else "operator:1",
            applied_at=T0 + timedelta(hours=i),
            reason={"rule_id": i} if i else {},
            advisor_userid=None if i else "adv-1",
            expires_at=T0 + timedelta(days=30) if i else None,
        )
    await CustomerTag.create(
        customer=other, tag=tags[2], source=TagSource.MANUAL, applied_by="x", applied_at=T0
    )
    for i in range(5):
        await CustomerTagHistory.create(
            customer_id=c.id if i < 4 else other.id,
            tag_id=tags[i % 3].id,
            action="add" if i % 2 else "remove",
            source=TagSource.MANUAL,
            actor="operator:1",
            reason={"i": i},
            at=T0 + timedelta(minutes=i % 2),  # ties on time: the id orders them
        )
    # A deleted tag and one gone from the table are named by the history too.
    await Tag.filter(id=tags[1].id).update(deleted_at=T0)
    await CustomerTagHistory.create(
        customer_id=c.id,
        tag_id=99_999,
        action="remove",
        source=TagSource.MANUAL,
        actor="operator:1",
        reason={},
        at=T0 + timedelta(minutes=1),
    )
    for cid in (c.id, other.id, 10_000):
        current, history, named = await tagging_service.customer_tags_read(
            customer_id=cid, history_limit=3
        )
        want = await tagging_service.tags_of_customer(customer_id=cid)
        assert [_fields(t) for t in current] == [_fields(t) for t in want], cid
        assert [_fields(t.tag) for t in current] == [_fields(t.tag) for t in want], cid
        want_history = await tagging_service.history_with_tags(customer_id=cid, limit=3)
        assert [_fields(h) for h in history] == [_fields(h) for h in want_history], cid
        # The tags the history names, joined in: tags_by_ids' (a deleted one too).
        want_named = await tagging_service.tags_by_ids(ids=[h.tag_id for h in want_history])
        assert {i: _fields(t) for i, t in named.items()} == {
            i: _fields(t) for i, t in want_named.items()
        }, cid
    await AttributeField.create(name="branch_code", label="网点代码", type="string")
    await AttributeField.create(
        name="tier", type="enum", enum_values=["A", "B"], masked_by_role=True
    )
    got_fields = await tagging_service.attribute_fields_read()
    want_fields = await AttributeField.all().order_by("id")
    assert [_fields(f) for f in got_fields] == [_fields(f) for f in want_fields]
    for name in ("aum", "holdings"):
        await SealedAttribute.create(customer=c, name=name, sealed="sealed")
    for cid in (c.id, other.id):
        want_names = await tagging_service.sealed_names(
            conn=Tortoise.get_connection("default"), customer_ids=[cid]
        )
        assert await tagging_service.sealed_names_of(customer_id=cid) == want_names.get(cid, set())
    for cid in (c.id, other.id, 10_000):
        # The attributes box reads both in one statement: the same fields, the same names.
        both_fields, both_names = await tagging_service.attribute_panel_read(customer_id=cid)
        assert [_fields(f) for f in both_fields] == [_fields(f) for f in want_fields], cid
        assert both_names == await tagging_service.sealed_names_of(customer_id=cid), cid
    campaign = await Campaign.create(name="到期提醒", owner="operator:1")
    version = await CampaignVersion.create(campaign=campaign, version=1)
    for i in range(sop_panels.JOURNEYS_SHOWN + 2):
        await Enrolment.create(
            campaign=campaign,
            version=version,
            customer=c.external_userid,
            advisor=f"adv-{i % 3}",
            entered_at=T0 + timedelta(hours=i // 2),  # pairs tie on time
            trigger_ref=f"t{i}",
        )
    for reach in (None, frozenset({"adv-1"}), frozenset({"adv-1", "adv-2"}), frozenset()):
        got = await sop_panels._enrolments_read(external_userid=c.external_userid, reach=reach)
        q = Enrolment.filter(customer=c.external_userid)
        if reach is not None:
            q = q.filter(advisor__in=sorted(reach))
        want_e = await q.order_by("-entered_at", "-id").limit(sop_panels.JOURNEYS_SHOWN)
        assert [_fields(e) for e in got] == [_fields(e) for e in want_e], reach
        # The panel's own read finds the customer by row id and joins their enrolments.
        read = await sop_panels.customer_enrolments_read(customer_id=c.id, reach=reach)
        assert read is not None and read[0] == c.external_userid
        assert [_fields(e) for e in read[1]] == [_fields(e) for e in want_e], reach
    assert await sop_panels._enrolments_read(external_userid="wm-none", reach=None) == []
    assert await sop_panels.customer_enrolments_read(customer_id=other.id, reach=None) == (
        other.external_userid,
        [],
    )
    assert await sop_panels.customer_enrolments_read(customer_id=10_000, reach=None) is None
    # The SOP panel finds the customer's external_userid by row id, written out too.
    from bot import customers as bot_customers

    assert await bot_customers.external_userid_of(customer_id=c.id) == "wm-pn-1"
    assert await bot_customers.external_userid_of(customer_id=10_000) is None


async def test_conversation_in_one_statement_is_the_model_query(db: None) -> None:
    """The case page's conversation (both sides in one statement) holds to the model
    query: same lines, same order — ties on ``msgtime``, a group chat, the edges."""
    from tests.bot.test_page_reads import _seed as seed_conversations

    _, made = await seed_conversations()
    for anchor in made:
        # As the case page has it: the message read back, not the instance created.
        case_message = await models.Message.get(id=anchor.id)
        for before, after in ((12, 6), (3, 0), (0, 2), (40, 40)):
            prior, following = await bot_service.conversation_around(
                message=case_message, before=before, after=after
            )
            mine_prior, mine_following = await review.conversation_around(
                message=case_message, before=before, after=after
            )
            for want, got in ((prior, mine_prior), (following, mine_following)):
                assert [
                    (m.id, m.sender_role, m.sender_id, m.msgtime, m.msgtype, m.masked_text)
                    for m in want
                ] == [
                    (x.id, x.sender_role, x.sender_id, x.msgtime, x.msgtype, x.masked_text)
                    for x in got
                ], (anchor.msgid, before, after)


async def test_case_page_read_is_the_case_with_its_advisor_and_lead(db: None) -> None:
    """The case page's first read (the case, its advisor and their team lead in one
    statement) gives what ``review_case`` and ``advisor_and_leader`` give apart: a lead
    synced, a lead not synced, no lead, an advisor not synced; out of reach, NotFound."""
    await models.Advisor.create(userid="lead-1", name="周主管", department="2")
    with_lead = await models.Advisor.create(userid="adv-1", name="王经理", manager_userid="lead-1")
    unsynced = await models.Advisor.create(userid="adv-2", name="", manager_userid="lead-x")
    alone = await models.Advisor.create(userid="adv-3", name="孙经理", department="5")
    cust = await models.Customer.create(external_userid="wm-pr-2", name="李女士")
    cases = []
    for i, (adv, named) in enumerate(
        [(with_lead, "adv-1"), (unsynced, "adv-2"), (alone, "adv-3"), (alone, "adv-gone")]
    ):
        m = await _message(i, customer=cust, advisor=adv)
        cases.append(
            await models.ReviewCase.create(
                message=m, advisor_userid=named, categories=["guaranteed_return"], severity="review"
            )
        )
    for case in cases:
        got, people = await review.case_page_read(case_id=case.id, reach=None)
        want = await review.review_case(case_id=case.id)
        assert want is not None
        assert _fields(got) == _fields(want) and _fields(got.message) == _fields(want.message)
        assert people == await review.advisor_and_leader(case.advisor_userid)
    assert (await review.case_page_read(case_id=cases[0].id, reach=None))[1][1] == (
        bot_service.AdvisorInfo("lead-1", "周主管", "2", "")
    )
    assert (await review.case_page_read(case_id=cases[1].id, reach=None))[1][1] == (
        bot_service.AdvisorInfo("lead-x", "", "", "")
    )
    assert (await review.case_page_read(case_id=cases[3].id, reach=None))[1] == (None, None)
    got, _ = await review.case_page_read(case_id=cases[0].id, reach=frozenset({"adv-1"}))
    assert got.id == cases[0].id
    for case_id, reach in (
        (cases[0].id, frozenset({"adv-2"})),
        (cases[0].id, frozenset()),
        (10**6, None),
    ):
        with pytest.raises(NotFound):
            await review.case_page_read(case_id=case_id, reach=reach)
