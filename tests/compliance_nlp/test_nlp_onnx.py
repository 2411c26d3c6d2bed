"""The ONNX runtime path computes what the transformers+torch path computes.

Serving runs the exported ``model.onnx`` with onnxruntime and the ``tokenizers`` library
(no torch); training and export keep torch. These tests hold the two paths equal on
every labelled set (identical findings and intents, scores within 1e-4), and check the
export command, the fallback and the errors a bank meets with its own checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig, ModelLoadError
from compliance_nlp.cli import register
from compliance_nlp.model import ONNX_FILE, SequenceClassifier, shipped_model_dir
from compliance_nlp.training.evaluate import read_jsonl
from compliance_nlp.training.export import export_onnx
from compliance_nlp.training.threads import is_thread, thread_rows
from compliance_nlp.training.train import TrainOptions, train_all
from compliance_nlp.types import Turn

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "compliance_nlp" / "training" / "data"
# Every hand-labelled file (train.jsonl is generated, and its lines are in the model).
LABELLED = sorted(p.name for p in DATA.glob("*.jsonl") if p.name != "train.jsonl")
TOLERANCE = 1e-4
# An analysis rounds its scores to 4 decimals: two probabilities 1e-7 apart can round
# one unit of the last place apart.
ROUNDED_TOLERANCE = TOLERANCE + 1e-9


def _items(name: str) -> tuple[list[tuple[str, str]], list[tuple[Turn, ...] | None]]:
    items: list[tuple[str, str]] = []
    contexts: list[tuple[Turn, ...] | None] = []
    for row in read_jsonl(DATA / name):
        for line in thread_rows(row) if is_thread(row) else [row]:
            items.append((str(line["text"]), str(line["role"])))
            ctx = line.get("context")
            contexts.append(tuple(Turn(t["role"], t["text"]) for t in ctx) if ctx else None)
    return items, contexts


@pytest.fixture(scope="module")
def both() -> tuple[Analyzer, Analyzer]:
    """The shipped configuration, once with ONNX (what serves) and once with torch."""
    onnx, torch = Analyzer(AnalyzerConfig()), Analyzer(AnalyzerConfig())
    for kind in ("intent", "violation"):
        directory = shipped_model_dir(kind)
        setattr(onnx, f"{kind}_model", SequenceClassifier(directory, backend="onnx"))
        setattr(torch, f"{kind}_model", SequenceClassifier(directory, backend="torch"))
    return onnx, torch


def _split_scores(result: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """The analysis without its model scores, and those scores in order."""
    scores = [result["intent_score"] or 0.0]
    result = {**result, "intent_score": None, "violations": list(result["violations"])}
    for i, finding in enumerate(result["violations"]):
        scores.append(finding["score"] or 0.0)
        result["violations"][i] = {**finding, "score": None}
    return result, scores


def test_the_shipped_models_carry_their_export() -> None:
    for kind in ("intent", "violation"):
        model = SequenceClassifier(shipped_model_dir(kind))
        assert model.backend == "onnx", f"{kind}: run siyu nlp export on it"


@pytest.mark.parametrize("name", LABELLED)
def test_onnx_and_torch_analyse_every_labelled_line_alike(
    both: tuple[Analyzer, Analyzer], name: str
) -> None:
    onnx, torch = both
    items, contexts = _items(name)
    got = onnx.analyze_many(items, contexts)
    expected = torch.analyze_many(items, contexts)
    for (text, _), a, b in zip(items, got, expected, strict=True):
        a_rest, a_scores = _split_scores(a.to_dict())
        b_rest, b_scores = _split_scores(b.to_dict())
        assert a_rest == b_rest, text
        assert a_scores == pytest.approx(b_scores, abs=ROUNDED_TOLERANCE), text


def test_probabilities_agree_on_model_inputs_of_every_length(
    both: tuple[Analyzer, Analyzer],
) -> None:
    """Truncation at MAX_TOKENS, [SEP] pairs, empty text and mixed batches."""
    texts = [
        "",
        "好",
        "保本保息，稳赚不赔",
        "ＶＸ加我，私下转账更快[SEP]能保本吗？",
        "收益" * 200,
        "[SEP]",
        "abc DEF 123 ＡＢＣ",
        "😀👌",
    ] * 9
    onnx, torch = both
    for a_model, b_model in (
        (onnx.intent_model, torch.intent_model),
        (onnx.violation_model, torch.violation_model),
    ):
        assert a_model is not None and b_model is not None
        a, b = a_model.predict_proba(texts), b_model.predict_proba(texts)
        for row_a, row_b in zip(a, b, strict=True):
            assert row_a == pytest.approx(row_b, abs=TOLERANCE)


def test_a_bert_classifiers_export_runs_its_last_layer_for_cls_alone() -> None:
    """The exported graph skips what the classifier never reads, and keeps its logits.

    The pooler reads the last layer at ``[CLS]`` only: the export's last layer runs its
    feed-forward on one position per text, where transformers runs it on every token.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compliance_nlp.model import MAX_TOKENS
    from compliance_nlp.training.export import _cls_only_classifier, _is_plain_bert_classifier

    directory = str(shipped_model_dir("violation"))
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)
    model.eval()
    assert _is_plain_bert_classifier(model)
    texts = ["好", "保本保息，稳赚不赔[SEP]能保本吗？", "收益" * 60]
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
    )
    rows: list[tuple[int, ...]] = []
    hook = model.bert.encoder.layer[-1].intermediate.register_forward_hook(
        lambda _module, args, _out: rows.append(tuple(args[0].shape[:2]))
    )
    try:
        with torch.inference_mode():
            expected = model(**enc).logits
            got = _cls_only_classifier(model, torch)(**enc)
    finally:
        hook.remove()
    assert rows == [(3, enc["input_ids"].shape[1]), (3, 1)]
    assert torch.allclose(got, expected, atol=TOLERANCE / 10)


