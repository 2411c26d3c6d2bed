"""The lexicon compliance owns: draft edits (checked, audited), the dry run over the labelled
sets (or stored messages when they are absent), publishing only what was dry-run, the
check answering under the new version at once, versions with a diff and roll-back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from admin.flows import FieldError
from admin.lexicon import dryrun, service
from admin.lexicon import flows as lexicon
from bot import rules_overlay
from bot.models import Message
from compliance_nlp import AnalyzerConfig
from compliance_nlp.normalize import normalize
from compliance_nlp.overlay import Overlay
from compliance_nlp.pool import AnalyzerPool
from core import audit
from core.audit import Actor, AuditFilter
from core.settings import Settings
from tests.admin.console import Console, make_operator, signed_in_client, start_console

REVIEWER = Actor("operator", "1", "li-compliance")
PRODUCT_LINE = "稳赢增利1号今天开放申购，欢迎了解"
_HASH = re.compile(r'name="draft_hash" value="([0-9a-f]+)"')


@pytest.fixture
async def pool() -> AsyncIterator[AnalyzerPool]:
    """The real analyzer with the shipped models, in this process (shares the loaded models)."""
    p = AnalyzerPool(AnalyzerConfig(), processes=0)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def lex_console(
    console_settings: Settings, pool: AnalyzerPool, redis_client: object, db: None
) -> AsyncIterator[Console]:
    c, closers = await start_console(console_settings, analyzer=pool)
    try:
        yield c
    finally:
        for close in closers:
            await close()


def term(text: str, **kw: Any) -> lexicon.EntryInput:
    values: dict[str, Any] = {
        "category": "misleading_promotion",
        "basis": "LCXS_25",
        "severity": "violation",
    }
    values.update(kw)
    return lexicon.EntryInput(kind="term", text=text, **values)


def exception(text: str, **kw: Any) -> lexicon.EntryInput:
    return lexicon.EntryInput(kind="exception", text=text, **kw)


async def lexicon_audit() -> list[audit.AuditRecord]:
    return await audit.entries(where=AuditFilter(action="lexicon."), limit=100)


# ------------------------------------------------------------------ the draft


async def test_bad_entries_are_refused_with_the_field_and_change_nothing(db: None) -> None:
    cases = [
        (term("稳赚宝", category="nonsense"), "category"),
        (term("   "), "text"),
        (term("稳赚宝", basis="NO_SUCH_BASIS"), "basis"),
        (term("稳赚宝", severity="fatal"), "severity"),
        (term("稳赚宝", segment="crypto"), "segment"),
        (term("稳" * 41), "text"),
        (exception("稳赢增利", categories=("not_a_category",)), "categories"),
        (lexicon.EntryInput(kind="basis", text="ZGXG_19", body="x"), "text"),
        (lexicon.EntryInput(kind="basis", text="1ABC", body="x"), "text"),
        (lexicon.EntryInput(kind="basis", text="INST_A", body=" "), "body"),
        (lexicon.EntryInput(kind="rewording", text="NO-RULE", body="改为…"), "text"),
        (lexicon.EntryInput(kind="nonsense"), "kind"),
    ]
    for data, field in cases:
        with pytest.raises(FieldError) as raised:
            await lexicon.do_add_entry(actor=REVIEWER, source="test", data=data)
        assert raised.value.field == field, data
    assert await service.entries() == []
    assert await lexicon_audit() == []


async def test_draft_edits_are_audited_and_pending_until_published(db: None) -> None:
    basis = await lexicon.do_add_entry(
        actor=REVIEWER,
        source="10.0.0.1",
        data=lexicon.EntryInput(
            kind="basis", text="inst_sales_12", body="《本行理财销售管理办法》第十二条"
        ),
    )
    assert basis.text == "INST_SALES_12" and basis.code.startswith("BAS-")
    added = await lexicon.do_add_entry(
        actor=REVIEWER,
        source="10.0.0.1",
        data=term("鑫享", basis="INST_SALES_12", suggestion="该系列已停售，请推介在售产品"),
    )
    assert added.code.startswith("INST-")
    with pytest.raises(FieldError) as dup:
        await lexicon.do_add_entry(actor=REVIEWER, source="t", data=term("鑫享"))
    assert dup.value.field == "text"
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("稳赢增利"))
    # A basis a term cites cannot go.
    with pytest.raises(FieldError):
        await lexicon.do_delete_entry(actor=REVIEWER, source="t", entry_id=basis.id)
    edited = await lexicon.do_update_entry(
        actor=REVIEWER,
        source="t",
        entry_id=added.id,
        data=term("鑫享", basis="INST_SALES_12", severity="review"),
    )
    assert edited.severity == "review" and edited.code == added.code

    changes = await lexicon.pending_changes()
    assert sorted((c.op, c.kind) for c in changes) == [
        ("added", "basis"),
        ("added", "exception"),
        ("added", "term"),
    ]
    actions = [(e.action, e.target, e.source) for e in reversed(await lexicon_audit())]
    assert actions[0] == ("lexicon.entry_add", f"lexicon_entry:{basis.code}", "10.0.0.1")
    assert ("lexicon.entry_edit", f"lexicon_entry:{added.code}", "t") in actions
    assert len(actions) == 4  # three adds and the edit; the refusals wrote nothing


async def test_segment_packs_are_switched_in_the_draft(db: None) -> None:
    await lexicon.do_set_segments(actor=REVIEWER, source="t", segments=["insurance", "bank"])
    rows = await lexicon.draft_snapshot()
    assert lexicon.build_document(rows)["segments"] == ["bank", "insurance"]
    with pytest.raises(FieldError):
        await lexicon.do_set_segments(actor=REVIEWER, source="t", segments=["crypto"])
    await lexicon.do_set_segments(actor=REVIEWER, source="t", segments=["bank"])
    assert lexicon.build_document(await lexicon.draft_snapshot())["segments"] == ["bank"]


# ------------------------------------------------------------------ the dry run


async def _dry_run(pool: AnalyzerPool, rows: list[dict[str, Any]]) -> dryrun.DryRun:
    draft = lexicon.overlay_of(rows, "draft")
    latest = await service.latest_version()
    published = Overlay(str(latest.number), latest.document) if latest else None
    return await dryrun.run(analyzer=pool, published=published, draft=draft)


async def test_dry_run_counts_findings_removed_on_lines_labelled_violations(
    db: None, pool: AnalyzerPool
) -> None:
    """Too broad an exception: the dry run shows it would hide labelled violations."""
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("稳赚"))
    result = await _dry_run(pool, await lexicon.draft_snapshot())
    assert result.dataset == "labelled" and result.note == ""
    assert "training/data" in result.dataset_label and result.lines_total > 5000
    assert result.phrases == ["稳赚"]
    assert 0 < result.lines_checked < 200  # only lines holding the phrase are re-run
    # The rules stop flagging 稳赚; where the model still reads a promise in the rest of
    # the line, its own finding takes the rule's place (counted as added).
    assert result.findings_removed > result.findings_added
    assert result.removed_on_violation > 0
    line = result.lines[0]
    assert re.match(r"(threads_)?dev\d*\.jsonl:\d+", line.where)
    # Matched as the rules read text: 穩賺 is 稳赚.
    assert "稳赚" in normalize(line.text).text and line.removed and line.labelled


async def test_dry_run_counts_findings_added_on_lines_labelled_clean(
    db: None, pool: AnalyzerPool
) -> None:
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=term("业绩比较基准"))
    result = await _dry_run(pool, await lexicon.draft_snapshot())
    assert result.findings_added > 0 and result.added_on_clean > 0
    added = [ln for ln in result.lines if ln.added]
    assert added and all("业绩比较基准" in ln.text for ln in added)
    assert any(b.rule_id.startswith("INST-") for ln in added for b in ln.added)


async def test_a_narrow_product_name_exception_changes_no_labelled_line(
    db: None, pool: AnalyzerPool
) -> None:
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("稳赢增利"))
    result = await _dry_run(pool, await lexicon.draft_snapshot())
    assert result.phrases == ["稳赢增利"]
    assert (result.findings_added, result.findings_removed, result.lines_changed) == (0, 0, 0)


async def test_without_the_labelled_sets_the_dry_run_reads_stored_messages(
    db: None, pool: AnalyzerPool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dryrun, "DATA_DIR", tmp_path / "not-installed")
    now = datetime.now(UTC)
    for i, (text, age) in enumerate(
        [
            (PRODUCT_LINE, timedelta(days=2)),
            ("稳赢增利2号下周三开放，额度有限", timedelta(days=40)),  # too old to be read
            ("好的，明天见", timedelta(hours=1)),
        ]
    ):
        await Message.create(
            msgid=f"m{i}",
            source="archive",
            direction="advisor_to_customer",
            sender_id="adv-zhao",
            sender_role="advisor",
            msgtime=now - age,
            msgtype="text",
            masked_text=text,
        )
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("稳赢增利"))
    result = await _dry_run(pool, await lexicon.draft_snapshot())
    assert result.dataset == "stored"
    assert "不含标注数据集" in result.note
    assert result.lines_total == 2 and result.lines_checked == 1
    assert result.findings_removed == 1 and result.removed_on_violation == 0
    assert result.lines[0].labelled is None and result.lines[0].text == PRODUCT_LINE
    assert result.lines[0].where.startswith("消息 #")


# ------------------------------------------------------------------ publishing


async def test_publish_needs_the_dry_run_of_this_very_draft(db: None, pool: AnalyzerPool) -> None:
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("稳赢增利"))
    rows = await lexicon.draft_snapshot()
    effect = (await _dry_run(pool, rows)).to_json()
    h = lexicon.snapshot_hash(rows)
    with pytest.raises(FieldError):  # no dry run
        await lexicon.do_publish(
            actor=REVIEWER,
            source="t",
            reason="本行产品名",
            draft_hash=h,
            effect=None,
            analyzer=pool,
        )
    await lexicon.do_add_entry(actor=REVIEWER, source="t", data=exception("鑫享"))
    with pytest.raises(FieldError):  # the draft changed after its dry run
        await lexicon.do_publish(
            actor=REVIEWER,
            source="t",
            reason="本行产品名",
            draft_hash=h,
            effect=effect,
            analyzer=pool,
        )
    rows = await lexicon.draft_snapshot()
    h = lexicon.snapshot_hash(rows)
    effect = (await _dry_run(pool, rows)).to_json()
    with pytest.raises(FieldError) as no_reason:
        await lexicon.do_publish(
            actor=REVIEWER, source="t", reason=" ", draft_hash=h, effect=effect, analyzer=pool
        )
    assert no_reason.value.field == "reason"
    assert await service.latest_version() is None and await rules_overlay.active_overlay() is None

    published = await lexicon.do_publish(
        actor=REVIEWER,
        source="t",
        reason="本行产品名不是承诺",
        draft_hash=h,
        effect=effect,
        analyzer=pool,
    )
    assert published.version.number == 1 and len(published.changes) == 2
    active = await rules_overlay.active_overlay()
    assert active is not None and active.overlay.version == "1"
    assert active.overlay.document == published.version.document
    entry = (await audit.entries(where=AuditFilter(action="lexicon.publish"), limit=5))[0]
    assert entry.target == "lexicon_version:1"
    assert entry.detail_dict["reason"] == "本行产品名不是承诺"
    # Nothing left to publish.
    with pytest.raises(FieldError):
        await lexicon.do_publish(
            actor=REVIEWER,
            source="t",
            reason="再来一次",
            draft_hash=h,
            effect=effect,
            analyzer=pool,
        )


async def _check(client: Any, console: Console, token: str, text: str) -> list[str]:
    async with client.post(
        console.url("/api/v1/compliance/check"),
        json={"text": text, "role": "advisor"},
        headers={"X-CSRF-Token": token},
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    return [f["rule_id"] for f in body["violations"]]


async def _publish_through_the_console(
    client: Any, console: Console, token: str, reason: str
) -> str:
    async with client.post(
        console.url("/lexicon/dry-run"), data={"_csrf": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 200, await resp.text()
        page = await resp.text()
    assert "试运行结果" in page
    draft_hash = _HASH.search(page)
    assert draft_hash is not None
    async with client.post(
        console.url("/lexicon/publish"),
        data={"_csrf": token, "draft_hash": draft_hash.group(1), "reason": reason},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Location"]


async def test_a_published_exception_is_honoured_by_the_next_check_and_rolled_back(
    lex_console: Console,
) -> None:
    await make_operator("compliance", name="reviewer", display_name="李合规")
    client, token = await signed_in_client(lex_console, "reviewer")
    async with client:
        assert await _check(client, lex_console, token, PRODUCT_LINE) == ["GR-002"]
        async with client.post(
            lex_console.url("/lexicon/entries"),
            data={"_csrf": token, "kind": "exception", "text": "稳赢增利", "note": "本行产品名"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        # In the draft only: the check does not change yet.
        assert await _check(client, lex_console, token, PRODUCT_LINE) == ["GR-002"]
        location = await _publish_through_the_console(client, lex_console, token, "本行产品名")
        assert location.startswith("/lexicon/versions/1?published=1")
        assert await _check(client, lex_console, token, PRODUCT_LINE) == []
        assert await _check(client, lex_console, token, "这款稳赢，放心买") == ["GR-002"]

        # v2 drops the exception; the check flags again.
        entry = (await service.entries())[0]
        async with client.post(
            lex_console.url(f"/lexicon/entries/{entry.id}/delete"),
            data={"_csrf": token},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        await _publish_through_the_console(client, lex_console, token, "产品已更名，取消例外")
        assert await _check(client, lex_console, token, PRODUCT_LINE) == ["GR-002"]

        # Roll back to v1: a new version (v3) with v1's entries, the draft follows.
        async with client.post(
            lex_console.url("/lexicon/versions/1/rollback"),
            data={"_csrf": token, "reason": "更名推迟，恢复例外"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            assert resp.headers["Location"].startswith("/lexicon/versions/3")
        assert await _check(client, lex_console, token, PRODUCT_LINE) == []
        v3 = await service.version(number=3)
        assert v3 is not None and v3.rollback_of == 1 and v3.reason == "更名推迟，恢复例外"
        assert [e.text for e in await service.entries()] == ["稳赢增利"]
        assert (await service.entries())[0].code == entry.code  # codes survive roll-backs

        # The version page shows the diff against its predecessor.
        async with client.get(lex_console.url("/lexicon/versions/2")) as resp:
            page = await resp.text()
        assert "删除" in page and "稳赢增利" in page and "产品已更名，取消例外" in page
        async with client.get(lex_console.url("/api/v1/lexicon")) as resp:
            body = await resp.json()
        assert body["version"]["number"] == 3 and body["version"]["rollback_of"] == 1
        assert body["overlay"]["exceptions"][0]["phrase"] == "稳赢增利"
        assert body["pending_changes"] == 0
        async with client.get(lex_console.url("/api/v1/lexicon/versions")) as resp:
            listed = await resp.json()
        assert [v["number"] for v in listed["items"]] == [3, 2, 1] and listed["total"] == 3
    rollback = await audit.entries(where=AuditFilter(action="lexicon.rollback"), limit=5)
    assert [e.target for e in rollback] == ["lexicon_version:3"]


async def test_the_console_refuses_a_bad_entry_with_its_field(lex_console: Console) -> None:
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(lex_console, "reviewer")
    async with client:
        async with client.post(
            lex_console.url("/lexicon/entries"),
            data={
                "_csrf": token,
                "kind": "term",
                "text": "稳赚宝",
                "category": "guaranteed_return",
            },
        ) as resp:
            assert resp.status == 422
            page = await resp.text()
    assert "请选择监管依据" in page and 'id="err-basis"' in page
    assert await service.entries() == []


async def test_marketing_reads_the_lexicon_but_cannot_change_it(lex_console: Console) -> None:
    await make_operator("marketing", name="ops")
    client, token = await signed_in_client(lex_console, "ops")
    async with client:
        async with client.get(lex_console.url("/lexicon")) as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "加入草稿" not in page
        async with client.post(
            lex_console.url("/lexicon/entries"),
            data={"_csrf": token, "kind": "exception", "text": "稳赢增利"},
        ) as resp:
            assert resp.status == 403
    assert await service.entries() == []


async def test_a_segment_pack_applies_only_once_switched_on(db: None, pool: AnalyzerPool) -> None:
    added = await lexicon.do_import_pack(actor=REVIEWER, source="t", segment="insurance")
    assert added == len(lexicon.starter_packs()["insurance"]) > 0
    rows = await lexicon.draft_snapshot()
    assert {r["segment"] for r in rows} == {"insurance"} and all(r["basis"] for r in rows)
    assert await lexicon.do_import_pack(actor=REVIEWER, source="t", segment="insurance") == 0
    # Imported but the pack is off: nothing any line would see.
    off = await _dry_run(pool, rows)
    assert off.phrases == [] and off.lines_checked == 0
    await lexicon.do_set_segments(actor=REVIEWER, source="t", segments=["insurance"])
    on = await _dry_run(pool, await lexicon.draft_snapshot())
    assert "保险就是储蓄" in on.phrases
    analyzer = pool
    overlay = lexicon.overlay_of(await lexicon.draft_snapshot(), "draft")
    (found,) = await analyzer.analyze_many(
        [("保险就是储蓄，比存银行划算", "advisor")], overlay=overlay
    )
    inst = [f for f in found.violations if f.rule_id.startswith("INST-")]
    assert inst and inst[0].suggestion == "保险以保障为主，不是存款，退保可能有损失"
    imports = await audit.entries(where=AuditFilter(action="lexicon.import_pack"), limit=5)
    assert [e.detail_dict["added"] for e in imports] == [0, added]
