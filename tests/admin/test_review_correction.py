"""Correcting a confirmed case's category: compliance only, a mandatory comment, audited,
the pipeline's categories kept beside it, and the labelled export uses the correction.
On the case page and through ``/api/v1/review/cases/{id}/category``.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import time_machine

from admin import flows as admin_flows
from admin import review
from admin.permissions import load_table
from bot import models as bot_models
from compliance_nlp.training.labels import check_labels
from core import audit
from core.appkit import KEYRING
from tests.admin import review_seed as seed
from tests.admin.console import CLI, Console, make_operator, signed_in_client


async def _confirmed_case(console: Console, *, decide: bool = True) -> bot_models.ReviewCase:
    seeded = await seed.conversation(
        keyring=console.app[KEYRING],
        advisor_row=await seed.advisor("adv-zhao", "赵经理"),
        customer_row=await seed.customer("wmCust0001", "周先生"),
        turns=[
            ("customer", "这个理财到期本金能拿回来吧？"),
            ("advisor", "您放心，这个产品保本保收益，稳赚"),
        ],
    )
    case = seeded.cases[0]
    if decide:
        with time_machine.travel(seed.T0 + timedelta(hours=2), tick=False):
            await review.do_decide_cases(
                actor=CLI,
                source="test",
                case_ids=[case.id],
                decision="confirmed",
                comment="确认违规",
                reach=None,
            )
    return case


def _csrf(html: str) -> str:
    m = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


async def test_a_reviewer_corrects_the_category_on_the_case_page(console: Console) -> None:
    case = await _confirmed_case(console)
    await make_operator("compliance", name="reviewer", display_name="李合规")
    client, _ = await signed_in_client(console, "reviewer")
    url = console.url(f"/review/{case.id}")
    async with client:
        async with client.get(url) as r:
            html = await r.text()
        assert 'id="correct-form"' in html
        token = _csrf(html)
        # The comment is mandatory; nothing changes without it.
        async with client.post(
            url + "/category",
            data={"_csrf": token, "categories": "account_custody", "correction_comment": " "},
        ) as r:
            assert r.status == 422 and "请填写审核意见" in await r.text()
        # The same categories as now: refused.
        async with client.post(
            url + "/category",
            data={"_csrf": token, "categories": "guaranteed_return", "correction_comment": "同上"},
        ) as r:
            assert r.status == 422 and "与当前类别相同" in await r.text()
        async with client.post(
            url + "/category",
            data=[
                ("_csrf", token),
                ("categories", "misleading_promotion"),
                ("categories", "account_custody"),
                ("correction_comment", "实为夸大宣传并索要账户，非承诺保本；客户号码13812345678"),
            ],
            allow_redirects=False,
        ) as r:
            assert r.status == 303
        async with client.get(url + "?corrected=1") as r:
            html = await r.text()
    corrected = html.split('id="corrected-categories">', 1)[1].split("</dd>", 1)[0]
    assert "误导性宣传" in corrected and "代客操作/索要账户信息" in corrected
    assert "原判定：承诺保本保收益" in corrected
    assert "13812345678" not in html and "138****5678" in html  # the comment is masked
    row = await bot_models.ReviewCase.get(id=case.id)
    assert row.categories == ["guaranteed_return"]  # what the pipeline found stays
    assert row.corrected_categories == ["account_custody", "misleading_promotion"]
    assert row.corrected_by == "reviewer" and row.status == "confirmed"
    (entry,) = [
        e
        for e in await audit.entries(where=audit.AuditFilter(target=f"review_case:{case.id}"))
        if e.action == "review.correct_category"
    ]
    detail = json.loads(entry.detail)
    assert detail["from"] == ["guaranteed_return"]
    assert detail["to"] == ["account_custody", "misleading_promotion"]
    assert "更正违规类别" in html  # the case's audit list names it


async def test_only_a_confirmed_case_and_only_compliance(console: Console) -> None:
    case = await _confirmed_case(console, decide=False)
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    async with client:
        async with client.get(console.url(f"/review/{case.id}")) as r:
            assert 'id="correct-form"' not in await r.text()
        async with client.post(
            console.url(f"/review/{case.id}/category"),
            data={"_csrf": token, "categories": "account_custody", "correction_comment": "改"},
        ) as r:
            assert r.status == 409 and "只能更正「确认违规」案件的类别" in await r.text()
    await make_operator("team_lead", name="lead")
    client, token = await signed_in_client(console, "lead")
    async with client:
        async with client.post(
            console.url(f"/review/{case.id}/category"),
            data={"_csrf": token, "categories": "account_custody", "correction_comment": "改"},
        ) as r:
            assert r.status == 403
    assert (await bot_models.ReviewCase.get(id=case.id)).corrected_categories is None


async def test_the_api_reads_and_corrects(console: Console) -> None:
    case = await _confirmed_case(console)
    table = load_table()
    key = await admin_flows.do_create_api_key(
        actor=CLI, source="test", name="bi", scopes=list(table.scopes), table=table
    )
    bearer = {"Authorization": f"Bearer {key.plaintext}"}
    api = console.url(f"/api/v1/review/cases/{case.id}")
    async with console.client() as client:
        async with client.get(api, headers=bearer) as r:
            body = await r.json()
        assert r.status == 200 and body["categories"] == ["guaranteed_return"]
        assert body["corrected"] is False and "保本保收益" in body["text"]
        # A key holds no reviewer's judgement: correcting is compliance's, signed in.
        async with client.post(
            api + "/category",
            json={"categories": ["account_custody"], "comment": "x"},
            headers=bearer,
        ) as r:
            assert r.status == 403
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    headers = {"X-CSRF-Token": token}
    async with client:
        for payload, field in [
            ({"categories": [], "comment": "改"}, "categories"),
            ({"categories": ["account_custody"], "comment": ""}, "comment"),
            ({"categories": ["no_such_thing"], "comment": "改"}, "categories"),
            ({"categories": ["account_custody"]}, "comment"),
        ]:
            async with client.post(api + "/category", json=payload, headers=headers) as r:
                error = (await r.json())["error"]
            assert (r.status, error["field"]) == (400, field), payload
        async with client.post(
            api + "/category",
            json={"categories": ["account_custody"], "comment": "实为索要账户密码"},
            headers=headers,
        ) as r:
            body = await r.json()
        assert r.status == 200
        assert body["categories"] == ["account_custody"]
        assert body["detected_categories"] == ["guaranteed_return"] and body["corrected"] is True
        async with client.post(
            console.url("/api/v1/review/cases/999999/category"),
            json={"categories": ["account_custody"], "comment": "改"},
            headers=headers,
        ) as r:
            assert r.status == 404
    open_case = (
        await seed.conversation(
            keyring=console.app[KEYRING],
            advisor_row=await seed.advisor("adv-li", "李经理"),
            customer_row=await seed.customer("wmCust0002", "吴女士"),
            turns=[("advisor", "钱直接转我卡上就行，不用走系统")],
            msgid_prefix="li",
        )
    ).cases[0]
    client, token = await signed_in_client(console, "reviewer")
    async with (
        client,
        client.post(
            console.url(f"/api/v1/review/cases/{open_case.id}/category"),
            json={"categories": ["account_custody"], "comment": "改"},
            headers={"X-CSRF-Token": token},
        ) as r,
    ):
        assert r.status == 409 and (await r.json())["error"]["code"] == "not_confirmed"


async def test_the_labelled_export_uses_the_correction(console: Console, tmp_path: Path) -> None:
    case = await _confirmed_case(console)
    # Corrected a week after the decision: an export of that week carries the case again.
    with time_machine.travel(seed.T0 + timedelta(days=7), tick=False):
        await review.do_correct_category(
            actor=CLI,
            source="test",
            case_id=case.id,
            categories=["misleading_promotion"],
            comment="夸大宣传，非保本承诺",
            reach=None,
        )
    decided_week = await review.do_export_labels(
        actor=CLI, source="test", since=seed.T0, until=seed.T0 + timedelta(days=1)
    )
    corrected_week = await review.do_export_labels(
        actor=CLI, source="test", since=seed.T0 + timedelta(days=6), until=None
    )
    for lines in (decided_week, corrected_week):
        assert [line["violations"] for line in lines] == [[{"category": "misleading_promotion"}]]
    path = tmp_path / "labels.jsonl"
    path.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in corrected_week), "utf-8"
    )
    assert check_labels(path)[0] == []
