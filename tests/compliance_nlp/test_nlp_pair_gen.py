"""Generated request x reply pairs of the pair model (``training.pair_gen``) and the
request words it crosses with the reply's stance (``requests`` in rules/stance.json).

The vocabularies are written from the categories' definitions: no template may be a
near copy of a labelled line (or cross-validation on that file would measure recall of
what was copied), and the pairs are seeded.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

import numpy as np

from compliance_nlp.normalize import normalize
from compliance_nlp.pair import Stance, pair_parts
from compliance_nlp.rules import CATEGORIES
from compliance_nlp.training.evaluate import read_jsonl
from compliance_nlp.training.pair_gen import generate_shape_pairs, templates
from compliance_nlp.training.pool import DATA_DIR

_SLOT = re.compile(r"\{[a-z]+\}")


def _labelled_lines() -> list[str]:
    out: set[str] = set()
    for path in sorted(DATA_DIR.glob("*.jsonl")):
        for row in read_jsonl(path):
            if isinstance(row.get("turns"), list):
                out.update(t["text"] for t in row["turns"])
            else:
                out.add(row["text"])
    return sorted(out)


def test_no_template_copies_a_labelled_line() -> None:
    lines = _labelled_lines()
    counts = [Counter(line) for line in lines]
    lengths = np.array([len(line) for line in lines])
    # Which lines hold each character: a template's characters summed over them bound
    # from above the characters it shares with every line at once, so only the lines
    # that bound lets through are compared one by one (the same checks, in the same order).
    holders: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        for char in set(line):
            holders.setdefault(char, []).append(i)
    index = {char: np.array(found) for char, found in holders.items()}
    copies = []
    for template in templates():
        core = _SLOT.sub("", template)
        if len(core) < 8:  # short chat (「好的，我查一下」) recurs in every conversation
            continue
        chars = Counter(core)
        bound = np.zeros(len(lines))
        for char, n in chars.items():
            if char in index:
                bound[index[char]] += n
        near = np.abs(lengths - len(core)) <= 12
        maybe = near & (2 * bound >= 0.8 * (len(core) + lengths))
        for i in np.flatnonzero(maybe):
            line, line_chars = lines[i], counts[i]
            # The characters shared bound the ratio (difflib's quick_ratio), cheaply.
            if 2 * sum((chars & line_chars).values()) < 0.8 * (len(core) + len(line)):
                continue
            m = SequenceMatcher(None, core, line, autojunk=False)
            if m.real_quick_ratio() >= 0.8 and m.quick_ratio() >= 0.8 and m.ratio() >= 0.8:
                copies.append((template, line))
                break
    assert copies == []


def test_pairs_are_seeded_and_cross_every_category_with_both_stances() -> None:
    a = generate_shape_pairs(seed=5, per_category=60)
    assert a == generate_shape_pairs(seed=5, per_category=60)
    assert a != generate_shape_pairs(seed=6, per_category=60)
    kinds = Counter((p.label, p.kind) for p in a)
    for category in CATEGORIES:
        assert kinds[(category, "affirm")] > 0, category
    assert kinds[("none", "refuse")] > 0 and kinds[("none", "everyday")] > 0
    assert {p.label for p in a} <= {"none", *CATEGORIES}
    assert not any("{" in p.context or "{" in p.text for p in a)  # every slot filled


def test_request_words_name_the_category_asked_about() -> None:
    stance = Stance.load()
    text = normalize("这个理财到期本金能拿回来吧").text
    assert "guaranteed_return" in stance.asks(text)
    assert "account_custody" in stance.asks(normalize("验证码发你了").text)
    assert stance.asks(normalize("明早几点开门").text) == []
    parts = pair_parts(text, "放心", "放心", stance)
    assert "qc:guaranteed_return" in parts.features
    assert "xc:guaranteed_return|assure" in parts.features
    assert "guaranteed_return" in parts.categories and "s:assure:放心" in parts.words
