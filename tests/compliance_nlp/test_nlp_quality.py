"""Quality on labelled data, computed with the shipped rules and models.

Six labelled files, two roles:

- ``dev.jsonl`` … ``dev5.jsonl`` are the *development pool*: hand-written lines by
  people other than the corpus generator. ``dev3``, ``dev4`` and ``dev5`` were the
  first, second and third blind sets (independent annotators); once measured and
  studied they stopped being held out. Since issue 3's fourth round the models are
  trained on the pool too (``train.TrainOptions.dev_files``, each line up-weighted) and
  the thresholds are calibrated by k-fold cross-validation over it
  (``compliance_nlp.crossval``), so the dev figures here are fitted, not estimates: they
  are regression guards only. The honest estimate is the cross-validated one.
- ``blind4.jsonl`` is the held-out set, written by a fourth independent annotator who
  never saw the rules, corpus or models, and never read while they were developed. It is
  the only honest measure of the issue-3 targets; when it is present, every target is
  asserted on it, computed, never hard-coded.

``build_corpus`` generates ``train.jsonl`` from the phrasebook and templates only, so it
stays disjoint from every labelled split; training never lists a blind set (test below).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.evaluate import TARGETS, EvalReport, evaluate, read_jsonl

DATA = Path(__file__).resolve().parents[2] / "compliance_nlp" / "data"
BLIND = DATA / "blind4.jsonl"
DEV_SETS = ("dev.jsonl", "dev2.jsonl", "dev3.jsonl", "dev4.jsonl", "dev5.jsonl")


def _texts(name: str) -> set[str]:
    return {r["text"] for r in read_jsonl(DATA / name)}


@pytest.mark.parametrize("name", DEV_SETS)
def test_dev_sets_are_disjoint_from_training(name: str) -> None:
    assert not _texts("train.jsonl") & _texts(name)


@pytest.fixture(scope="module")
def dev_reports(analyzer: Analyzer) -> dict[str, EvalReport]:
    return {name: evaluate(read_jsonl(DATA / name), analyzer) for name in DEV_SETS}


# Dev targets not met (strict xfail: reaching one fails until it is removed here). Empty
# since the models are trained on the dev pool: these figures are fitted, so they guard
# against regressions only; the honest estimate is cross-validated (``crossval``).
DEV_GAPS: set[tuple[str, str]] = set()


@pytest.mark.parametrize("name", DEV_SETS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_dev_set_target(
    request: pytest.FixtureRequest, dev_reports: dict[str, EvalReport], name: str, target: str
) -> None:
    if (name, target) in DEV_GAPS:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="issue 3: dev target not met yet")
        )
    op, bound = TARGETS[target]
    value = dev_reports[name].metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"{name}: {target}={value:.3f}"


def test_training_never_reads_a_blind_set() -> None:
    from compliance_nlp.train import DEV_POOL, TrainOptions

    assert tuple(DEV_POOL) == DEV_SETS
    assert all("blind" not in p.name for p in TrainOptions().dev_files)


needs_blind = pytest.mark.skipif(
    not BLIND.is_file(), reason="blind4.jsonl not delivered yet (independent annotator)"
)


@needs_blind
def test_blind_is_disjoint_from_training() -> None:
    assert not _texts("train.jsonl") & _texts(BLIND.name)


@pytest.fixture(scope="module")
def blind_report(analyzer: Analyzer) -> EvalReport:
    return evaluate(read_jsonl(BLIND), analyzer)


# Targets the shipped analysis does not reach yet on the blind set (issue 3 stays
# open; figures in the closing note).  Strict: the day one is met, this test
# fails until its name is removed here.
KNOWN_GAPS = {"violation_recall", "category_hit", "intent_accuracy", "clean_flagged_violation"}


@needs_blind
@pytest.mark.parametrize("target", [
    pytest.param(t, marks=pytest.mark.xfail(
        strict=True, reason="issue 3: blind held-out target not met yet"))
    if t in KNOWN_GAPS else t
    for t in TARGETS
])
def test_blind_heldout_target(blind_report: EvalReport, target: str) -> None:
    """The issue-3 targets on the blind held-out set."""
    op, bound = TARGETS[target]
    value = blind_report.metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"blind: {target}={value:.3f}"


def test_crossval_folds_are_stable_and_reports_merge() -> None:
    from compliance_nlp.crossval import fold_of, merge_reports

    rows = list(read_jsonl(DATA / "dev2.jsonl"))
    folds = [fold_of(r["text"], 4) for r in rows]
    assert folds == [fold_of(r["text"], 4) for r in rows]
    assert set(folds) == {0, 1, 2, 3}
    a, b = EvalReport(n=2, violating=1), EvalReport(n=3, clean=2)
    a.per_category["insider_tip"] = Counter(tp=1)
    b.per_category["insider_tip"] = Counter(fn=1)
    merged = merge_reports([a, b])
    assert (merged.n, merged.violating, merged.clean) == (5, 1, 2)
    assert merged.per_category["insider_tip"] == Counter(tp=1, fn=1)
