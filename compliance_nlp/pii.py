"""Personal data detection and masking.

《个人信息保护法》第二十八条 makes ID numbers and financial accounts *sensitive* personal
information, and 第五十一条 requires de-identification where it serves the purpose: the
clear-text copy of every message keeps only the masked form. Detection is deliberately
strict (checksums, BIN prefixes, label context) because masking an amount, a policy number
or a stock code destroys what a compliance reviewer needs to read. The context words (labels
of business numbers and cards, units of amounts, mask tags) are data: ``rules/pii.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from compliance_nlp.rules import RuleDataError, load_json

__all__ = [
    "MASK_STYLES",
    "PiiMatch",
    "PiiType",
    "PiiWords",
    "find_pii",
    "load_pii_words",
    "mask_pii",
    "mask_span",
    "without_pii",
]

PiiType = Literal["id_card", "bank_card", "phone", "email"]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_ID_RE = re.compile(
    r"(?<![0-9a-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dx](?![0-9a-z])",
    re.I,
)
# Digits possibly grouped by spaces or dashes, as people type card numbers.
_CARD_RE = re.compile(r"(?<![0-9a-z\-])[3-6]\d{3}(?:[ \-]?\d){12,15}(?![0-9a-z])", re.I)
# A Latin letter before the digits usually makes them a code (HT13800…); a lone WeChat
# or phone marker does not: 「加我V13521619354」 is a phone number used as a WeChat id.
_PHONE_RE = re.compile(
    r"(?:(?<![0-9a-z+\-])|(?<=(?<![a-z])[vw])|(?<=(?<![a-z])[vw]x)|(?<=(?<![a-z])tel))"
    r"(?:(?:\+|00)?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?![0-9])",
    re.I,
)
_EMAIL_RE = re.compile(
    r"[a-z0-9][a-z0-9._%+\-]{0,63}@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}", re.I
)
_QUICK_RE = re.compile(r"\d{3}[ \-]?\d{4}|@")


def _alternation(words: object, key: str) -> str:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise RuleDataError(f"pii.json: {key!r} must be a non-empty list of words")
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@dataclass(frozen=True, slots=True)
class PiiWords:
    """The context words of ``rules/pii.json``, compiled (see its note for each)."""

    business_label: re.Pattern[str]
    amount_suffix: re.Pattern[str]
    card_label: re.Pattern[str]
    mask_tags: dict[str, str]


@lru_cache(maxsize=1)
def load_pii_words() -> PiiWords:
    """Compile ``rules/pii.json``; ``Analyzer`` calls it at start-up so a typo fails there."""
    data = load_json("pii.json")
    tags = data.get("mask_tags")
    if not isinstance(tags, dict) or set(tags) != set(get_args(PiiType)):
        raise RuleDataError(f"pii.json: 'mask_tags' must name exactly {get_args(PiiType)}")
    business = _alternation(data.get("business_number_labels"), "business_number_labels")
    units = _alternation(data.get("amount_units"), "amount_units")
    cards = _alternation(data.get("card_labels"), "card_labels")
    return PiiWords(
        # Anchored at the end of the 8 characters before the number: the label introduces it.
        business_label=re.compile(rf"(?:{business})[号码：:\s#.]*$", re.I),
        amount_suffix=re.compile(rf"\s*(?:{units})"),
        card_label=re.compile(rf"(?:{cards})[号码是为：:\s]*$"),
        mask_tags={str(k): str(v) for k, v in tags.items()},
    )


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """A span of personal data in the original text (value deliberately not kept)."""

    type: PiiType
    start: int
    end: int

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type, "start": self.start, "end": self.end}


def _id_checksum_ok(number: str) -> bool:
    """GB 11643-1999 check digit: catches most 18-digit business numbers."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _labelled_business_number(words: PiiWords, text: str, start: int) -> bool:
    return words.business_label.search(text[max(0, start - 8) : start]) is not None


