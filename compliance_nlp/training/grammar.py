"""Paraphrase grammar: one concept, many surface forms (third pass of the corpus).

The second blind set (now dev4) showed the model still knew *phrasings*: it was right
about lines close to the phrasebook and confidently wrong about ordinary service chat
(「好的收到，我下午给您回个电话」 read as off-book dealing at 0.99). So each concept in
``phrases/grammar.json`` is a small grammar — who does it, to whom, which product, what
number, which register (plain, slang, pinyin initials, 「你懂的」 winks, emoji) — and
every violating concept has a *negated/warned/asked* twin built from the same slots, so
the words alone never decide the label: the frame around them does. Ordinary service
chat (schedules, card expiry, claim progress, product facts with numbers) is generated in
bulk as the clean class, because that is most of what advisors send.

None of these lines is a dev-set line; dev misses were read as concepts, and each
concept is expressed through slots that no annotator wrote. The phrases are data
(``phrases/grammar.json``); this module only composes them, in a fixed order of random
draws, so the same seed gives the same lines.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["clean_lines", "customer_lines", "violation_lines"]

Slots = dict[str, list[str]]

_DATA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "phrases" / "grammar.json").read_text(encoding="utf-8")
)
S: Slots = _DATA["shared_slots"]
# category -> its templates ("t") and its own slots; {slot} names not among them come
# from ``S``.
V: dict[str, Slots] = _DATA["violations"]
# Frames that make a violating concept clean: refused, warned against, quoted, asked.
NEGATED_FRAMES: list[str] = _DATA["negated_frames"]
CLEAN: Slots = _DATA["clean"]
CUSTOMER: dict[str, Slots] = _DATA["customer"]
# Numbers that carry no intent (order numbers, hotlines, amounts, card tails): without
# them the model read any digit run as account_service.
NUMBER_ASIDES: list[str] = _DATA["number_asides"]
_ASIDE_WECHAT_IDS: list[str] = _DATA["aside_wechat_ids"]
_CUSTOMER_ENDINGS: list[str] = _DATA["customer_endings"]
_WINKS: tuple[str, ...] = tuple(_DATA["winks"])
_EVADE_SEP: list[str] = _DATA["evasion_separators"]


def _expand(template: str, slots: Slots, rng: random.Random) -> str:
    def pick(m: re.Match[str]) -> str:
        key = m.group(1)
        options = slots.get(key) or S.get(key)
        if options is None:
            return m.group(0)
        return rng.choice(options)

    # Two passes: slot values may themselves contain shared slots ({me}, {you}).
    out = re.sub(r"\{(\w+)\}", pick, template)
    return re.sub(r"\{(\w+)\}", pick, out)


def _decorate(text: str, rng: random.Random, *, evade: bool) -> str:
    # Clean lines never get the conspiratorial hedges: on a real line they *are* signal.
    opens = S["open"] if evade else [o for o in S["open"] if not o.startswith(_WINKS)]
    ends = S["end"] if evade else [e for e in S["end"] if not any(w in e for w in _WINKS)]
    emoji = S["emoji"] if evade else [e for e in S["emoji"] if e not in _WINKS]
    text = rng.choice(opens) + text + rng.choice(ends) + rng.choice(emoji)
    if evade and rng.random() < 0.15:
        # Separators inside a short run: 保.本, 双 录 — the evasion the normaliser folds.
        i = rng.randrange(max(1, len(text) - 2))
        sep = rng.choice(_EVADE_SEP)
        text = text[:i] + sep.join(text[i : i + 3]) + text[i + 3 :]
    return text


def violation_lines(rng: random.Random, per_category: int) -> list[tuple[str, str]]:
    """(text, category) pairs, ``per_category`` for each category."""
    out: list[tuple[str, str]] = []
    for category, slots in V.items():
        for _ in range(per_category):
            core = _expand(rng.choice(slots["t"]), slots, rng)
            out.append((_decorate(core, rng, evade=True), category))
    return out


def clean_lines(rng: random.Random, n_service: int, n_negated: int) -> list[str]:
    """Service chat plus the violating concepts refused, warned against or quoted."""
    out = [
        _decorate(_expand(rng.choice(CLEAN["t"]), CLEAN, rng), rng, evade=False)
        for _ in range(n_service)
    ]
    cats = list(V)
    for _ in range(n_negated):
        slots = V[rng.choice(cats)]
        core = _expand(rng.choice(slots["t"]), slots, rng).rstrip("，。！")
        out.append(_expand(rng.choice(NEGATED_FRAMES), {"core": [core]}, rng))
    return out


def _aside(rng: random.Random) -> str:
    return _expand(
        rng.choice(NUMBER_ASIDES),
        {
            "d": [str(rng.randrange(10**5, 10**7))],
            "t": [str(rng.randrange(1000, 9999))],
            "w": _ASIDE_WECHAT_IDS,
        },
        rng,
    )


def customer_lines(rng: random.Random, per_intent: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pick: Callable[[list[str]], str] = rng.choice
    for intent, slots in CUSTOMER.items():
        for _ in range(per_intent):
            text = _expand(pick(slots["t"]), slots, rng)
            if rng.random() < 0.25:
                text = _aside(rng) + text
            out.append((text + pick(_CUSTOMER_ENDINGS), intent))
    return out
