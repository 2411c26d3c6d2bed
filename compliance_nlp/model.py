"""Sequence classifiers loaded from a local directory: onnxruntime, or transformers.

Any directory ``AutoModelForSequenceClassification`` can load works: the shipped small
character-level BERTs, or a bank's own fine-tuned Chinese model. Label names come from
``config.json``'s ``id2label``, so swapping the model needs no code change; nothing is
ever downloaded (no network at run time).

A directory that carries ``model.onnx`` (written by ``siyu nlp export``, and by ``siyu nlp
train`` for the models it trains) runs with onnxruntime and the ``tokenizers`` library:
the base install, with no torch (754 MB even as the CPU build) and no transformers. A
directory without it needs ``siyu[train]`` (torch + transformers) and runs as before.
Both read the same tokenizer.json with the same truncation, padding and batching, and a
test holds their outputs equal on the labelled sets.

A directory may instead hold an ``ensemble.json`` naming member directories (the shipped
models are a few seeds of the same small model): their probabilities are averaged.
Small models trained from scratch disagree most on exactly the lines they have not seen
the like of; the average is steadier there than any one seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from compliance_nlp.normalize import normalize, translate_chars
from compliance_nlp.pii import PiiMatch, find_pii, mask_pii, without_pii
from compliance_nlp.types import ModelLoadError, Turn

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = [
    "ENSEMBLE_FILE",
    "MODELS_DIR",
    "ONNX_FILE",
    "WEIGHTS_DIGEST_KEY",
    "Backend",
    "Prediction",
    "SequenceClassifier",
    "is_model_dir",
    "answered_turn",
    "model_text",
    "shipped_model_dir",
    "violation_input",
    "weights_digest",
]

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
MAX_TOKENS = 96
BATCH_SIZE = 64
ENSEMBLE_FILE = "ensemble.json"
ONNX_FILE = "model.onnx"
# The exported graph records the sha256 of the weights it was made from, so a directory
# whose weights were retrained or replaced after the export is caught at load time.
WEIGHTS_DIGEST_KEY = "siyu_weights_sha256"
# The transformers checkpoint files, in the order ``from_pretrained`` prefers them
# (a sharded checkpoint is named by its index).
_WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What a BERT-style encoder takes, by the name transformers gives each input.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Backend = Literal["auto", "onnx", "torch"]


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
            return j, _masked_turn(turn.text, mask_style)
    return None


# A customer turn is answered by several advisor lines of its conversation (each of
# their windows holds it): its masked text and what the model reads of it are kept.
@lru_cache(maxsize=4096)
def _masked_turn(text: str, mask_style: str) -> str:
    return mask_pii(text, find_pii(translate_chars(text)), mask_style)


@lru_cache(maxsize=4096)
def _turn_model_text(text: str) -> str:
    return model_text(text)


def violation_input(text: str, answered: str | None = None) -> str:
    """The violation model's input: the advisor line, then the customer turn it answers.

    The line comes first so truncation cuts the context, never the line; a line without
    context is exactly what the model was trained on before it read pairs. Training
    (``training.train``) builds its pair examples with this function too.
    """
    line = model_text(text)
    if not answered:
        return line
    return f"{line}{CONTEXT_SEP}{_turn_model_text(answered)}"


def shipped_model_dir(kind: str) -> Path:
    return MODELS_DIR / kind


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / ENSEMBLE_FILE).is_file()


def member_dirs(path: Path) -> list[Path]:
    """The directories holding one model each: ``path`` itself, or an ensemble's members."""
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


_member_dirs = member_dirs


def weights_digest(directory: Path) -> str | None:
    """sha256 of a checkpoint's weights file, or None when the directory carries none.

    An ONNX-only deployment may leave the weights out; then there is nothing to compare.
    """
    for name in _WEIGHTS_FILES:
        path = directory / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    return None


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{directory / 'config.json'} is not a JSON object")
    return config