def find_pii(text: str) -> list[PiiMatch]:
    """Find ID numbers, bank cards, mobile phones and emails in ``text``.

    ``text`` must already be width-folded (``normalize.translate_chars``), which keeps
    offsets identical to the original while letting full-width digits match.
    """
    if _QUICK_RE.search(text) is None:
        return []
    words = load_pii_words()
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e in taken)

    for m in _EMAIL_RE.finditer(text):
        found.append(PiiMatch("email", m.start(), m.end()))
        taken.append(m.span())
    for m in _ID_RE.finditer(text):
        if free(*m.span()) and _id_checksum_ok(m.group(0)):
            found.append(PiiMatch("id_card", m.start(), m.end()))
            taken.append(m.span())
    for m in _CARD_RE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if not (16 <= len(digits) <= 19) or not free(*m.span()):
            continue
        labelled_card = words.card_label.search(text[max(0, m.start() - 8) : m.start()]) is not None
        if not labelled_card and _labelled_business_number(words, text, m.start()):
            continue
        # UnionPay (62), Visa (4), Mastercard (5), Amex/JCB (3) and domestic debit (6xxx).
        if _luhn_ok(digits) and (labelled_card or digits[0] in "3456"):
            found.append(PiiMatch("bank_card", m.start(), m.end()))
            taken.append(m.span())
    for m in _PHONE_RE.finditer(text):
        if not free(*m.span()):
            continue
        if words.amount_suffix.match(text, m.end()) or _labelled_business_number(
            words, text, m.start()
        ):
            continue
        found.append(PiiMatch("phone", m.start(), m.end()))
        taken.append(m.span())
    found.sort(key=lambda p: p.start)
    return found


# style -> type -> (keep head digits, keep tail digits); "tag" replaces the whole span.
MASK_STYLES: dict[str, dict[str, tuple[int, int]]] = {
    "default": {"phone": (3, 4), "bank_card": (3, 4), "id_card": (6, 4), "email": (1, 0)},
    "strict": {"phone": (0, 4), "bank_card": (0, 4), "id_card": (0, 4), "email": (0, 0)},
    "full": {"phone": (0, 0), "bank_card": (0, 0), "id_card": (0, 0), "email": (0, 0)},
}


def _mask_digits(span: str, head: int, tail: int, core_len: int | None = None) -> str:
    positions = [i for i, ch in enumerate(span) if ch.isalnum()]
    if core_len is not None and len(positions) > core_len:
        # +86 country prefix: counted before the national number, always kept.
        prefix = len(positions) - core_len
        positions = positions[prefix:]
    keep = set(positions[:head]) | (set(positions[-tail:]) if tail else set())
    return "".join("*" if i in positions and i not in keep else ch for i, ch in enumerate(span))


def _mask_email(span: str, head: int) -> str:
    local, _, domain = span.partition("@")
    return local[:head] + "*" * max(3, len(local) - head) + "@" + domain


def mask_pii(text: str, matches: list[PiiMatch], style: str = "default") -> str:
    """Return ``text`` with each match masked in ``style`` (default/strict/full/tag)."""
    if not matches:
        return text
    if style != "tag" and style not in MASK_STYLES:
        raise ValueError(f"unknown mask style {style!r}")
    out: list[str] = []
    pos = 0
    for m in matches:
        out.append(text[pos : m.start])
        span = text[m.start : m.end]
        if style == "tag":
            out.append(load_pii_words().mask_tags[m.type])
        else:
            head, tail = MASK_STYLES[style][m.type]
            if m.type == "email":
                out.append(_mask_email(span, head))
            else:
                out.append(_mask_digits(span, head, tail, 11 if m.type == "phone" else None))
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


def mask_span(
    text: str, matches: Sequence[PiiMatch], start: int, end: int, style: str = "default"
) -> str:
    """``text[start:end]`` as a reviewer may see it at rest: personal data masked.

    Evidence is cut from a message's original text, and a rule's span often reaches into
    a number (「身份证110101…发我」). The span is widened to every match it touches so a
    number is masked whole — a masked half would still leave digits in clear.
    """
    touching = [m for m in matches if m.start < end and start < m.end]
    if not touching:
        return text[start:end]
    lo = min(start, *(m.start for m in touching))
    hi = max(end, *(m.end for m in touching))
    shifted = [PiiMatch(m.type, m.start - lo, m.end - lo) for m in touching]
    return mask_pii(text[lo:hi], sorted(shifted, key=lambda m: m.start), style)


def without_pii(text: str, matches: Iterable[PiiMatch]) -> str:
    """``text`` with every span of personal data cut out; overlapping spans cut once.

    What the intent model reads, in training (labelled spans) and at inference (found
    spans) alike, through ``model.model_text``: a phone, card or ID number carries no
    intent, and a long digit run drowned the words of short messages (「我电话139…你存
    一下，改天请你喝茶」 read as account_service).
    """
    parts: list[str] = []
    last = 0
    for match in sorted(matches, key=lambda m: m.start):
        parts.append(text[last : match.start])
        last = max(last, match.end)
    parts.append(text[last:])
    return "".join(parts)
