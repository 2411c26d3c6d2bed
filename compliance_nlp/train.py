"""``siyu nlp train``: train the shipped character-level BERT classifiers from scratch.

No pretrained download exists on an institution's air-gapped host, so the shipped
models are small BERTs (2 layers, hidden 128) over a character vocabulary built from
the project's own corpus (``data/build_corpus.py``: ~28k generated lines), trained on
CPU in a few minutes on two cores. Seeded and deterministic: the same corpus and seed
give the same weights. The development pool (dev … dev16, ~5,800 hand-written lines by
sixteen annotators other than the corpus generator) is trained on as well, each line
repeated ``dev_weight`` times; the thresholds in ``AnalyzerConfig`` are calibrated by
cross-validation over that pool holding out whole annotators' files
(``compliance_nlp.crossval``), never on lines the scoring model saw. A blind set
(``blind*.jsonl``) is never read here. A bank with a better Chinese model fine-tunes it
elsewhere and points ``intent_model_dir``/``violation_model_dir`` at it; nothing here is
then needed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compliance_nlp.evaluate import read_jsonl
from compliance_nlp.model import ENSEMBLE_FILE, MAX_TOKENS
from compliance_nlp.normalize import normalize
from compliance_nlp.rules import CATEGORIES

__all__ = ["TrainOptions", "train_all", "train_classifier"]

DATA_DIR = Path(__file__).resolve().parent / "data"
INTENTS = (
    "product_inquiry",
    "purchase_intent",
    "redemption_intent",
    "complaint",
    "account_service",
    "claim_service",
    "risk_assessment",
    "chitchat",
)
NO_VIOLATION = "none"
# The hand-written development pool; blind sets are deliberately not listed.
DEV_POOL = tuple(f"dev{n}.jsonl" for n in ("", *range(2, 17)))
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class TrainOptions:
    train_file: Path = DATA_DIR / "train.jsonl"
    # Scored after training; the dev pool is trained on, so its figures are optimistic.
    heldout_file: Path | None = None
    # Hand-written lines trained on with the corpus, each repeated ``dev_weight`` times;
    # ``dev_exclude`` holds texts left out (the held fold of cross-validation).
    dev_files: tuple[Path, ...] = tuple(DATA_DIR / name for name in DEV_POOL)
    # Cross-validation with whole annotators held out (issue 3, round five, on dev …
    # dev11): dev_weight 8 beat 4 on every figure.
    dev_weight: int = 8
    dev_exclude: frozenset[str] = frozenset()
    output_dir: Path = Path(__file__).resolve().parent / "models"
    seed: int = 13
    # What ships is the recipe cross-validation measured and calibrated (3 epochs).
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    max_steps: int = 0  # >0 caps optimisation steps (smoke tests)
    # Soft targets keep the small model from learning 0.999 on everything it half
    # recognises (dev4: 「好的收到，我下午给您回个电话」 read as off-book at 0.99).
    label_smoothing: float = 0.1
    kinds: tuple[str, ...] = ("intent", "violation")
    # Members per model: seeds ``seed``, ``seed + 1`` …, probabilities averaged at
    # inference (``model.ENSEMBLE_FILE``). 1 = a single model directory.
    ensemble: int = 1


def model_text(text: str) -> str:
    """What the model sees: the evasion-normalised text (穩賺→稳赚, ＶＸ→微信)."""
    return normalize(text).text


def _examples(rows: Sequence[dict[str, Any]], kind: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for row in rows:
        if kind == "intent" and row["role"] == "customer" and row.get("intent"):
            out.append((model_text(_without_pii(row)), str(row["intent"])))
        elif kind == "violation" and row["role"] == "advisor":
            cats = [v["category"] for v in row.get("violations") or []]
            out.append((model_text(row["text"]), cats[0] if cats else NO_VIOLATION))
    return out


def _without_pii(row: dict[str, Any]) -> str:
    """The text with its labelled PII cut out, as ``Analyzer`` shows it to the intent model.

    Training on the digits while inference strips them taught the model that a long
    number means account_service (dev4: a redemption with a phone number in it).
    """
    text = str(row["text"])
    for span in sorted(row.get("pii") or [], key=lambda p: -int(p["start"])):
        text = text[: int(span["start"])] + text[int(span["end"]) :]
    return text


def _build_vocab(texts: Sequence[str]) -> dict[str, int]:
    chars = Counter(ch for t in texts for ch in t if not ch.isspace())
    ascii_extra = [chr(c) for c in range(33, 127)]
    vocab = list(_SPECIAL)
    seen = set(vocab)
    for ch in sorted(set(chars) | set(ascii_extra)):
        for tok in (ch, "##" + ch) if ch.isascii() else (ch,):
            if tok not in seen:
                seen.add(tok)
                vocab.append(tok)
    return {tok: i for i, tok in enumerate(vocab)}


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_classifier(
    examples: Sequence[tuple[str, str]],
    labels: Sequence[str],
    out_dir: Path,
    *,
    name: str,
    options: TrainOptions,
    corpus_digest: str,
) -> dict[str, float]:
    """Train one sequence classifier and save it (safetensors) to ``out_dir``."""
    import torch
    from transformers import (  # type: ignore[attr-defined]  # lazy export in transformers 5
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    _seed_everything(options.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    # transformers 5 takes the vocabulary itself; save_pretrained writes tokenizer.json.
    tokenizer = BertTokenizerFast(
        vocab=_build_vocab([t for t, _ in examples]),
        do_lower_case=True,
        tokenize_chinese_chars=True,
    )
    label2id = {lab: i for i, lab in enumerate(labels)}
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=options.hidden_size,
        num_hidden_layers=options.layers,
        num_attention_heads=options.heads,
        intermediate_size=options.hidden_size * 2,
        max_position_embeddings=MAX_TOKENS + 32,
        num_labels=len(labels),  # type: ignore[call-arg]  # a PretrainedConfig kwarg
        id2label={i: lab for lab, i in label2id.items()},
        label2id=label2id,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    config.siyu_model_name = name
    config.siyu_model_version = f"{corpus_digest[:8]}-s{options.seed}"
    model = BertForSequenceClassification(config)
    data = [(t, label2id[y]) for t, y in examples if y in label2id]
    rng = random.Random(options.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    steps_per_epoch = (len(data) + options.batch_size - 1) // options.batch_size
    total = steps_per_epoch * options.epochs
    if options.max_steps:
        total = min(total, options.max_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=options.learning_rate, total_steps=max(total, 1), pct_start=0.1
    )
    model.train()
    step = 0
    for _epoch in range(options.epochs):
        rng.shuffle(data)
        for i in range(0, len(data), options.batch_size):
            if step >= total:
                break
            batch = data[i : i + options.batch_size]
            enc = tokenizer(
                [t for t, _ in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            logits = model(**enc).logits
            loss = torch.nn.functional.cross_entropy(
                logits,
                torch.tensor([y for _, y in batch]),
                label_smoothing=options.label_smoothing,
            )
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    correct = 0
    # A seeded sample is enough to show the fit; scoring all rows doubled training time.
    sample = rng.sample(data, min(len(data), 2000))
    with torch.inference_mode():
        for i in range(0, len(sample), 128):
            batch = sample[i : i + 128]
            enc = tokenizer(
                [t for t, _ in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            pred = model(**enc).logits.argmax(-1).tolist()
            correct += sum(int(p == y) for p, (_, y) in zip(pred, batch, strict=True))
    return {"train_accuracy": correct / max(len(sample), 1), "steps": float(step)}


def train_all(options: TrainOptions, *, threads: int = 2) -> dict[str, dict[str, float]]:
    """Train the intent and violation models from ``options.train_file`` + the dev pool."""
    import torch

    torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    raw = options.train_file.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    rows = list(read_jsonl(options.train_file))
    dev_rows = [
        row
        for path in options.dev_files
        for row in read_jsonl(path)
        if row["text"] not in options.dev_exclude
    ]
    for path in options.dev_files:
        digest = hashlib.sha256(digest.encode() + path.read_bytes()).hexdigest()
    recipe = f"dev x{options.dev_weight}"
    digest = hashlib.sha256(digest.encode() + recipe.encode()).hexdigest()
    rows += dev_rows * max(options.dev_weight, 0)
    results: dict[str, dict[str, float]] = {}
    specs = {
        "intent": (INTENTS, "siyu-intent-charbert"),
        "violation": ((NO_VIOLATION, *CATEGORIES), "siyu-violation-charbert"),
    }
    for kind in options.kinds:
        labels, name = specs[kind]
        examples = _examples(rows, kind)
        target = options.output_dir / kind
        # Train beside the target and swap at the end: an interrupted training leaves the
        # model that was there, never a half-written or emptied directory.
        staging = target.with_name(f".{kind}.training")
        shutil.rmtree(staging, ignore_errors=True)
        if options.ensemble <= 1:
            results[kind] = train_classifier(
                examples, labels, staging, name=name, options=options, corpus_digest=digest
            )
        else:
            members = []
            for offset in range(options.ensemble):
                seed = options.seed + offset
                member = f"seed-{seed}"
                results[f"{kind}/{member}"] = train_classifier(
                    examples,
                    labels,
                    staging / member,
                    name=name,
                    options=replace(options, seed=seed),
                    corpus_digest=digest,
                )
                members.append(member)
            (staging / ENSEMBLE_FILE).write_text(
                json.dumps({"members": members}, indent=1) + "\n", encoding="utf-8"
            )
        _swap_in(staging, target)
    return results


def _swap_in(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