def _labels(config: dict[str, Any], directory: Path) -> list[str]:
    """``id2label`` in id order; JSON keys are strings, transformers' are ints."""
    raw = config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in raw.items()}
        return [by_id[i] for i in range(len(by_id))]
    except (AttributeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"bad id2label in {directory / 'config.json'}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float


class _Member(Protocol):
    def logits(self, texts: list[str]) -> FloatArray: ...


class _OnnxMember:
    """One exported model: onnxruntime session + the checkpoint's own tokenizer.json.

    The tokenizer is set up as ``SequenceClassifier``'s transformers path calls it:
    special tokens added, truncation to ``MAX_TOKENS`` tokens (specials included), right
    padding with the pad token to the longest text of the batch, ``[SEP]`` in a text read
    as the separator token (``violation_input``).
    """

    def __init__(self, directory: Path, *, threads: int) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._np = np
        try:
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception
            raise ModelLoadError(
                f"cannot load {directory / 'tokenizer.json'}: {exc}; "
                f"run `siyu nlp export {directory}` to write it"
            ) from exc
        pad_token = _pad_token(directory)
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelLoadError(f"pad token {pad_token!r} not in {directory / 'tokenizer.json'}")
        # Whatever the file itself says about padding and truncation, do what the
        # transformers path does (tokenizer.json may carry a training-time setting).
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        if threads > 0:
            # Pool workers run one thread each: N processes on N cores beat N x N threads.
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # Idle threads spinning for work burn the core the rules and jieba need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no start-up chatter on stderr
        try:
            self._session = ort.InferenceSession(
                str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own hierarchy
            raise ModelLoadError(f"cannot load {directory / ONNX_FILE}: {exc}") from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        unknown = [n for n in self._inputs if n not in _MODEL_INPUTS]
        if unknown:
            raise ModelLoadError(
                f"{directory / ONNX_FILE} takes inputs {unknown} that a text encoder "
                f"does not give (expected some of {list(_MODEL_INPUTS)})"
            )
        self._output = self._session.get_outputs()[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        self.exported_from: str | None = meta.get(WEIGHTS_DIGEST_KEY)

    def logits(self, texts: list[str]) -> FloatArray:
        np = self._np
        encodings = self._tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self._inputs}
        out: FloatArray = self._session.run([self._output], feed)[0]
        return out.astype(np.float32, copy=False)


def _pad_token(directory: Path) -> str:
    """The pad token as tokenizer_config.json names it (``[PAD]`` for BERT)."""
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "[PAD]"
    pad = config.get("pad_token") if isinstance(config, dict) else None
    if isinstance(pad, dict):  # older transformers save an AddedToken as a dict
        pad = pad.get("content")
    return pad if isinstance(pad, str) and pad else "[PAD]"


class _TorchMember:
    """A transformers checkpoint run with torch (needs ``siyu[train]``)."""

    def __init__(self, directory: Path, *, torch: Any) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                str(directory), local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load model from {directory}: {exc}") from exc
        self._model.eval()
        self._torch = torch

    def logits(self, texts: list[str]) -> FloatArray:
        enc = self._tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._torch.inference_mode():
            out: FloatArray = self._model(**enc).logits.numpy()
        return out


def _load_torch(threads: int) -> Any:
    """torch with transformers' load-time chatter silenced, or None when not installed."""
    try:
        import torch
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    # Loading prints "Loading weights" progress bars and init warnings to stderr;
    # they would interleave with `siyu demo` and `siyu nlp analyze` output.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if threads > 0:
        torch.set_num_threads(threads)
    return torch


class SequenceClassifier:
    """A loaded model (or ensemble); ``predict`` batches, pads and runs without grad.

    ``backend``: ``"onnx"`` needs ``model.onnx`` in every member; ``"torch"`` needs torch
    and transformers; ``"auto"`` (the default) takes ONNX when every member has an export
    that matches its weights, else torch when it is installed, else a clear error.
    """

    def __init__(
        self, directory: str | Path, *, threads: int = 0, backend: Backend = "auto"
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = Path(directory)
        members = member_dirs(path)
        configs = [_read_config(m) for m in members]
        self.labels: list[str] = _labels(configs[0], members[0])
        for member, config in zip(members[1:], configs[1:], strict=True):
            if _labels(config, member) != self.labels:
                raise ModelLoadError(f"ensemble members at {path} disagree on their labels")
        self._members: list[_Member] = []
        self.backend: Literal["onnx", "torch"] = "torch"
        missing = [m for m in members if not (m / ONNX_FILE).is_file()]
        if backend == "onnx" and missing:
            raise ModelLoadError(f"no {ONNX_FILE} in {missing[0]}; {_export_hint(path)}")
        if backend != "torch" and not missing:
            onnx = [_OnnxMember(m, threads=threads) for m in members]
            stale = [m for m, o in zip(members, onnx, strict=True) if _is_stale(m, o)]
            if not stale:
                self._members, self.backend = list(onnx), "onnx"
            elif backend == "onnx" or _load_torch(threads) is None:
                raise ModelLoadError(
                    f"{stale[0] / ONNX_FILE} was exported from other weights than "
                    f"{stale[0]} holds now; {_export_hint(path)}"
                )
            else:
                # torch can still run the checkpoint: slower, but what runs is what the
                # directory holds.
                log.warning(
                    "model.onnx older than the weights; running the model with torch",
                    extra={"model_dir": str(path)},
                )
        if not self._members:
            torch = _load_torch(threads)
            if torch is None:
                what = f"no {ONNX_FILE} in {missing[0]} and " if missing else ""
                raise ModelLoadError(f"{what}torch is not installed; {_export_hint(path)}")
            self._members = [_TorchMember(m, torch=torch) for m in members]
        first = configs[0]
        self.name = str(first.get("siyu_model_name") or path.name)
        version = str(first.get("siyu_model_version") or "unversioned")
        if len(self._members) > 1:
            version += f"x{len(self._members)}"
        self.version = version
        self.path = path

    def logits(self, texts: list[str]) -> list[FloatArray]:
        """Bare forward pass of every member (the benchmark's model baseline)."""
        return [member.logits(texts) for member in self._members]

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
            soft_sum: FloatArray | None = None
            for member in self._members:
                part = _softmax(member.logits(batch))
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


def _softmax(logits: FloatArray) -> FloatArray:
    import numpy as np

    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    out: FloatArray = exp / exp.sum(axis=-1, keepdims=True)
    return out


def _is_stale(member: Path, onnx: _OnnxMember) -> bool:
    """Whether ``model.onnx`` was exported from other weights than the member holds now."""
    current = weights_digest(member)
    return bool(onnx.exported_from and current and onnx.exported_from != current)


def _export_hint(path: Path) -> str:
    return (
        f"run `siyu nlp export {path}` where siyu[train] (torch, transformers) is installed, "
        "and deploy the model.onnx it writes beside the weights"
    )
