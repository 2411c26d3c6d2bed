"""Intent/sentiment on examples, model loading from a configured dir, smoke training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compliance_nlp import INTENTS, Analyzer, AnalyzerConfig, ModelLoadError, analyze
from compliance_nlp.model import shipped_model_dir
from compliance_nlp.training.train import TrainOptions, train_all

INTENT_EXAMPLES = {
    "我想把这款理财赎回": "redemption_intent",
    "这个保险我想退保": "redemption_intent",
    "我要投诉你们的客户经理，态度太差了": "complaint",
    "我住院了，怎么申请理赔": "claim_service",
    "手机银行登不上了怎么办": "account_service",
    "风险测评在哪里做": "risk_assessment",
    "我想买10万这款理财": "purchase_intent",
    "这只基金收益怎么样？": "product_inquiry",
    "好的谢谢": "chitchat",
}


@pytest.mark.parametrize(("text", "intent"), sorted(INTENT_EXAMPLES.items()))
def test_intent_examples(analyzer: Analyzer, text: str, intent: str) -> None:
    result = analyzer.analyze(text, "customer")
    assert result.intent == intent
    assert result.intent_score is not None and 0 < result.intent_score <= 1


def test_sentiment_examples(analyzer: Analyzer) -> None:
    assert analyzer.analyze("太感谢了，你们服务真贴心", "customer").sentiment == "positive"
    assert analyzer.analyze("乱扣我手续费，我要投诉", "customer").sentiment == "negative"
    assert analyzer.analyze("我的风险等级是什么", "customer").sentiment == "neutral"
    assert analyzer.analyze("我不满意", "customer").sentiment == "negative"


def test_advisor_messages_have_no_intent(analyzer: Analyzer) -> None:
    result = analyzer.analyze("您好，产品说明书已发您", "advisor")
    assert result.intent is None and result.intent_score is None


def test_shipped_model_labels_are_the_taxonomy(analyzer: Analyzer) -> None:
    assert analyzer.intent_model is not None
    assert sorted(analyzer.intent_model.labels) == sorted(INTENTS)
    assert "intent" in analyzer.model_version


def test_model_loads_from_configured_dir_with_its_own_labels(tmp_path: Path) -> None:
    """A bank's model dir is used as is; label names come from its config.id2label."""
    target = tmp_path / "bank-intent"
    shutil.copytree(shipped_model_dir("intent"), target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {k: f"bank_{v}" for k, v in config["id2label"].items()}
    config["label2id"] = {f"bank_{k}": v for k, v in config["label2id"].items()}
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = analyze("我想把这款理财赎回", "customer", AnalyzerConfig(intent_model_dir=str(target)))
    assert result.intent == "bank_redemption_intent"


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        Analyzer(AnalyzerConfig(intent_model_dir=str(tmp_path / "nope")))


def test_model_findings_say_they_are_from_the_model(analyzer: Analyzer) -> None:
    for f in analyzer.analyze("收益我给您兜着，绝对稳", "advisor").violations:
        assert (f.source == "model") == f.rule_id.startswith("model:")


def _tiny_corpus(tmp_path: Path) -> Path:
    rows = [
        {"text": "我想赎回", "role": "customer", "intent": "redemption_intent"},
        {"text": "我要投诉", "role": "customer", "intent": "complaint"},
        {"text": "保本保息", "role": "advisor", "violations": [{"category": "guaranteed_return"}]},
        {"text": "理财有风险", "role": "advisor", "violations": []},
    ]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    return train_file


def test_smoke_train_into_tmp_dir(tmp_path: Path) -> None:
    train_file = _tiny_corpus(tmp_path)
    dev_file = tmp_path / "dev.jsonl"
    dev_rows = [
        {"text": "鑫鑫稳赚", "role": "advisor", "violations": [{"category": "guaranteed_return"}]},
        {"text": "犇犇理财", "role": "advisor", "violations": []},
    ]
    dev_file.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in dev_rows), encoding="utf-8"
    )
    out = tmp_path / "models"
    train_all(
        TrainOptions(
            train_file=train_file,
            heldout_file=None,
            output_dir=out,
            epochs=1,
            max_steps=2,
            dev_files=(dev_file,),
            dev_exclude=frozenset({"犇犇理财"}),
        )
    )
    assert (out / "intent" / "model.safetensors").is_file()
    assert (out / "pair" / "pair.npz").is_file()  # the pair model is part of the recipe
    # The dev pool is trained on (its characters are in the vocabulary); the held-out
    # fold of cross-validation is not.
    vocab = json.loads((out / "violation" / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = vocab["model"]["vocab"]
    assert "鑫" in tokens and "犇" not in tokens
    result = analyze(
        "我想赎回",
        "customer",
        AnalyzerConfig(
            intent_model_dir=str(out / "intent"), violation_model_dir=str(out / "violation")
        ),
    )
    assert result.intent in INTENTS


def test_warning_against_an_act_is_not_a_violation(analyzer: Analyzer) -> None:
    """Naming an off-book act to warn the customer away from it: review at most."""
    result = analyzer.analyze("要是有人让您把钱转到私人微信，请马上报警", "advisor")
    assert not result.has_violation


@pytest.mark.parametrize(
    ("text", "category", "not_category"),
    [
        # A certain price move is an insider tip / 确定性涨跌判断, not a return promise.
        ("这只票肯定反弹，板上钉钉", "insider_tip", "guaranteed_return"),
        # A gift left out of the contract is an inducement, not a hidden guarantee.
        ("签约就送您两瓶茅台，合同上不写", "improper_inducement", "guaranteed_return"),
    ],
)
def test_category_follows_the_concept(
    analyzer: Analyzer, text: str, category: str, not_category: str
) -> None:
    found = {
        f.category
        for f in analyzer.analyze(text, "advisor").violations
        if f.severity == "violation"
    }
    assert category in found and not_category not in found


def test_model_category_is_added_to_a_flagged_line(analyzer: Analyzer) -> None:
    """Findings from rules and model each keep their source; the line stays flagged."""
    result = analyzer.analyze("钱转到我老婆卡上，我帮您买，比走系统快", "advisor")
    assert result.has_violation
    assert "off_book_dealing" in {f.category for f in result.violations}


def test_ensemble_averages_its_members_and_retraining_single_replaces_it(
    tmp_path: Path,
) -> None:
    from compliance_nlp.model import ENSEMBLE_FILE, SequenceClassifier

    out = tmp_path / "models"
    options = TrainOptions(
        train_file=_tiny_corpus(tmp_path),
        output_dir=out,
        epochs=1,
        max_steps=2,
        dev_files=(),
        kinds=("violation",),
        ensemble=2,
    )
    train_all(options)
    target = out / "violation"
    assert json.loads((target / ENSEMBLE_FILE).read_text())["members"] == ["seed-13", "seed-14"]
    texts = ["保本保息", "理财有风险"]
    both = SequenceClassifier(target).predict_proba(texts)
    members = [SequenceClassifier(target / m).predict_proba(texts) for m in ("seed-13", "seed-14")]
    for i in range(len(texts)):
        expected = [(a + b) / 2 for a, b in zip(members[0][i], members[1][i], strict=True)]
        assert both[i] == pytest.approx(expected, abs=1e-6)
    assert members[0] != members[1]  # different seeds, different members
    assert SequenceClassifier(target).version.endswith("x2")

    train_all(TrainOptions(**{**options.__dict__, "ensemble": 1}))
    assert not (target / ENSEMBLE_FILE).exists() and not (target / "seed-13").exists()
    assert SequenceClassifier(target).labels[0] == "none"


def test_broken_ensemble_manifest_is_a_clear_error(tmp_path: Path) -> None:
    from compliance_nlp.model import ENSEMBLE_FILE

    (tmp_path / ENSEMBLE_FILE).write_text('{"members": ["seed-1"]}')
    with pytest.raises(ModelLoadError, match="seed-1"):
        Analyzer(AnalyzerConfig(violation_model_dir=str(tmp_path)))
    (tmp_path / ENSEMBLE_FILE).write_text("not json")
    with pytest.raises(ModelLoadError, match="bad"):
        Analyzer(AnalyzerConfig(violation_model_dir=str(tmp_path)))


def test_interrupted_training_leaves_the_model_that_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compliance_nlp.training.train as train_module

    out = tmp_path / "models"
    options = TrainOptions(
        train_file=_tiny_corpus(tmp_path),
        output_dir=out,
        epochs=1,
        max_steps=2,
        dev_files=(),
        kinds=("violation",),
    )
    train_all(options)
    before = (out / "violation" / "model.safetensors").read_bytes()

    def crash(*args: object, **kwargs: object) -> dict[str, float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_classifier", crash)
    with pytest.raises(KeyboardInterrupt):
        train_all(TrainOptions(**{**options.__dict__, "seed": 99}))
    assert (out / "violation" / "model.safetensors").read_bytes() == before
    Analyzer(AnalyzerConfig(violation_model_dir=str(out / "violation")))  # still loads
