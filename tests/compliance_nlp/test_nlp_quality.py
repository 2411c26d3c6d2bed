"""Quality on labelled data, computed with the shipped rules and models.

Four labelled files, two roles:

- ``dev.jsonl``, ``dev2.jsonl`` and ``dev3.jsonl`` are *development* sets: their misses
  were studied while the lexicon and corpus were broadened, so their figures are
  optimistic. ``dev3.jsonl`` was the first blind set (an independent annotator); once it
  had been measured and its misses studied it stopped being held out. They are checked
  here as regression guards (the targets must keep holding on them), not as evidence of
  generalisation.
- ``blind2.jsonl`` is the held-out set, written by a second independent annotator who
  never saw the rules, corpus or models, and never read while they were developed. It is
  the only honest measure of the issue-3 targets; when it is present, every target is
  asserted on it, computed, never hard-coded.

No split is ever read for training (``build_corpus`` generates ``train.jsonl`` from the
phrasebook and templates only); the disjointness tests below keep that true.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.evaluate import TARGETS, EvalReport, evaluate, read_jsonl

DATA = Path(__file__).resolve().parents[2] / "compliance_nlp" / "data"
BLIND = DATA / "blind2.jsonl"
DEV_SETS = ("dev.jsonl", "dev2.jsonl", "dev3.jsonl")


def _texts(name: str) -> set[str]:
    return {r["text"] for r in read_jsonl(DATA / name)}


@pytest.mark.parametrize("name", DEV_SETS)
def test_dev_sets_are_disjoint_from_training(name: str) -> None:
    assert not _texts("train.jsonl") & _texts(name)


@pytest.fixture(scope="module")
def dev_reports(analyzer: Analyzer) -> dict[str, EvalReport]:
    return {name: evaluate(read_jsonl(DATA / name), analyzer) for name in DEV_SETS}


@pytest.mark.parametrize("name", DEV_SETS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_dev_set_target(dev_reports: dict[str, EvalReport], name: str, target: str) -> None:
    op, bound = TARGETS[target]
    value = dev_reports[name].metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"{name}: {target}={value:.3f}"


needs_blind = pytest.mark.skipif(
    not BLIND.is_file(), reason="blind2.jsonl not delivered yet (independent annotator)"
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
KNOWN_GAPS = {"violation_recall", "category_hit", "intent_accuracy"}


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
