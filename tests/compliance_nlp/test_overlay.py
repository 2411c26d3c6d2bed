"""An institution's overlay over the shipped rules: its terms, exceptions, segment packs and
rewordings; suggestions on findings; a pool whose worker processes follow the overlay."""

from __future__ import annotations

import pickle

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig
from compliance_nlp.overlay import Overlay, OverlayError, apply_overlay, check_overlay
from compliance_nlp.pool import AnalyzerPool
from compliance_nlp.rules import load_ruleset

PRODUCT_LINE = "稳赢增利1号今天开放申购，欢迎了解"


def overlay(version: str = "1", **parts: object) -> Overlay:
    return Overlay.from_data(version, {"format": 1, **parts})


def rule_ids(analyzer: Analyzer, text: str) -> list[str]:
    return [f.rule_id for f in analyzer.analyze(text, "advisor").violations if f.source == "rule"]


def test_a_shipped_finding_carries_its_compliant_rewording(analyzer: Analyzer) -> None:
    found = analyzer.analyze("这款产品保本", "advisor").violations
    assert [(f.rule_id, f.suggestion) for f in found] == [
        ("GR-001", "本产品不保本，过往业绩不代表未来表现")
    ]
    assert found[0].to_dict()["suggestion"] == "本产品不保本，过往业绩不代表未来表现"
    # By rule when the term has none of its own.
    promise = analyzer.analyze("这个产品稳赚", "advisor").violations
    assert promise and all(f.suggestion for f in promise)


def test_an_exception_spares_the_phrase_and_only_the_phrase(analyzer: Analyzer) -> None:
    assert rule_ids(analyzer, PRODUCT_LINE) == ["GR-002"]
    spared = analyzer.with_overlay(
        overlay(exceptions=[{"id": "EXC-1", "phrase": "穩贏 增利", "categories": []}])
    )
    assert spared.analyze(PRODUCT_LINE, "advisor").violations == ()
    # The term outside the product name is still a promise.
    assert rule_ids(spared, "稳赢增利1号开放了，这款稳赢") == ["GR-002"]
    # The shipped analyzer is untouched.
    assert rule_ids(analyzer, PRODUCT_LINE) == ["GR-002"]


def test_an_exception_of_another_category_spares_nothing(analyzer: Analyzer) -> None:
    other = analyzer.with_overlay(
        overlay(exceptions=[{"id": "EXC-1", "phrase": "稳赢增利", "categories": ["insider_tip"]}])
    )
    assert rule_ids(other, PRODUCT_LINE) == ["GR-002"]


def test_the_model_reads_the_line_without_exception_phrases(analyzer: Analyzer) -> None:
    from compliance_nlp.normalize import normalize

    spared = analyzer.with_overlay(overlay(exceptions=[{"id": "E", "phrase": "稳赢增利"}]))
    assert spared._model_text(normalize("买稳 赢增利吧")) == "买吧"
    assert analyzer._model_text(normalize("买稳赢增利吧")) == "买稳赢增利吧"
    # A model finding still spans the line as written.
    line = "稳赢增利保证收益，到期连本带息拿回"
    for f in spared.analyze(line, "advisor").violations:
        assert line[f.start : f.end] == f.evidence


def test_an_institution_term_is_a_rule_with_its_basis_and_suggestion(analyzer: Analyzer) -> None:
    inst = analyzer.with_overlay(
        overlay(
            "7",
            bases={"INST_B1": "《本行理财销售管理办法》第十二条：不得使用“躺赢宝”等宣传用语"},
            terms=[
                {
                    "id": "INST-1",
                    "term": "躺赢宝",
                    "category": "misleading_promotion",
                    "basis": "INST_B1",
                    "suggestion": "请使用产品的正式名称",
                }
            ],
        )
    )
    found = [f for f in inst.analyze("这个躺赢宝不错", "advisor").violations if f.source == "rule"]
    assert [(f.rule_id, f.evidence, f.suggestion) for f in found if f.rule_id == "INST-1"] == [
        ("INST-1", "躺赢宝", "请使用产品的正式名称")
    ]
    assert "本行理财销售管理办法" in next(f.basis for f in found if f.rule_id == "INST-1")
    # The clause checks of the shipped rules apply: a question is not a claim.
    assert "INST-1" not in rule_ids(inst, "您说的躺赢宝是什么？")
    assert "overlay 7" in inst.model_version and "overlay" not in analyzer.model_version


