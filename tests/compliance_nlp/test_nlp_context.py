"""Conversation context and the evidence a model-only violation needs."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from pathlib import Path

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig, Finding
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.model import answered_turn, violation_input
from compliance_nlp.normalize import normalize
from compliance_nlp.types import InvalidInputError, Turn

Q_PRINCIPAL = "王经理，这款理财到期本金能拿回来吧？"


def _violations(analysis: object) -> set[str]:
    return {f.category for f in analysis.violations if f.severity == "violation"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "anchored"),
    [
        ("晚安", False),
        ("恭喜发财🧧", False),
        ("OK好的，马上到", False),
        ("路上注意安全，到了说一声", False),
        ("保本吗", True),
        ("年化4.5%", True),
        ("验证码发我一下", True),
        ("bao ben 的", True),  # pinyin written around a keyword
        ("nbxx 别外传", True),
        # everyday words that hold an anchor stand on no financial ground
        ("不好意思，我来晚了", False),
        ("钱先生中午好", False),
        ("第一次来网点吧", False),
        ("钱给我就行", True),
        ("意思意思，您懂的", True),
    ],
)
def test_domain_anchors(text: str, anchored: bool) -> None:
    assert DomainAnchors().anchored(normalize(text).text) is anchored


def _model_finding(category: str = "insider_tip", score: float = 0.91) -> Finding:
    return Finding(
        category=category,
        severity="review",
        start=0,
        end=2,
        evidence="晚安",
        rule_id="model:test",
        source="model",
        basis="",
        score=score,
    )


def test_a_model_only_violation_needs_financial_ground(analyzer: Analyzer) -> None:
    """The gate itself: the same saturated model score, with and without evidence."""
    kept = analyzer._combine([], [_model_finding()], "晚安", 0.0, anchored=True)
    assert [f.severity for f in kept] == ["violation"]
    assert analyzer._combine([], [_model_finding()], "晚安", 0.0, anchored=False) == []


def test_answered_turn_is_the_last_customer_turn_in_the_window() -> None:
    turns = [
        Turn("customer", "第一个问题"),
        Turn("advisor", "您说"),
        Turn("customer", "我电话13812345678，本金能拿回来吧"),
        Turn("advisor", "稍等"),
    ]
    index, text = answered_turn(turns, window=8) or (None, "")
    assert index == 2
    assert "13812345678" not in text and "本金能拿回来吧" in text
    assert answered_turn(turns, window=1) is None  # only the advisor's own last line
    assert answered_turn([], window=8) is None
    assert violation_input("是的", None) == "是的"
    assert violation_input("是的", "本金能拿回来吧") == "是的[SEP]本金能拿回来吧"


def test_context_is_validated(analyzer: Analyzer) -> None:
    with pytest.raises(InvalidInputError, match="contexts for"):
        analyzer.analyze_many([("好的", "advisor")], [None, None])
    with pytest.raises(InvalidInputError, match="context role"):
        Turn.parse({"role": "boss", "text": "x"})
    with pytest.raises(InvalidInputError, match="text"):
        Turn.parse({"role": "customer"})
    with pytest.raises(InvalidInputError):
        Turn.parse("not an object")


def test_rule_exemptions_read_the_question_the_line_answers() -> None:
    """「是保本的」 is a fact about a 大额存单 and a promise about a wealth product."""
    rules_only = Analyzer(AnalyzerConfig(use_model=False))
    deposit = [Turn("customer", "大额存单是保本的吧？")]
    product = [Turn("customer", "这个理财是保本的吧？")]
    assert not _violations(rules_only.analyze("对，是保本的", "advisor", context=deposit))
    assert "guaranteed_return" in _violations(
        rules_only.analyze("对，是保本的", "advisor", context=product)
    )


def test_a_short_answer_is_judged_by_its_question(analyzer: Analyzer) -> None:
    promised = analyzer.analyze("是的👌", "advisor", context=[Turn("customer", Q_PRINCIPAL)])
    assert _violations(promised) == {"guaranteed_return"}
    finding = next(f for f in promised.violations if f.severity == "violation")
    assert finding.context_index == 0 and finding.context_evidence
    assert "本金能拿回来" in finding.context_evidence
    service = analyzer.analyze("是的👌", "advisor", context=[Turn("customer", "明天能到账吗？")])
    assert not _violations(service)
    assert not _violations(analyzer.analyze("是的👌", "advisor"))


def test_a_line_that_breaks_the_rule_alone_names_no_context(analyzer: Analyzer) -> None:
    context = [Turn("customer", "最近怎么样")]
    alone = analyzer.analyze("这款保证年化5%，亏了我补给您", "advisor", context=context)
    assert "guaranteed_return" in _violations(alone)
    assert all(f.context_index is None for f in alone.violations)


def test_cli_analyze_reads_context(monkeypatch: pytest.MonkeyPatch) -> None:
    from compliance_nlp.cli import _cmd_analyze

    lines = [
        {
            "id": 1,
            "text": "是的👌",
            "role": "advisor",
            "context": [{"role": "customer", "text": Q_PRINCIPAL}],
        },
        {"id": 2, "text": "是的👌", "role": "advisor"},
        {"id": 3, "text": "是的", "role": "advisor", "context": "not a list"},
    ]
    stdin = io.StringIO("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    stdout = io.StringIO()
    args = Namespace(no_model=False, no_progress=True)
    assert _cmd_analyze(args, AnalyzerConfig, stdin, stdout) == 0
    out = [json.loads(x) for x in stdout.getvalue().splitlines()]
    assert {v["category"] for v in out[0]["violations"]} == {"guaranteed_return"}
    assert out[0]["violations"][0]["context_index"] == 0
    assert out[1]["violations"] == []
    assert out[2]["line"] == 3 and "context" in out[2]["error"]


def test_thread_labels_are_checked(tmp_path: Path) -> None:
    from compliance_nlp.training.labels import check_labels

    thread = {
        "id": "t-1",
        "turns": [
            {
                "role": "customer",
                "text": "保本吗",
                "intent": "product_inquiry",
                "sentiment": "neutral",
                "pii": [],
            },
            {
                "role": "advisor",
                "text": "是的",
                "violations": [{"category": "guaranteed_return", "because": 1}],
                "pii": [],
            },
        ],
    }
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(thread, ensure_ascii=False) + "\n" + json.dumps(thread) + "\n")
    errors, counts = check_labels(path)
    text = "\n".join(errors)
    assert "because must be null or an earlier turn" in text
    assert "duplicate thread" in text
    assert counts["threads"] == 2


class _KeywordFake:
    """Flags guaranteed_return on any line holding 保本, reading no context at all."""

    def analyze_many(self, items: list[tuple[str, str]], contexts: object = None) -> list[object]:
        from compliance_nlp.types import Analysis

        out = []
        for text, role in items:
            hit = "保本" in text
            findings = (_model_finding("guaranteed_return"),) if hit else ()
            findings = tuple(
                Finding(**{**f.to_dict(), "severity": "violation", "source": "rule"})
                for f in findings
            )
            out.append(Analysis(role, None, None, "neutral", findings, (), text))  # type: ignore[arg-type]
        return out


def test_thread_evaluation_counts_what_a_reviewer_cares_about() -> None:
    from compliance_nlp.training.threads import evaluate_threads, thread_rows

    threads = [
        {
            "id": "a",
            "turns": [  # line-visible, caught
                {"role": "customer", "text": "收益怎么样"},
                {
                    "role": "advisor",
                    "text": "保本保息",
                    "violations": [{"category": "guaranteed_return", "because": None}],
                },
            ],
        },
        {
            "id": "b",
            "turns": [  # context-only, missed by a reader of lines alone
                {"role": "customer", "text": "本金能拿回来吧"},
                {
                    "role": "advisor",
                    "text": "放心",
                    "violations": [{"category": "guaranteed_return", "because": 0}],
                },
            ],
        },
        {
            "id": "c",
            "turns": [  # a clean correction flagged by the keyword reader
                {"role": "customer", "text": "这个理财保本吗"},
                {"role": "advisor", "text": "保本的说法您别信，会有亏损", "violations": []},
            ],
        },
        {
            "id": "d",
            "turns": [  # a clean thread left alone
                {"role": "customer", "text": "明天能到账吗"},
                {"role": "advisor", "text": "可以的", "violations": []},
            ],
        },
    ]
    report = evaluate_threads(threads, _KeywordFake())  # type: ignore[arg-type]
    assert (report.line_visible, report.line_visible_caught) == (1, 1)
    assert (report.context_only, report.context_only_caught) == (1, 0)
    assert (report.clean_threads, report.clean_threads_flagged) == (2, 1)
    assert report.metrics()["clean_threads_flagged"] == 0.5
    assert "context_only_recall=0.000" in " ".join(report.failed_targets())
    rows = list(thread_rows(threads[1]))
    assert rows[1]["context"] == [{"role": "customer", "text": "本金能拿回来吧"}]
