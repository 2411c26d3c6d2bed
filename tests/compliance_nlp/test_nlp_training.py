"""The training side: the corpus is what its phrase data generates."""

from __future__ import annotations

import json


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