def _tiny_corpus(tmp_path: Path) -> Path:
    rows = [
        {"text": "我想赎回", "role": "customer", "intent": "redemption_intent"},
        {"text": "保本保息", "role": "advisor", "violations": [{"category": "guaranteed_return"}]},
        {"text": "理财有风险", "role": "advisor", "violations": []},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def test_training_exports_each_ensemble_member(tmp_path: Path) -> None:
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
    assert (target / "seed-13" / ONNX_FILE).is_file() and (target / "seed-14" / ONNX_FILE).is_file()
    texts = ["保本保息", "理财有风险", ""]
    onnx = SequenceClassifier(target)
    assert onnx.backend == "onnx" and onnx.version.endswith("x2")
    expected = SequenceClassifier(target, backend="torch").predict_proba(texts)
    for got, want in zip(onnx.predict_proba(texts), expected, strict=True):
        assert got == pytest.approx(want, abs=TOLERANCE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), AnalyzerConfig)
    return parser


def test_weights_changed_after_the_export_are_not_served_from_the_old_export(
    tmp_path: Path,
) -> None:
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "bank-violation"
    shutil.copytree(shipped_model_dir("violation"), model)
    # The bank retrains its checkpoint and forgets the export: its old graph is stale.
    weights = load_file(model / "model.safetensors")
    name = next(k for k in sorted(weights) if k.endswith("classifier.bias"))
    weights[name] = weights[name] + 1.0
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="siyu nlp export"):
        SequenceClassifier(model, backend="onnx")
    # With torch at hand, what the directory holds now runs (slower) instead.
    assert SequenceClassifier(model).backend == "torch"
    export_onnx(model)
    assert SequenceClassifier(model).backend == "onnx"


def test_export_command_writes_a_checkpoints_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "bank-intent"
    shutil.copytree(shipped_model_dir("intent"), model)
    (model / ONNX_FILE).unlink()
    assert SequenceClassifier(model).backend == "torch"  # no export yet: torch runs it
    args = _parser().parse_args(["nlp", "export", str(model)])
    assert args.func(args) == 0
    assert str(model / ONNX_FILE) in capsys.readouterr().out
    assert SequenceClassifier(model).backend == "onnx"
    args = _parser().parse_args(["nlp", "export", str(tmp_path / "nope")])
    assert args.func(args) == 2
    assert "config.json missing" in capsys.readouterr().err


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as on the base install: import torch fails
sys.modules["transformers"] = None
from compliance_nlp.model import SequenceClassifier
from compliance_nlp.types import ModelLoadError
try:
    SequenceClassifier(sys.argv[1])
except ModelLoadError as exc:
    print(exc)
else:
    print("loaded")
print(SequenceClassifier(sys.argv[2]).backend)
"""


def test_without_torch_a_checkpoint_without_export_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "bank-intent"
    shutil.copytree(shipped_model_dir("intent"), model)
    (model / ONNX_FILE).unlink()
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(model), str(shipped_model_dir("intent"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.strip().splitlines()
    assert "torch is not installed" in first and f"siyu nlp export {model}" in first
    assert second == "onnx"
