"""Generated (customer request, advisor reply) pairs for the pair model: request x stance.

A context-only violation is a request for something forbidden (a guaranteed principal,
a way round the risk test, a password handed over, money outside the books, a gift, a
tip, a rival run down, a product passed off as a deposit) met with a reply that goes
along with it: a short affirmation, acting on it, a workaround, the belief confirmed.
The same requests met with a refusal, a correction or a question back are clean, and
so are everyday service requests met with the very same affirmations and actions. The
generator crosses the vocabularies of ``phrases/pair_shapes.json`` (written for it from
the categories' definitions, never from an annotator's file) so the model learns the
request and the stance separately, not the phrasings of one writer.

Seeded: the same seed gives the same pairs. Only the pair model reads them
(``training.pair_train``); the line models' corpus (``training.pairs``) is unchanged.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from compliance_nlp.training.pairs import PHRASES_FILE, Pair, _decorate, _fill

SHAPES_FILE = Path(__file__).resolve().parent / "phrases" / "pair_shapes.json"
NO_VIOLATION = "none"

__all__ = ["SHAPES_FILE", "generate_shape_pairs", "templates"]


def _load() -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    shapes: dict[str, Any] = json.loads(SHAPES_FILE.read_text(encoding="utf-8"))
    base: dict[str, Any] = json.loads(PHRASES_FILE.read_text(encoding="utf-8"))
    slots = {**base["slots"], **shapes["slots"]}
    return shapes, slots, base["tails"]


def templates() -> list[str]:
    """Every request and reply template (for the test that none copies a labelled line)."""
    shapes, _, _ = _load()
    out: list[str] = []
    for key in ("generic_yes", "generic_act", "generic_refuse", "ask_back"):
        out += shapes[key]
    for spec in shapes["categories"].values():
        for key in ("requests", "go_along", "refuse"):
            out += [t.lstrip("!") for t in spec[key]]
    out += shapes["everyday"]["requests"] + shapes["everyday"]["replies"]
    return out


def _address(text: str, rng: random.Random, vocatives: list[str]) -> str:
    """Sometimes the customer is addressed (「能的阿姨」, 「确定的嘛姐」): after the
    reply's first clause, so a short answer is read through the name it carries."""
    if not vocatives or rng.random() >= 0.15:
        return text
    name = rng.choice(vocatives)
    head, sep, rest = text.partition("，")
    return f"{head}{name}{sep}{rest}" if sep else f"{text}{name}"


def generate_shape_pairs(*, seed: int = 13, per_category: int = 420) -> list[Pair]:
    shapes, slots, tails = _load()
    rng = random.Random(seed * 7919 + 1)
    yes: list[str] = shapes["generic_yes"]
    act: list[str] = shapes["generic_act"]
    no: list[str] = shapes["generic_refuse"]
    back: list[str] = shapes["ask_back"]
    vocatives: list[str] = slots.get("vocative", [])
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()

    def add(request: str, reply: str, label: str, kind: str) -> None:
        q = _fill(request.lstrip("!"), slots, rng)
        r = _decorate(_address(_fill(reply, slots, rng), rng, vocatives), rng, tails)
        if (q, r) not in seen:
            seen.add((q, r))
            out.append(Pair(q, r, label, kind))

    for category, spec in shapes["categories"].items():
        requests: list[str] = spec["requests"]
        own: list[str] = spec["go_along"]
        refusals: list[str] = spec["refuse"] + no
        for _ in range(per_category):
            request = rng.choice(requests)
            # A bare 「是的」 answers a question, not an open request (「测评老是不合格」).
            pool = own * 2 + act + ([] if request.startswith("!") else yes)
            add(request, rng.choice(pool), category, "affirm")
        for _ in range(per_category):
            request = rng.choice(requests)
            reply = rng.choice(back) if rng.random() < 0.15 else rng.choice(refusals)
            add(request, reply, NO_VIOLATION, "refuse")
    everyday = shapes["everyday"]
    for _ in range(per_category * 2):
        reply_pool = everyday["replies"] * 2 + yes + act[:8]
        add(rng.choice(everyday["requests"]), rng.choice(reply_pool), NO_VIOLATION, "everyday")
    rng.shuffle(out)
    return out
