"""transformers sequence classifiers loaded from a local directory.

Any directory ``AutoModelForSequenceClassification`` can load works: the shipped small
character-level BERTs, or a bank's own fine-tuned Chinese model. Label names come from
``config.id2label``, so swapping the model needs no code change. ``local_files_only``
makes a missing file an error instead of a silent download (no network at run time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance_nlp.types import ModelLoadError

__all__ = ["MODELS_DIR", "Prediction", "SequenceClassifier", "shipped_model_dir"]

MODELS_DIR = Path(__file__).resolve().parent / "models"
MAX_TOKENS = 96
BATCH_SIZE = 64


def shipped_model_dir(kind: str) -> Path:
    return MODELS_DIR / kind


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float


class SequenceClassifier:
    """A loaded model + tokenizer; ``predict`` batches, pads and runs without grad."""

    def __init__(self, directory: str | Path, *, threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = Path(directory)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"no model at {path} (config.json missing)")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Loading prints "Loading weights" progress bars and init warnings to stderr;
        # they would interleave with `siyu demo` and `siyu nlp analyze` output.
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
        self.model.eval()
        id2label = self.model.config.id2label or {}
        self.labels: list[str] = [str(id2label[i]) for i in range(len(id2label))]
        self.name = str(getattr(self.model.config, "siyu_model_name", "") or path.name)
        self.version = str(getattr(self.model.config, "siyu_model_version", "") or "unversioned")
        self.path = path
        self._torch = torch

    def logits(self, texts: list[str]) -> Any:
        """Bare forward pass (used by the benchmark as the model baseline)."""
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._torch.inference_mode():
            return self.model(**enc).logits

    def predict_proba(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        if not texts:
            return out
        # Sort by length so padding stays short; restore order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs: dict[int, list[float]] = {}
        for i in range(0, len(order), BATCH_SIZE):
            chunk = order[i : i + BATCH_SIZE]
            logits = self.logits([texts[j] or " " for j in chunk])
            soft = self._torch.softmax(logits, dim=-1).tolist()
            for j, row in zip(chunk, soft, strict=True):
                probs[j] = row
        return [probs[i] for i in range(len(texts))]

    def predict(self, texts: list[str]) -> list[Prediction]:
        result: list[Prediction] = []
        for row in self.predict_proba(texts):
            best = max(range(len(row)), key=row.__getitem__)
            result.append(Prediction(self.labels[best], float(row[best])))
        return result
