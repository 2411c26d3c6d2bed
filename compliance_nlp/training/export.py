"""``siyu nlp export DIR``: write ``model.onnx`` beside a transformers checkpoint.

Serving then needs onnxruntime and the ``tokenizers`` library only (the base install);
torch and transformers stay in ``siyu[train]``, where this runs. ``siyu nlp train``
exports every model it trains; a bank's own fine-tuned checkpoint is exported once with
this command. An ensemble directory exports each member.

The graph is torch's TorchScript exporter's (plain ``torch.onnx.export``, no onnxscript),
with batch and sequence as dynamic axes. A BERT classifier (the shipped models, or a
bank's fine-tuned Chinese BERT) is exported as what the classifier reads of it: only the
last layer's ``[CLS]`` position. That layer still computes keys and values for every
token, but query, attention output and feed-forward for ``[CLS]`` alone: about a third
less work on the shipped two-layer models, for the same logits. Before the file is put
in place, the export is run on texts of several lengths (padded, truncated, with
``[SEP]``) and compared with the checkpoint run by torch as transformers runs it: a
graph that traced a shape as a constant, or computes other logits, is caught here, not
in production. The sha256 of the weights it came from is recorded in the graph's
metadata (``model.WEIGHTS_DIGEST_KEY``), so weights retrained after the export are
noticed when the model is loaded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from compliance_nlp.model import (
    MAX_TOKENS,
    ONNX_FILE,
    WEIGHTS_DIGEST_KEY,
    member_dirs,
    weights_digest,
)
from compliance_nlp.types import ModelLoadError

__all__ = ["ExportError", "export_onnx"]

# ONNX opset 17: LayerNormalization as one op; every onnxruntime of the last years runs it.
OPSET = 17
# Largest difference of logits between torch and the exported graph that is accepted:
# float32 kernels differ in summation order, never by more than this on these models.
TOLERANCE = 1e-4
# Probe texts: lengths from one character to past MAX_TOKENS, a pair joined by [SEP],
# so padding, truncation and the separator all take part in the check.
_PROBES = [
    "好",
    "保本保息，稳赚不赔",
    "您好，这款产品的业绩比较基准不代表实际收益[SEP]这个理财能保本吗？",
    "收益" * (MAX_TOKENS + 10),
    "abc 123 ＶＸ",
]


class ExportError(Exception):
    """The checkpoint cannot be exported, or its export does not compute what it does."""


def export_onnx(directory: Path) -> list[Path]:
    """Export every member of the model at ``directory``; returns the files written."""
    try:
        members = member_dirs(directory)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from exc
    return [_export_member(member) for member in members]


def _export_member(directory: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(directory), local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"cannot load the checkpoint at {directory}: {exc}") from exc
    model.eval()
    if not (directory / "tokenizer.json").is_file():
        # A checkpoint saved with only vocab.txt: the runtime reads tokenizer.json.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ExportError(f"{directory} has no tokenizer.json and no fast tokenizer")
        backend.save(str(directory / "tokenizer.json"))
    sample = tokenizer(
        _PROBES[:2], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    target = directory / ONNX_FILE
    staging = directory / f".{ONNX_FILE}.tmp"
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is the legacy one, and the tracer about
        # Python-side shape checks; the comparison below is what decides.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _cls_only_classifier(model, torch) if _is_plain_bert_classifier(model) else model,
            tuple(sample[n] for n in names),
            str(staging),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={
                **{n: {0: "batch", 1: "sequence"} for n in names},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        _record_digest(staging, weights_digest(directory))
        _compare(staging, tokenizer, model, torch)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.replace(target)
    return target


def _is_plain_bert_classifier(model: Any) -> bool:
    """A ``BertForSequenceClassification`` whose layers ``_cls_only_classifier`` knows.

    Anything else (another architecture, relative positions, a decoder) is exported as
    transformers runs it; either way the comparison with the checkpoint decides.
    """
    config = model.config
    return (
        type(model).__name__ == "BertForSequenceClassification"
        and config.model_type == "bert"
        and not config.is_decoder
        and not getattr(config, "add_cross_attention", False)
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and getattr(model.bert, "pooler", None) is not None
    )


def _cls_only_classifier(model: Any, torch: Any) -> Any:
    """The classifier's logits, with the last encoder layer computed for ``[CLS]`` only.

    ``BertForSequenceClassification`` pools the last hidden state of the first token:
    in the last layer every other position's query, attention, output projection and
    feed-forward are computed and thrown away. Here that layer attends from ``[CLS]``
    to every unpadded token (keys and values of all of them, as before) and the rest
    is the checkpoint's own modules. The padding mask is the additive mask transformers
    builds (the dtype's minimum on padded keys); dropout is off at inference.
    """

    class ClsOnlyClassifier(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.bert = model.bert
            self.classifier = model.classifier

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            padded = 1.0 - attention_mask[:, None, None, :].to(hidden.dtype)
            bias = padded * torch.finfo(hidden.dtype).min
            layers = self.bert.encoder.layer
            for layer in layers[:-1]:
                hidden = _bert_layer(layer, hidden, hidden, bias, torch)
            cls = _bert_layer(layers[-1], hidden[:, :1], hidden, bias, torch)[:, 0]
            pooler = self.bert.pooler
            return self.classifier(pooler.activation(pooler.dense(cls)))

    return ClsOnlyClassifier().eval()


def _bert_layer(layer: Any, queries: Any, hidden: Any, bias: Any, torch: Any) -> Any:
    """One ``BertLayer`` for the positions in ``queries``, attending over ``hidden``."""
    attention = layer.attention.self
    batch, heads = hidden.shape[0], attention.num_attention_heads
    size = attention.attention_head_size

    def split(x: Any) -> Any:  # (batch, positions, hidden) -> (batch, heads, positions, size)
        return x.reshape(batch, -1, heads, size).transpose(1, 2)

    q, k, v = (
        split(attention.query(queries)),
        split(attention.key(hidden)),
        split(attention.value(hidden)),
    )
    scaling = getattr(attention, "scaling", size**-0.5)  # older transformers keep none
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling + bias
    context = torch.matmul(torch.softmax(scores, dim=-1), v)
    context = context.transpose(1, 2).reshape(batch, -1, heads * size)
    out = layer.attention.output
    attended = out.LayerNorm(out.dense(context) + queries)
    ffn = layer.output
    return ffn.LayerNorm(ffn.dense(layer.intermediate(attended)) + attended)


def _record_digest(path: Path, digest: str | None) -> None:
    import onnx

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    if digest:
        entry = graph.metadata_props.add()
        entry.key, entry.value = WEIGHTS_DIGEST_KEY, digest
    onnx.save(graph, str(path))


def _compare(path: Path, tokenizer: Any, model: Any, torch: Any) -> None:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    # Each probe alone (no padding) and all together (padded), as the runtime batches.
    for batch in [[t] for t in _PROBES] + [_PROBES]:
        enc = tokenizer(
            batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            expected = model(**enc).logits.numpy()
        got = session.run(None, {n: enc[n].numpy() for n in inputs})[0]
        worst = float(np.abs(expected - got).max())
        if got.shape != expected.shape or worst > TOLERANCE:
            raise ExportError(
                f"the export of {path.parent} differs from the checkpoint by {worst:.2g} "
                f"on a batch of {len(batch)} (tolerance {TOLERANCE})"
            )
