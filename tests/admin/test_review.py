"""The compliance review queue: filters and counts, reach by role, the case page with its
highlighted span and context, assign / decide / bulk / unmask with their audit entries,
and the labelled export checked by compliance_nlp's own label checker."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import time_machine

from admin import review
from admin.models import Operator
from bot import models as bot_models
from compliance_nlp.training.labels import check_labels
from core import audit
from core.appkit import KEYRING
from tests.admin import review_seed as seed
from tests.admin.console import CLI, Console, make_operator, signed_in_client

PROMISE = "您放心，这个产品保本保收益，年化5%稳赚，有事打我13812345678"
OFF_BOOK = "钱直接转我卡上就行，不用走系统"


async def _seed_two_advisors(console: Console) -> dict[str, Any]:
    keyring = console.app[KEYRING]
    lead = await seed.advisor("lead-qian", "钱主管", department="财富一部")
    zhao = await seed.advisor("adv-zhao", "赵经理", department="财富一部", manager=lead.userid)
    sun = await seed.advisor("adv-sun", "孙经理", department="财富二部")
    c1 = await seed.customer("wmCust0001", "周先生")
    c2 = await seed.customer("wmCust0002", "吴女士")
    first = await seed.conversation(
        keyring=keyring,
        advisor_row=zhao,
        customer_row=c1,
        turns=[
            ("customer", "到期本金能拿回来吧？我不想亏"),
            ("advisor", PROMISE),
            ("customer", "好的，那我考虑一下"),
        ],
        msgid_prefix="zhao",
    )
    second = await seed.conversation(
        keyring=keyring,
        advisor_row=sun,
        customer_row=c2,
        turns=[("customer", "怎么买比较方便"), ("advisor", OFF_BOOK)],
        start=seed.T0 + timedelta(days=1),
        msgid_prefix="sun",
    )
    assert len(first.cases) == 1 and len(second.cases) == 1
    return {"zhao": first, "sun": second}


async def _page(client: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with client.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


async def _post(
    client: aiohttp.ClientSession, url: str, token: str, data: dict[str, Any] | list[Any]
) -> tuple[int, str, str]:
    form = data if isinstance(data, list) else list(data.items())
    async with client.post(url, data=[("_csrf", token), *form], allow_redirects=False) as r:
        return r.status, await r.text(), r.headers.get("Location", "")


def _case_ids_in(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'href="/review/(\d+)\?', html)]


@time_machine.travel(seed.T0 + timedelta(days=4), tick=False)
async def test_queue_filters_counts_and_oldest_first(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    zhao_case, sun_case = seeded["zhao"].cases[0], seeded["sun"].cases[0]
    await make_operator("compliance", name="reviewer")
    client, _token = await signed_in_client(console, "reviewer")
    async with client:
        status, html = await _page(client, console.url("/review"))
        assert status == 200
        assert _case_ids_in(html) == [zhao_case.id, sun_case.id]  # oldest first
        # Counts per filter value, and the age against the SLA (4 days: breached).
        assert "承诺保本保收益（1）" in html and "飞单/私下交易（1）" in html
        assert '<span class="tag bad">3天23小时</span>' in html
        # The team filter: the advisors whose direct leader is 钱主管.
        assert "钱主管 团队（1）" in html
        status, html = await _page(client, console.url("/review?category=off_book_dealing"))
        assert _case_ids_in(html) == [sun_case.id]
        status, html = await _page(client, console.url("/review?team=lead-qian"))
        assert _case_ids_in(html) == [zhao_case.id]
        status, html = await _page(client, console.url("/review?advisor=adv-sun"))
        assert _case_ids_in(html) == [sun_case.id]
        status, html = await _page(client, console.url("/review?since=2026-12-01"))
        assert _case_ids_in(html) == [sun_case.id]
        status, html = await _page(client, console.url("/review?severity=review"))
        assert _case_ids_in(html) == []
        # A bad filter: a field message, the filter left out, nothing hidden.
        status, html = await _page(client, console.url("/review?since=yesterday"))
        assert status == 422 and "日期格式应为 YYYY-MM-DD" in html


async def test_queue_pages_fifty_at_a_time(console: Console) -> None:
    keyring = console.app[KEYRING]
    a = await seed.advisor("adv-li", "李经理")
    turns = [("advisor", f"第{i}期产品保本保收益，稳赚不赔") for i in range(51)]
    c = await seed.customer("wmCust0100", "郑先生")
    await seed.conversation(keyring=keyring, advisor_row=a, customer_row=c, turns=turns)
    await make_operator("compliance", name="reviewer")
    client, _ = await signed_in_client(console, "reviewer")
    async with client:
        _, html = await _page(client, console.url("/review"))
        assert len(_case_ids_in(html)) == 50 and "共 51 件" in html and 'id="next-page"' in html
        _, html = await _page(client, console.url("/review?page=2"))
        assert len(_case_ids_in(html)) == 1


async def test_advisor_and_team_lead_see_only_their_reach(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    zhao_case, sun_case = seeded["zhao"].cases[0], seeded["sun"].cases[0]
    for role, name, userid in (
        ("advisor", "zhao", "adv-zhao"),
        ("team_lead", "qian", "lead-qian"),
        ("advisor", "nobody", None),
    ):
        op = await make_operator(role, name=name)
        await Operator.filter(id=op.id).update(wecom_userid=userid)
    for name, visible in (("zhao", [zhao_case.id]), ("qian", [zhao_case.id]), ("nobody", [])):
        client, _ = await signed_in_client(console, name)
        async with client:
            _, html = await _page(client, console.url("/review?status=all"))
            assert _case_ids_in(html) == visible, name
            assert 'name="case_ids"' not in html  # no bulk form without review:decide
            # Someone else's case answers as a missing one would.
            status, _ = await _page(client, console.url(f"/review/{sun_case.id}"))
            assert status == 404
            status, html = await _page(client, console.url(f"/review/{zhao_case.id}"))
            assert status == (200 if visible else 404)
            if visible:
                assert 'id="decide-form"' not in html and 'id="unmask"' not in html


async def test_case_page_highlights_the_span_in_the_masked_conversation(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    await make_operator("compliance", name="reviewer")
    client, _ = await signed_in_client(console, "reviewer")
    async with client:
        status, html = await _page(client, console.url(f"/review/{case.id}"))
    assert status == 200
    assert '<mark class="hl-violation" title="承诺保本保收益">保本保收益</mark>' in html
    assert '<mark class="hl-violation" title="承诺保本保收益">稳赚</mark>' in html
    # Both sides, before and after, masked: the phone number is never on the page.
    assert "到期本金能拿回来吧？我不想亏" in html and "好的，那我考虑一下" in html
    assert "138****5678" in html and "13812345678" not in html
    assert "资管新规" in html and "GR-001" in html and "规则" in html
    assert "赵经理" in html and "周先生" in html and "钱主管" in html


async def test_a_finding_decided_by_the_context_shows_the_customer_turn(console: Console) -> None:
    """「是的👌」 is a promise only after 「本金能拿回来吧？」: that turn is highlighted."""
    keyring = console.app[KEYRING]
    a = await seed.advisor("adv-zhou", "周经理")
    c = await seed.customer("wmCust0200", "王女士")
    finding = {
        "category": "guaranteed_return",
        "severity": "violation",
        "start": 0,
        "end": 2,
        "evidence": "是的",
        "rule_id": "model",
        "source": "model",
        "basis": "资管新规第十九条",
        "score": 0.93,
        "context_index": 1,
        "context_evidence": "本金能拿回来吧",
    }
    seeded = await seed.conversation(
        keyring=keyring,
        advisor_row=a,
        customer_row=c,
        turns=[
            ("advisor", "您好，产品下周到期"),
            ("customer", "到期本金能拿回来吧？"),
            ("advisor", "是的👌"),
        ],
        analysis_override={2: {"violations": [finding]}},
    )
    await make_operator("compliance", name="reviewer")
    client, _ = await signed_in_client(console, "reviewer")
    async with client:
        _, html = await _page(client, console.url(f"/review/{seeded.cases[0].id}"))
    context_id = seeded.messages[1].id
    turn = html[html.index(f'id="msg-{context_id}"') :]
    turn = turn[: turn.index("</li>")]
    assert '<mark class="hl-context" title="语境：承诺保本保收益">本金能拿回来吧</mark>' in turn
    assert "判定依据的语境" in turn
    assert '<mark class="hl-violation" title="承诺保本保收益">是的</mark>👌' in html
    assert f'href="#msg-{context_id}"' in html and "0.93" in html


def test_finding_range_maps_offsets_and_falls_back_to_the_evidence() -> None:
    masked = "您好，加我微信，邮箱a***@x.cn，保本保收益"
    # Offsets of the original (the e-mail was 'abc@x.cn', 8 chars; masked 9): shifted.
    finding = {"start": 19, "end": 24, "evidence": "保本保收益"}
    pii = [{"type": "email", "start": 10, "end": 18}]
    assert review.finding_range(masked, finding, pii) == (20, 25)
    # Offsets that still hold (digits masked one for one) are used as they are, widened
    # to the whole number they touch, as the evidence was.
    masked = "打我138****5678保证收益"
    finding = {"start": 2, "end": 9, "evidence": "138****5678"}
    assert review.finding_range(masked, finding, [{"type": "phone", "start": 2, "end": 13}]) == (
        2,
        13,
    )
    assert review.finding_range("没有这句", {"start": 0, "end": 2, "evidence": "稳赚"}, []) is None


def test_segments_merge_overlapping_marks() -> None:
    out = review.segments("保本保收益稳赚", [(0, 5, "a", "甲"), (3, 7, "a", "乙")])
    assert out == [("保本保收益稳赚", "a", "甲；乙")]
    assert review.segments("abc", [(1, 2, "x", "")]) == [
        ("a", "", ""),
        ("b", "x", ""),
        ("c", "", ""),
    ]


async def _audit_for(case_id: int) -> list[audit.AuditRecord]:
    return await audit.entries(where=audit.AuditFilter(target=f"review_case:{case_id}"), limit=50)


async def test_decide_needs_a_comment_and_is_audited_once(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    await make_operator("compliance", name="reviewer", display_name="李合规")
    client, token = await signed_in_client(console, "reviewer")
    url = console.url(f"/review/{case.id}/decide")
    async with client:
        status, html, _ = await _post(client, url, token, {"decision": "confirmed", "comment": " "})
        assert status == 422 and "请填写审核意见" in html
        status, html, _ = await _post(client, url, token, {"decision": "maybe", "comment": "x"})
        assert status == 422 and "请选择审核结论" in html
        row = await bot_models.ReviewCase.get(id=case.id)
        assert row.status == "open" and await _audit_for(case.id) == []

        comment = "承诺保本，已约谈。客户电话13812345678"
        status, _, location = await _post(
            client, url, token, {"decision": "confirmed", "comment": comment}
        )
        assert status == 303 and location.endswith(f"/review/{case.id}?decided=confirmed")
        row = await bot_models.ReviewCase.get(id=case.id)
        assert row.status == "confirmed" and row.decided_by == "reviewer"
        # Personal numbers in a comment are masked at rest and in the log.
        assert "13812345678" not in row.decision_comment and "138****5678" in row.decision_comment
        entries = await _audit_for(case.id)
        assert [(e.action, e.actor_name, e.result) for e in entries] == [
            ("review.decide", "reviewer", "ok")
        ]
        assert (
            '"decision":"confirmed"' in entries[0].detail and "13812345678" not in entries[0].detail
        )

        # A final decision is not overwritten, and nothing more is logged.
        status, html, _ = await _post(
            client, url, token, {"decision": "false_positive", "comment": "改判"}
        )
        assert status == 409 and "已有最终结论" in html
        assert (await bot_models.ReviewCase.get(id=case.id)).status == "confirmed"
        assert len(await _audit_for(case.id)) == 1
        # The case page shows the decision and its audit entry.
        _, html = await _page(client, console.url(f"/review/{case.id}"))
        assert "确认违规" in html and "审核结论" in html and 'id="decide-form"' not in html
    assert (await audit.verify()).ok


async def test_assign_only_to_an_active_compliance_reviewer(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    me = await make_operator("compliance", name="reviewer")
    other = await make_operator("compliance", name="reviewer-2", display_name="吴合规")
    marketing = await make_operator("marketing", name="ops")
    client, token = await signed_in_client(console, me.name)
    url = console.url(f"/review/{case.id}/assign")
    async with client:
        status, html, _ = await _post(client, url, token, {"assignee": str(marketing.id)})
        assert status == 422 and "只能分派给在职的合规人员" in html
        status, _, _ = await _post(client, url, token, {"assignee": str(other.id)})
        assert status == 303
    row = await bot_models.ReviewCase.get(id=case.id)
    assert row.assignee_id == other.id and row.assignee_name == "吴合规"
    entries = await _audit_for(case.id)
    assert [e.action for e in entries] == ["review.assign"]
    assert f'"assignee":"operator:{other.id}"' in entries[0].detail


async def test_unmask_shows_the_original_once_with_the_reason_audited(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    url = console.url(f"/review/{case.id}/unmask")
    async with client:
        status, html, _ = await _post(client, url, token, {"reason": "看"})
        assert status == 422 and "请说明查看原文的理由" in html and "13812345678" not in html
        assert await _audit_for(case.id) == []
        async with client.post(url, data={"_csrf": token, "reason": "核实号码是否为客户本人"}) as r:
            html = await r.text()
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        assert PROMISE in html
        # The next view is masked again.
        _, html = await _page(client, console.url(f"/review/{case.id}"))
        assert "13812345678" not in html
    entries = await _audit_for(case.id)
    assert [(e.action, e.result) for e in entries] == [("review.unmask", "ok")]
    assert "核实号码是否为客户本人" in entries[0].detail


async def test_bulk_decides_the_selected_cases_with_one_entry_each(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    ids = [seeded["zhao"].cases[0].id, seeded["sun"].cases[0].id]
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    url = console.url("/review/bulk")
    async with client:
        form = [("case_ids", str(i)) for i in ids]
        status, html, _ = await _post(
            client, url, token, [*form, ("decision", "false_positive"), ("comment", "")]
        )
        assert status == 422 and "请填写审核意见" in html
        assert {c.status for c in await bot_models.ReviewCase.filter(id__in=ids)} == {"open"}
        status, html, _ = await _post(
            client, url, token, [("decision", "false_positive"), ("comment", "重复")]
        )
        assert status == 422 and "请勾选要批量处理的案件" in html
        status, _, location = await _post(
            client,
            url,
            token,
            [*form, ("decision", "false_positive"), ("comment", "同一句话重复标记，非违规")],
        )
        assert status == 303 and "decided=2" in location and "skipped=0" in location
        _, html = await _page(client, console.url(location.removeprefix(console.base)))
        assert "已批量处理 2 件" in html
    assert {c.status for c in await bot_models.ReviewCase.filter(id__in=ids)} == {"false_positive"}
    for i in ids:
        assert [e.action for e in await _audit_for(i)] == ["review.decide"]


async def test_export_labels_is_what_the_label_checker_accepts(
    console: Console, tmp_path: Path
) -> None:
    seeded = await _seed_two_advisors(console)
    zhao, sun = seeded["zhao"].cases[0], seeded["sun"].cases[0]
    still_open = await seed.conversation(
        keyring=console.app[KEYRING],
        advisor_row=await seed.advisor("adv-he", "何经理"),
        customer_row=await seed.customer("wmCust0300", "冯先生"),
        turns=[("advisor", "这只股票明天肯定涨停，内部消息")],
        msgid_prefix="he",
    )
    actor = CLI
    with time_machine.travel(seed.T0 + timedelta(days=2), tick=False):
        await review.do_decide_cases(
            actor=actor,
            source="test",
            case_ids=[zhao.id],
            decision="confirmed",
            comment="承诺保本",
            reach=None,
        )
        await review.do_decide_cases(
            actor=actor,
            source="test",
            case_ids=[sun.id],
            decision="false_positive",
            comment="误报",
            reach=None,
        )
    lines = await review.do_export_labels(
        actor=actor, source="test", since=seed.T0, until=seed.T0 + timedelta(days=3)
    )
    assert [line["review"]["case"] for line in lines] == [zhao.id, sun.id]
    assert still_open.cases[0].id not in {line["review"]["case"] for line in lines}
    first, second = lines
    assert first["violations"] == [{"category": "guaranteed_return"}]
    assert second["violations"] == []
    assert first["context"] == [{"role": "customer", "text": "到期本金能拿回来吧？我不想亏"}]
    # Masked text only: the original number never leaves the sealed column.
    assert "138****5678" in first["text"]
    path = tmp_path / "review.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    assert "13812345678" not in path.read_text("utf-8")
    errors, counts = check_labels(path)
    assert errors == []
    assert counts["advisor:violating"] == 1 and counts["advisor:clean"] == 1
    # Outside the window: nothing; and every export is audited.
    assert (
        await review.do_export_labels(
            actor=actor, source="test", since=seed.T0 + timedelta(days=3), until=None
        )
        == []
    )
    exports = await audit.entries(where=audit.AuditFilter(action="review.export_labels"))
    assert [json.loads(e.detail)["lines"] for e in exports] == [0, 2]


@pytest.mark.parametrize(
    "argv", [["--since", "2026-13-01"], ["--since", "2026-12-02", "--until", "2026-12-01"]]
)
def test_export_labels_cli_refuses_bad_dates(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from core.domain import CliContext
    from core.settings import Settings
    from siyu import cli as siyu_cli
    from tests.conftest import SCHEMA

    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=f"sqlite://{tmp_path}/x.db")
    ctx = CliContext(settings_factory=lambda: settings, schema=SCHEMA)
    try:
        code = siyu_cli.main(["review", "export-labels", *argv], ctx=ctx)
    except SystemExit as exc:  # argparse's own refusal
        code = int(exc.code or 0)
    assert code == 2
    assert not (tmp_path / "x.db").exists()  # refused before the database is opened


async def test_an_escalated_case_is_decided_later(console: Console) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    url = console.url(f"/review/{case.id}/decide")
    async with client:
        status, _, _ = await _post(
            client, url, token, {"decision": "escalated", "comment": "涉及多名客户，提交合规负责人"}
        )
        assert status == 303
        _, html = await _page(client, console.url("/review"))  # still on the work list
        assert case.id in _case_ids_in(html) and "已升级" in html
        status, _, _ = await _post(
            client, url, token, {"decision": "confirmed", "comment": "负责人确认违规"}
        )
        assert status == 303
    assert (await bot_models.ReviewCase.get(id=case.id)).status == "confirmed"
    details = [json.loads(e.detail)["decision"] for e in await _audit_for(case.id)]
    assert details == ["confirmed", "escalated"]  # newest first


async def test_an_original_that_does_not_open_is_refused_and_the_attempt_audited(
    console: Console,
) -> None:
    seeded = await _seed_two_advisors(console)
    case = seeded["zhao"].cases[0]
    message = seeded["zhao"].messages[1]
    # Sealed for another message: its AAD binds it there, so it does not open here.
    other = seeded["sun"].messages[1]
    await bot_models.Message.filter(id=message.id).update(original_sealed=other.original_sealed)
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    async with client:
        status, html, _ = await _post(
            client, console.url(f"/review/{case.id}/unmask"), token, {"reason": "核实客户号码"}
        )
    assert status == 422 and "原文无法解密" in html
    entries = await _audit_for(case.id)
    assert [(e.action, e.result) for e in entries] == [("review.unmask", "failure")]


def test_export_labels_cli_writes_checked_jsonl(
    tmp_path: Path,
    fresh_database_url: str,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from core import db as core_db
    from core.crypto import load_keyring
    from core.domain import CliContext
    from siyu import cli as siyu_cli
    from tests.conftest import SCHEMA, make_settings

    settings = make_settings(tmp_path, database_url=fresh_database_url, redis_url=redis_url)
    ctx = CliContext(settings_factory=lambda: settings, schema=SCHEMA)
    assert siyu_cli.main(["migrate"], ctx=ctx) == 0

    async def prepare() -> int:
        async with core_db.db_lifespan(settings, SCHEMA):
            seeded = await seed.conversation(
                keyring=load_keyring(settings),
                advisor_row=await seed.advisor("adv-zhao", "赵经理"),
                customer_row=await seed.customer("wmCust0001", "周先生"),
                turns=[("customer", "收益有保证吗"), ("advisor", PROMISE)],
            )
            with time_machine.travel(seed.T0 + timedelta(hours=3), tick=False):
                await review.do_decide_cases(
                    actor=CLI,
                    source="test",
                    case_ids=[seeded.cases[0].id],
                    decision="confirmed",
                    comment="承诺保本",
                    reach=None,
                )
            return seeded.cases[0].id

    case_id = asyncio.run(prepare())
    capsys.readouterr()
    out = tmp_path / "labels.jsonl"
    argv = ["review", "export-labels", "--since", "2026-11-30", "--until", "2026-11-30"]
    assert siyu_cli.main([*argv, "--out", str(out)], ctx=ctx) == 0
    assert "exported 1 labelled lines (1 confirmed, 0 false positives)" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [r["review"]["case"] for r in rows] == [case_id]
    assert check_labels(out)[0] == []
    assert "13812345678" not in out.read_text("utf-8")
    # The next day's export has nothing of that day.
    assert siyu_cli.main(["review", "export-labels", "--since", "2026-12-01"], ctx=ctx) == 0
    assert capsys.readouterr().out == ""


async def test_the_demo_advisor_account_is_a_sandbox_advisor(
    settings: Any, redis_client: object, db: None, tmp_path: Path
) -> None:
    """Signing in to the demo as 客户经理 shows that advisor's own cases, not nothing."""
    from bot.sandbox.fake_api.seed import ADVISORS
    from siyu.demo import DEMO_ADVISOR_USERID, _seed_operators

    await _seed_operators(tmp_path, {"api_token": "t"})
    advisor = await Operator.get(name="advisor")
    assert advisor.wecom_userid == DEMO_ADVISOR_USERID
    assert DEMO_ADVISOR_USERID in {a[0] for a in ADVISORS}
    assert await review.reach_of(advisor) == frozenset({DEMO_ADVISOR_USERID})


def test_a_department_id_is_not_shown_as_a_department() -> None:
    assert review.department_label("2") == ""
    assert review.department_label("[2, 3]") == ""
    assert review.department_label("财富管理部") == "财富管理部"
