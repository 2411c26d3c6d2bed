"""The training side: the corpus is what its phrase data generates, and the models
are trained on the text they are given at inference."""

from __future__ import annotations

import json

from compliance_nlp import Analyzer, AnalyzerConfig
from compliance_nlp.model import Prediction
from compliance_nlp.pii import PiiMatch, without_pii
from compliance_nlp.training.evaluate import read_jsonl


def test_training_corpus_is_what_the_phrase_data_generates() -> None:
    """``train.jsonl`` comes from ``training/phrases/*.json`` through a seeded generator.

    The shipped models are trained on it, so a phrase edited without regenerating the
    corpus (and retraining) would leave the data files describing models nobody trained.
    """
    from compliance_nlp.training.build_corpus import OUT, build

    made = [json.dumps(row, ensure_ascii=False) for row in build()]
    shipped = OUT.read_text(encoding="utf-8").splitlines()
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(made, shipped, strict=False)) if a != b), None
    )
    assert first_diff is None, (first_diff, made[first_diff], shipped[first_diff])
    assert len(made) == len(shipped)


class _RecordingModel:
    """Stands in for the intent model: records what it is asked to read."""

    name = "recorder"
    version = "0"

    def __init__(self) -> None:
        self.read: list[str] = []

    def predict(self, texts: list[str]) -> list[Prediction]:
        self.read.extend(texts)
        return [Prediction("chitchat", 0.99) for _ in texts]


def test_intent_model_reads_in_training_what_it_reads_at_inference() -> None:
    """Train/serve skew guard: one PII-stripping path for both sides.

    Training builds its examples from labelled PII spans, inference from the spans
    ``find_pii`` reports; over every labelled customer line (the PII lines of the corpus
    and the whole dev pool) the model must be handed the same text either way.
    """
    from compliance_nlp.training.train import TrainOptions, _examples, read_rows

    options = TrainOptions()
    corpus = [r for r in read_jsonl(options.train_file) if r.get("pii")]
    pool = [r for path in options.dev_files for r in read_rows(path)]
    rows = [r for r in corpus + pool if r["role"] == "customer" and r.get("intent")]
    assert sum(1 for r in rows if r.get("pii")) >= 100  # the lines where the paths differ

    trained_on = [text for text, _ in _examples(rows, "intent")]
    analyzer = Analyzer(AnalyzerConfig(use_model=False))
    recorder = _RecordingModel()
    analyzer.intent_model = recorder  # type: ignore[assignment]
    analyzer.analyze_many([(r["text"], "customer") for r in rows])
    assert recorder.read == trained_on


def test_pii_is_cut_once_where_spans_overlap() -> None:
    """Cutting spans one by one from the end (training's old way) ate text after an
    overlap; the shared function merges them."""
    text = "电话13812345678转6222020200112233445"
    spans = [PiiMatch("phone", 2, 13), PiiMatch("bank_card", 10, 14)]
    assert without_pii(text, spans) == "电话" + text[14:]