def test_segment_packs_apply_only_to_the_segments_the_institution_runs(
    analyzer: Analyzer,
) -> None:
    terms = [
        {
            "id": "INS-1",
            "term": "停售前最后一天",
            "category": "misleading_promotion",
            "basis": "BXF_116",
            "segment": "insurance",
        }
    ]
    line = "这款年金险停售前最后一天了"
    bank = analyzer.with_overlay(overlay(segments=["bank"], terms=terms))
    insurer = analyzer.with_overlay(overlay(segments=["insurance"], terms=terms))
    assert "INS-1" not in rule_ids(bank, line)
    assert "INS-1" in rule_ids(insurer, line)


def test_overlay_suggestions_override_the_shipped_ones(analyzer: Analyzer) -> None:
    mine = analyzer.with_overlay(
        overlay(suggestions={"by_term": {"保本": "本行理财产品均不保本，请以说明书为准"}})
    )
    found = mine.analyze("这款产品保本", "advisor").violations
    assert [f.suggestion for f in found] == ["本行理财产品均不保本，请以说明书为准"]


def test_a_malformed_overlay_lists_every_problem_and_changes_nothing(analyzer: Analyzer) -> None:
    base = load_ruleset()
    data = {
        "format": 1,
        "segments": ["bank", "crypto"],
        "terms": [
            {"id": "GR-001", "term": "x", "category": "guaranteed_return", "basis": "ZGXG_19"},
            {"id": "I-2", "term": "  ", "category": "nonsense", "basis": "NOPE"},
        ],
        "exceptions": [{"phrase": ""}],
    }
    problems = check_overlay(data, base)
    assert any("crypto" in p for p in problems)
    assert any("GR-001" in p and "already" in p for p in problems)
    assert any("terms[1]: term is empty" in p for p in problems)
    assert any("nonsense" in p for p in problems) and any("NOPE" in p for p in problems)
    assert any("exceptions[0]: phrase is empty" in p for p in problems)
    with pytest.raises(OverlayError) as raised:
        apply_overlay(base, Overlay.from_data("bad", data))
    assert raised.value.problems == problems
    # Raised in a pool worker, it comes back whole.
    again = pickle.loads(pickle.dumps(raised.value))
    assert again.problems == problems
    assert check_overlay({"format": 1}, base) == []


def test_an_overlay_key_changes_with_its_content() -> None:
    a = overlay("3", exceptions=[{"id": "E", "phrase": "甲"}])
    b = overlay("3", exceptions=[{"id": "E", "phrase": "乙"}])
    assert a.key != b.key and a.key == overlay("3", exceptions=[{"id": "E", "phrase": "甲"}]).key


async def test_pool_workers_follow_the_overlay_and_a_call_may_name_another() -> None:
    """Worker processes get the overlay with each batch: no restart, no process addressed."""
    pool = AnalyzerPool(AnalyzerConfig(use_model=False), processes=1)
    await pool.start()
    try:
        (before,) = await pool.analyze_many([(PRODUCT_LINE, "advisor")])
        assert [f.rule_id for f in before.violations] == ["GR-002"]
        spared = overlay("2", exceptions=[{"id": "E", "phrase": "稳赢增利"}])
        pool.set_overlay(spared)
        (after,) = await pool.analyze_many([(PRODUCT_LINE, "advisor")])
        assert after.violations == ()
        assert "overlay 2" in after.model_version
        # A dry run names the overlay it wants (here: none) without touching the current.
        (shipped,) = await pool.analyze_many([(PRODUCT_LINE, "advisor")], overlay=None)
        assert [f.rule_id for f in shipped.violations] == ["GR-002"]
        (still,) = await pool.analyze_many([(PRODUCT_LINE, "advisor")])
        assert still.violations == ()
        bad = Overlay.from_data("9", {"format": 1, "terms": [{"id": "X"}]})
        with pytest.raises(OverlayError):
            await pool.analyze_many([(PRODUCT_LINE, "advisor")], overlay=bad)
    finally:
        await pool.close()
