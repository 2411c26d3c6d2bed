"""Generated (customer turn, advisor reply) pairs: the context corpus of the violation model.

Advisors rarely write a violation whole. 「是的👌」 after 「到期本金能拿回来吧？」 promises the
principal; after 「明天能到账吗？」 it is service. A model that only ever saw lines alone
cannot tell the two apart, so the violation model is also trained on pairs: the customer
turn the advisor answers, and the answer. Each category's questions meet

- replies that go along with them (a violation of the category the question names),
- refusals and corrections that name the forbidden thing (clean), and
- for questions about real deposits, state bonds and contractual rates, affirmations
  that are simply true (clean: 「到期本息都在」 after a question about a 定期存款),

and everyday requests meet the same short affirmatives (clean). The phrase lists are
data (``phrases/context.json``), written for this generator; nothing
here reads an annotator's file. Seeded: the same seed gives the same pairs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHRASES_FILE = Path(__file__).resolve().parent / "phrases" / "context.json"
NO_VIOLATION = "none"


@dataclass(frozen=True, slots=True)
class Pair:
    context: str  # the customer turn the advisor answers
    text: str  # the advisor's reply
    label: str  # a category, or "none"
    kind: str  # "affirm" | "refuse" | "fact" | "everyday"


def _fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    out = template
    for _ in range(4):
        if "{" not in out:
            break
        for name, values in slots.items():
            token = "{" + name + "}"
            while token in out:
                out = out.replace(token, rng.choice(values), 1)
    return out


def _decorate(text: str, rng: random.Random, tails: list[str]) -> str:
    """Chat texture: an optional tail (emoji, 语气词) so replies are not all bare."""
    if rng.random() < 0.35:
        return text + rng.choice(tails)
    return text


def generate_pairs(*, seed: int = 13, per_category: int = 420) -> list[Pair]:
    phrases: dict[str, Any] = json.loads(PHRASES_FILE.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    slots: dict[str, list[str]] = phrases["slots"]
    tails: list[str] = phrases["tails"]
    generic_yes: list[str] = phrases["generic_affirmatives"]
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()

    def add(context: str, text: str, label: str, kind: str) -> None:
        key = (context, text)
        if key in seen:
            return
        seen.add(key)
        out.append(Pair(context, text, label, kind))

    for category, spec in phrases["categories"].items():
        questions: list[str] = spec["questions"]
        specific: list[str] = spec["affirmatives"]
        no: list[str] = spec["refusals"]
        for _ in range(per_category):
            question = rng.choice(questions)
            # "!" marks an open question (「测评老是不合格」): a bare 「放心」 does not answer
            # it with a violation, so only the category's own replies go with it.
            yes = specific if question.startswith("!") else specific + generic_yes
            q = _fill(question.lstrip("!"), slots, rng)
            add(q, _decorate(_fill(rng.choice(yes), slots, rng), rng, tails), category, "affirm")
        for _ in range(per_category):
            q = _fill(rng.choice(questions).lstrip("!"), slots, rng)
            add(q, _decorate(_fill(rng.choice(no), slots, rng), rng, tails), NO_VIOLATION, "refuse")
    facts = phrases["facts"]
    for _ in range(per_category):
        spec = rng.choice(facts)
        q = _fill(rng.choice(spec["questions"]), slots, rng)
        answer = rng.choice(spec["answers"] + generic_yes[:12])
        add(q, _decorate(_fill(answer, slots, rng), rng, tails), NO_VIOLATION, "fact")
    everyday = phrases["everyday"]
    for _ in range(per_category * 2):
        spec = rng.choice(everyday)
        q = _fill(rng.choice(spec["questions"]), slots, rng)
        answer = rng.choice(spec["answers"] + generic_yes)
        add(q, _decorate(_fill(answer, slots, rng), rng, tails), NO_VIOLATION, "everyday")
    rng.shuffle(out)
    return out


def iter_rows(pairs: list[Pair]) -> Iterator[dict[str, Any]]:
    """Pairs as labelled rows (the line format with a one-turn ``context``)."""
    for p in pairs:
        yield {
            "text": p.text,
            "role": "advisor",
            "context": [{"role": "customer", "text": p.context}],
            "violations": [] if p.label == NO_VIOLATION else [{"category": p.label}],
            "kind": p.kind,
        }
