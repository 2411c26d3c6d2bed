"""transformers sequence classifiers loaded from a local directory.

Any directory ``AutoModelForSequenceClassification`` can load works: the shipped small
character-level BERTs, or a bank's own fine-tuned Chinese model. Label names come from
``config.id2label``, so swapping the model needs no code change. ``local_files_only``
makes a missing file an error instead of a silent download (no network at run time).

A directory may instead hold an ``ensemble.json`` naming member directories (the shipped
models are a few seeds of the same small model): their probabilities are averaged.
Small models trained from scratch disagree most on exactly the lines they have not seen
the like of; the average is steadier there than any one seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance_nlp.normalize import normalize, translate_chars
from compliance_nlp.pii import PiiMatch, find_pii, mask_pii, without_pii
from compliance_nlp.types import ModelLoadError, Turn

__all__ = [
    "ENSEMBLE_FILE",
    "MODELS_DIR",
    "Prediction",
    "SequenceClassifier",
    "is_model_dir",
    "answered_turn",
    "model_text",
    "shipped_model_dir",
    "violation_input",
]

MODELS_DIR = Path(__file__).resolve().parent / "models"
MAX_TOKENS = 96
BATCH_SIZE = 64
ENSEMBLE_FILE = "ensemble.json"


def model_text(text: str, pii: Sequence[PiiMatch] = ()) -> str:
    """What the shipped classifiers read, the one definition for training and inference.

    The evasion-normalised text (穩賺→稳赚, ＶＸ→微信), with the given personal-data spans
    cut out first (``pii.without_pii``). The intent model is given the message's spans;
    the violation model reads the whole message, as it was trained. Training once kept
    the digits while inference cut them, and the model learned that a long number means
    account_service (dev4: a redemption with a phone number in it): one function for
    both sides keeps them from drifting apart.
    """
    return normalize(without_pii(text, pii)).text


CONTEXT_SEP = "[SEP]"


def answered_turn(
    context: Sequence[Turn], *, window: int, mask_style: str = "default"
) -> tuple[int, str] | None:
    """The customer turn an advisor line answers: (index in ``context``, masked text).

    The last customer turn among the last ``window`` turns (oldest first): an advisor
    often answers in several lines, and a greeting between question and answer does not
    change what was asked. Its personal numbers are masked, as the pipeline stores them,
    so training and inference read the same text and a finding's excerpt never carries
    one. One definition for ``Analyzer`` and ``training.train``.
    """
    first = max(len(context) - max(window, 0), 0)
    for j in range(len(context) - 1, first - 1, -1):
        turn = context[j]
        if turn.role == "customer":
            return j, mask_pii(turn.text, find_pii(translate_chars(turn.text)), mask_style)
    return None


def violation_input(text: str, answered: str | None = None) -> str:
    """The violation model's input: the advisor line, then the customer turn it answers.

    The line comes first so truncation cuts the context, never the line; a line without
    context is exactly what the model was trained on before it read pairs. Training
    (``training.train``) builds its pair examples with this function too.
    """
    line = model_text(text)
    if not answered:
        return line
    return f"{line}{CONTEXT_SEP}{model_text(answered)}"


def shipped_model_dir(kind: str) -> Path:
    return MODELS_DIR / kind


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / ENSEMBLE_FILE).is_file()


def _member_dirs(path: Path) -> list[Path]:
    manifest = path / ENSEMBLE_FILE
    if not manifest.is_file():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"no model at {path} (config.json missing)")
        return [path]
    try:
        members = json.loads(manifest.read_text(encoding="utf-8"))["members"]
        dirs = [path / str(m) for m in members]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"bad {manifest}: {exc}") from exc
    if not dirs:
        raise ModelLoadError(f"{manifest} names no members")
    for d in dirs:
        if not (d / "config.json").is_file():
            raise ModelLoadError(f"ensemble member {d} has no config.json")
    return dirs


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
        members = _member_dirs(path)
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Loading prints "Loading weights" progress bars and init warnings to stderr;
        # they would interleave with `siyu demo` and `siyu nlp analyze` output.
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if threads > 0:
            torch.set_num_threads(threads)
        self._members: list[tuple[Any, Any]] = []
        for member in members:
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(member), local_files_only=True)
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(member), local_files_only=True
                )
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"cannot load model from {member}: {exc}") from exc
            model.eval()
            self._members.append((tokenizer, model))
        first = self._members[0][1].config
        id2label = first.id2label or {}
        self.labels: list[str] = [str(id2label[i]) for i in range(len(id2label))]
        for _, model in self._members[1:]:
            other = model.config.id2label or {}
            if [str(other.get(i)) for i in range(len(other))] != self.labels:
                raise ModelLoadError(f"ensemble members at {path} disagree on their labels")
        self.name = str(getattr(first, "siyu_model_name", "") or path.name)
        version = str(getattr(first, "siyu_model_version", "") or "unversioned")
        if len(self._members) > 1:
            version += f"x{len(self._members)}"
        self.version = version
        self.path = path
        self._torch = torch
        # The first member, for callers that want one (tokenizer vocabulary, config).
        self.tokenizer, self.model = self._members[0]

    def logits(self, texts: list[str]) -> Any:
        """Bare forward pass of every member (the benchmark's model baseline)."""
        return [self._member_logits(tok, model, texts) for tok, model in self._members]

    def _member_logits(self, tokenizer: Any, model: Any, texts: list[str]) -> Any:
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._torch.inference_mode():
            return model(**enc).logits

    def predict_proba(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        if not texts:
            return out
        # Sort by length so padding stays short; restore order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs: dict[int, list[float]] = {}
        for i in range(0, len(order), BATCH_SIZE):
            chunk = order[i : i + BATCH_SIZE]
            batch = [texts[j] or " " for j in chunk]
            soft_sum = None
            for tokenizer, model in self._members:
                part = self._torch.softmax(self._member_logits(tokenizer, model, batch), dim=-1)
                soft_sum = part if soft_sum is None else soft_sum + part
            assert soft_sum is not None
            soft = (soft_sum / len(self._members)).tolist()
            for j, row in zip(chunk, soft, strict=True):
                probs[j] = row
        return [probs[i] for i in range(len(texts))]

    def predict(self, texts: list[str]) -> list[Prediction]:
        result: list[Prediction] = []
        for row in self.predict_proba(texts):
            best = max(range(len(row)), key=row.__getitem__)
            result.append(Prediction(self.labels[best], float(row[best])))
        return result
