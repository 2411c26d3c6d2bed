"""Typed adapter over jieba (untyped), loaded lazily with the finance dictionary.

jieba is only consulted for short ambiguous terms (保本 inside 确保本人), never on the
hot path of every message: a full segmentation pass costs more than the whole rule layer.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from compliance_nlp.rules import RULES_DIR

__all__ = ["boundaries", "tokenizer", "warm"]

_lock = threading.Lock()


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    with _lock:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        tok = jieba.Tokenizer()
        tok.initialize()
        tok.load_userdict(str(RULES_DIR / "finance_words.txt"))
        return tok


def warm() -> None:
    tokenizer().lcut("预热分词器")


@lru_cache(maxsize=4096)
def boundaries(clause: str) -> frozenset[int]:
    """Character offsets in ``clause`` where jieba places a word boundary."""
    pos = 0
    out = {0}
    for word in tokenizer().lcut(clause, HMM=False):
        pos += len(word)
        out.add(pos)
    return frozenset(out)
