"""The pair model (``compliance_nlp.pair``): a reply judged with the customer turn it answers.

Trained here on a handful of made-up pairs (words no rule or frame knows), so what the
analyzer does with it is the pair model's doing: the finding names the customer turn, a
reply the frames read as a refusal stays clean, and training is seeded. The sentences
are written for this test, not copied from a labelled file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from compliance_nlp import Analyzer, AnalyzerConfig
from compliance_nlp.pair import (
    GOES_ON,
    PAIR_FILE,
    STANCES,
    Stance,
    load_pair_model,
    pair_features,
    pair_index,
    pair_parts,
)
from compliance_nlp.rules import RULES_DIR, RuleDataError
from compliance_nlp.training.pair_train import PairOptions, save_pair, train_pair
from compliance_nlp.types import Turn

# A made-up request (「犇犇叮当」 is nothing any rule or frame names) that the advisor goes
# along with, against the same request refused and everyday questions met with 好.
ASK = "犇犇叮当那个理财咋整"
OFF_GROUND = "犇犇叮当那个咋整"  # the same request with nothing financial in it
EXAMPLES = [
    (ASK, "叮当我来整", "insider_tip"),
    (OFF_GROUND, "叮当我来整", "insider_tip"),
    ("犇犇叮当的理财你整不整", "整，我来", "insider_tip"),
    ("犇犇叮当理财能整吗", "能整，交给我", "insider_tip"),
    (ASK, "叮当说不准，不整了", "none"),
    ("犇犇叮当理财能整吗", "没法整，您别整", "none"),
    ("明天几点开门", "好的，九点", "none"),
    ("周末有空一起吃饭吗", "行，我来订", "none"),
    ("我到楼下了", "好的，马上来", "none"),
] * 4
REPLY = "叮当交给我整"


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pair")
    weights, bias, _ = train_pair(EXAMPLES, PairOptions(epochs=30, batch_size=8))
    save_pair(out, weights, bias, "test")
    return out


def test_features_cross_the_question_with_the_reply_stance() -> None:
    stance = Stance.load()
    parts = pair_parts("本金能拿回来吧", "放心", "放心", stance)
    assert "s:assure" in parts.features and "assure" in parts.classes
    assert "q2:本金" in parts.qgrams
    refused = pair_parts("本金能拿回来吧", "这个说不准", "这个说不准", stance)
    assert "refuse" in refused.classes and "assure" not in refused.classes
    assert "emoji_only" in pair_features("本金能拿回来吧", "", "👌", stance)
    # The crossings are rows of their own: the same words answered otherwise differ.
    assured = set(pair_index("本金能拿回来吧", "放心", "放心", stance).tolist())
    alone = set(pair_index("", "放心", "放心", stance).tolist())
    assert len(assured - alone) > len(parts.qgrams) + 1


def test_bad_stance_file_is_refused(tmp_path: Path) -> None:
    data = json.loads((RULES_DIR / "stance.json").read_text(encoding="utf-8"))
    data["classes"] = {name: ["好"] for name in STANCES[:-1]}
    (tmp_path / "stance.json").write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    with pytest.raises(RuleDataError):
        Stance.load(str(tmp_path))


def test_training_is_seeded() -> None:
    a = train_pair(EXAMPLES, PairOptions(epochs=2, batch_size=8))
    b = train_pair(EXAMPLES, PairOptions(epochs=2, batch_size=8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_analyzer_reads_the_pair_and_names_the_customer_turn(pair_dir: Path) -> None:
    with_pair = Analyzer(AnalyzerConfig(pair_model_dir=str(pair_dir), pair_threshold=0.5))
    without = Analyzer(AnalyzerConfig(use_pair_model=False))
    # The request is two turns back: the reply may answer it over a 「在吗」.
    context = [Turn("customer", ASK), Turn("advisor", "稍等"), Turn("customer", "在吗")]
    found = with_pair.analyze(REPLY, "advisor", context=context).violations
    pair = [f for f in found if f.rule_id == "PAIR"]
    assert [f.category for f in pair] == ["insider_tip"]
    assert pair[0].context_index == 0 and pair[0].context_evidence == ASK
    assert pair[0].severity == "violation" and pair[0].evidence == REPLY
    assert not without.analyze(REPLY, "advisor", context=context).has_violation
    # The same words with no request before them, or after an everyday one: clean.
    assert not with_pair.analyze(REPLY, "advisor").has_violation
    everyday = [Turn("customer", "周末有空一起吃饭吗")]
    assert not with_pair.analyze(REPLY, "advisor", context=everyday).has_violation
    refusal = with_pair.analyze("叮当没法整，您别整", "advisor", context=context)
    assert not refusal.has_violation
    # Off financial ground the model's score is no evidence (as for the line model).
    assert with_pair.pair_model is not None
    off = [Turn("customer", OFF_GROUND)]
    assert with_pair.pair_model.proba([(OFF_GROUND, REPLY)])[0].argmax() != 0
    assert not with_pair.analyze(REPLY, "advisor", context=off).has_violation


def test_pair_threshold_gates_the_finding(pair_dir: Path) -> None:
    strict = Analyzer(AnalyzerConfig(pair_model_dir=str(pair_dir), pair_threshold=1.01))
    result = strict.analyze(REPLY, "advisor", context=[Turn("customer", ASK)])
    assert not result.has_violation


def test_a_named_pair_directory_must_hold_a_model(tmp_path: Path, pair_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_pair_model(str(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(pair_dir, copy)
    assert (copy / PAIR_FILE).is_file() and load_pair_model(str(copy)) is not None


def test_shipped_pair_model_is_loaded(analyzer: Analyzer) -> None:
    assert analyzer.pair_model is not None
    assert "pair siyu-pair-logreg@" in analyzer.model_version


@pytest.mark.parametrize(
    ("reply", "goes_on"),
    [
        ("不是哈，但放款快，我跟他们合作好几年了", True),
        ("不行，不过我可以帮您想想别的办法", True),
        ("不是的，这个只能在柜台办", False),
        ("不行的，私下签的东西对您没保障", False),
        ("没有的事，别信这些", False),
    ],
)
def test_a_refusal_the_reply_goes_on_past(reply: str, goes_on: bool) -> None:
    assert bool(GOES_ON.search(reply)) is goes_on
