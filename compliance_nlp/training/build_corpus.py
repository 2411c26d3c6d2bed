"""Build the *training* corpus (``data/train.jsonl``) from seeded templates.

    .venv/bin/python -m compliance_nlp.training.build_corpus

Deterministic (seed 20240601): the same phrase data gives the same bytes, and a test
holds ``data/train.jsonl`` to that. The labelled sets (the dev pool and the blind sets)
are NOT produced here: they were written by hand, by annotators who never saw these
phrases. ``train.py`` adds the dev pool to this corpus at training time (never a blind
set); nothing of them is copied into train.jsonl.

Three layers, each a data file in ``phrases/``: the original templates
(``templates.json``: per-category and per-intent templates, their slot fillers, PII and
non-PII lines), the concept phrasebook (``phrasebook.json``) wrapped in openers,
closers, a neutral sentence on either side and evasion spellings, with categories
balanced and hard negatives in proportion, so the model learns the concept rather than
the template, and the slot grammar (``grammar.py`` over ``grammar.json``: concept
paraphrases, their negated twins, service chat). Editing a phrase changes the corpus:
regenerate it and retrain (``siyu nlp train``).

Record shape (the ``siyu nlp analyze`` shape plus labels):
``{"id", "text", "role", "intent", "sentiment", "violations": [{"category"}],
"pii": [{"type","start","end"}]}``
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from compliance_nlp.training import grammar

SEED = 20240601
OUT = Path(__file__).resolve().parent / "data" / "train.jsonl"
PHRASES = Path(__file__).resolve().parent / "phrases"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PHRASES / name).read_text(encoding="utf-8"))
    return data


def _lines(groups: list[dict[str, Any]]) -> list[str]:
    """A phrasebook list: concept groups (with the why of each) flattened in order."""
    return [str(line) for group in groups for line in group["lines"]]


_TEMPLATES = _load("templates.json")
_PHRASEBOOK = _load("phrasebook.json")

SLOTS: dict[str, list[str]] = _TEMPLATES["slots"]
# The order in which ``_fill`` draws its slots is part of what the seed produces.
_FILL_ORDER = ("rel", "wx", "amt2", "p", "name", "b", "pct", "pt", "s", "gift", "amt", "date")
T: dict[str, list[str]] = _TEMPLATES["violations"]
CLEAN_ADVISOR: list[str] = _TEMPLATES["clean_advisor"]
CUSTOMER: dict[str, list[str]] = _TEMPLATES["customer"]
CUSTOMER_MORE: dict[str, list[str]] = _TEMPLATES["customer_more"]
PREFIXES: list[str] = _TEMPLATES["customer_prefixes"]
SUFFIXES: list[str] = _TEMPLATES["customer_suffixes"]
SENT: dict[str, str] = _TEMPLATES["sentiment_by_intent"]
NON_PII: list[str] = _TEMPLATES["non_pii"]
_EVASION: dict[str, list[str]] = _TEMPLATES["evasion"]
_PII_LINES: dict[str, list[str]] = _TEMPLATES["pii_lines"]
_EMAIL: dict[str, list[str]] = _TEMPLATES["email"]

VIOLATION_CORES: dict[str, list[str]] = {
    category: _lines(groups) for category, groups in _PHRASEBOOK["violation_cores"].items()
}
CLEAN_CORES: list[str] = _lines(_PHRASEBOOK["clean_cores"])
CUSTOMER_CORES: dict[str, list[str]] = {
    intent: _lines(groups) for intent, groups in _PHRASEBOOK["customer_cores"].items()
}
OPENERS: list[str] = _PHRASEBOOK["openers"]
CLOSERS: list[str] = _PHRASEBOOK["closers"]
NEUTRAL_SENTENCES: list[str] = _PHRASEBOOK["neutral_sentences"]
NEGATING_FRAMES: list[str] = _PHRASEBOOK["negating_frames"]


def _evasion(text: str, rng: random.Random) -> str:
    """Spell a violating line the way people dodge keyword filters."""
    import opencc

    choice = rng.randrange(5)
    if choice == 0:
        return str(opencc.OpenCC("s2t").convert(text))
    if choice == 1:
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if choice == 2:
        sep = rng.choice(_EVASION["separators"])
        chars = list(text)
        for i in range(len(chars) - 1, 0, -1):
            if (
                rng.random() < 0.3
                and "\u4e00" <= chars[i] <= "\u9fff"
                and "\u4e00" <= chars[i - 1] <= "\u9fff"
            ):
                chars.insert(i, sep)
        return "".join(chars)
    if choice == 3:
        return text + rng.choice(_EVASION["emoji"]) * rng.randint(1, 3) + "！！！"
    return text.replace("，", rng.choice(_EVASION["comma"]), 1)


def _fill(tpl: str, rng: random.Random) -> str:
    return tpl.format(**{slot: rng.choice(SLOTS[slot]) for slot in _FILL_ORDER})


def _phone(rng: random.Random) -> str:
    return rng.choice(["138", "139", "150", "186", "177", "199", "135"]) + "".join(
        str(rng.randrange(10)) for _ in range(8)
    )


def _luhn_complete(prefix: str) -> str:
    for d in range(10):
        digits = prefix + str(d)
        total = 0
        for i, ch in enumerate(reversed(digits)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return digits
    raise AssertionError


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["622202", "622848", "621700", "622588", "623668"])
    return _luhn_complete(prefix + "".join(str(rng.randrange(10)) for _ in range(18 - len(prefix))))


def _id_number(rng: random.Random) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    body = (
        rng.choice(["110101", "310104", "440106", "330102", "510107"])
        + f"{rng.randint(1955, 2003)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        + f"{rng.randint(0, 999):03d}"
    )
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def _pii_line(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    kind = rng.choice(["phone", "id_card", "bank_card", "email", "phone"])
    if kind == "phone":
        value = _phone(rng)
        if rng.random() < 0.3:
            value = f"{value[:3]}-{value[3:7]}-{value[7:]}"
        if rng.random() < 0.2:
            value = "+86 " + value
        tpl = rng.choice(_PII_LINES["phone"])
    elif kind == "id_card":
        value = _id_number(rng)
        tpl = rng.choice(_PII_LINES["id_card"])
    elif kind == "bank_card":
        value = _card(rng)
        tpl = rng.choice(_PII_LINES["bank_card"])
    else:
        value = rng.choice(_EMAIL["users"]) + "@" + rng.choice(_EMAIL["domains"])
        tpl = rng.choice(_PII_LINES["email"])
    text = tpl.format(v=value)
    start = text.index(value)
    return text, [{"type": kind, "start": start, "end": start + len(value)}]


# Per-category target for the phrasebook layer: categories with fewer concepts get more
# samples per core, so no category is learned as "rare".
_PER_CATEGORY = 520
_CLEAN_TOTAL = 3600
_NEGATED_TOTAL = 1200
_CUSTOMER_PER_INTENT = 420


def _wrap(core: str, rng: random.Random) -> str:
    """Opener/closer, sometimes a neutral sentence before or after the core."""
    text = _fill(rng.choice(OPENERS), rng) + core + rng.choice(CLOSERS)
    roll = rng.random()
    if roll < 0.15:
        text = _fill(rng.choice(NEUTRAL_SENTENCES), rng) + "，" + text
    elif roll < 0.25:
        text = text.rstrip("。！~") + "。" + _fill(rng.choice(NEUTRAL_SENTENCES), rng)
    return text


def _concept_rows(rng: random.Random, add: Any) -> None:
    for category, cores in VIOLATION_CORES.items():
        for k in range(_PER_CATEGORY):
            text = _wrap(_fill(cores[k % len(cores)], rng), rng)
            if rng.random() < 0.25:
                text = _evasion(text, rng)
            add(text, "advisor", violations=[{"category": category}])
    for k in range(_CLEAN_TOTAL):
        add(_wrap(_fill(CLEAN_CORES[k % len(CLEAN_CORES)], rng), rng), "advisor")
    all_cores = [c for cores in VIOLATION_CORES.values() for c in cores]
    for _ in range(_NEGATED_TOTAL):
        core = _fill(rng.choice(all_cores), rng).rstrip("。！")
        add(rng.choice(NEGATING_FRAMES).format(core=core), "advisor")
    for intent, cores in CUSTOMER_CORES.items():
        for k in range(_CUSTOMER_PER_INTENT):
            text = _fill(cores[k % len(cores)], rng)
            if intent != "chitchat" or rng.random() < 0.3:
                text = rng.choice(PREFIXES) + text.rstrip("？?") + rng.choice(SUFFIXES)
            add(text, "customer", intent=intent, sentiment=SENT.get(intent))


# Third pass (``grammar.py``): slot-composed paraphrases per concept, their negated
# twins, and ordinary service chat as the bulk of the clean class. Its own RNG, so the
# earlier layers generate exactly what they did before.
_GRAMMAR_PER_CATEGORY = 600
_GRAMMAR_SERVICE = 4000
_GRAMMAR_NEGATED = 1600
_GRAMMAR_PER_INTENT = 260


def _grammar_rows(rng: random.Random, add: Any) -> None:
    for text, category in grammar.violation_lines(rng, _GRAMMAR_PER_CATEGORY):
        add(text, "advisor", violations=[{"category": category}])
    for text in grammar.clean_lines(rng, _GRAMMAR_SERVICE, _GRAMMAR_NEGATED):
        add(text, "advisor")
    for text, intent in grammar.customer_lines(rng, _GRAMMAR_PER_INTENT):
        add(text, "customer", intent=intent, sentiment=SENT.get(intent))


def build(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []

    def add(text: str, role: str, **labels: Any) -> None:
        rows.append(
            {
                "id": f"t{len(rows):05d}",
                "text": text,
                "role": role,
                "intent": labels.get("intent"),
                "sentiment": labels.get("sentiment"),
                "violations": labels.get("violations", []),
                "pii": labels.get("pii", []),
            }
        )

    for category, templates in T.items():
        for tpl in templates:
            for _ in range(12):
                text = _fill(tpl, rng)
                if rng.random() < 0.3:
                    text = _evasion(text, rng)
                add(text, "advisor", violations=[{"category": category}])
    for tpl in CLEAN_ADVISOR:
        for _ in range(14):
            add(_fill(tpl, rng), "advisor")
    for intent, templates in CUSTOMER.items():
        for tpl in templates + CUSTOMER_MORE[intent]:
            for _ in range(8):
                text = _fill(tpl, rng)
                if intent != "chitchat" or rng.random() < 0.3:
                    text = rng.choice(PREFIXES) + text.rstrip("？?") + rng.choice(SUFFIXES)
                add(text, "customer", intent=intent, sentiment=SENT.get(intent))
    _concept_rows(rng, add)
    for _ in range(120):
        text, pii = _pii_line(rng)
        add(text, "customer", intent="account_service", pii=pii)
    for tpl in NON_PII:
        for _ in range(4):
            add(_fill(tpl, rng), rng.choice(["advisor", "customer"]))
    _grammar_rows(random.Random(seed + 1), add)
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
