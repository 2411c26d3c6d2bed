"""Checks on a labelled JSONL file (development pool, blind sets, a bank's own sample).

A labelled file is only worth measuring against if its labels are well formed: names
from the taxonomy, PII spans that are exactly a valid number (an ID with a wrong check
digit is not an ID, a card that fails Luhn is not a card), no duplicate lines. The same
check runs for annotators (``python -m compliance_nlp.labels FILE``) and in the suite,
over every labelled file the project ships.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from compliance_nlp.pii import _id_checksum_ok, _luhn_ok
from compliance_nlp.rules import CATEGORIES
from compliance_nlp.types import INTENTS, SENTIMENTS

__all__ = ["check_labels"]

_PHONE = re.compile(r"(?:\+?86)?1[3-9]\d{9}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _pii_error(kind: object, span: str) -> str | None:
    digits = re.sub(r"[\s\-]", "", span)
    if kind == "phone":
        ok = _PHONE.fullmatch(digits) is not None
    elif kind == "id_card":
        ok = re.fullmatch(r"\d{17}[\dXx]", digits) is not None and _id_checksum_ok(digits.upper())
    elif kind == "bank_card":
        ok = re.fullmatch(r"\d{16,19}", digits) is not None and _luhn_ok(digits)
    elif kind == "email":
        ok = _EMAIL.fullmatch(span) is not None
    else:
        return f"unknown pii type {kind!r}"
    return None if ok else f"{kind} span {span!r} is not a valid {kind}"


def check_labels(path: str | Path, *, unique: bool = True) -> tuple[list[str], Counter[str]]:
    """Errors (``"line N: …"``) and label counts for one labelled JSONL file.

    ``unique=False`` allows a text twice (the generated corpus repeats short service
    lines on purpose); a hand-written set must not, or one line would count twice.
    """
    errors: list[str] = []
    counts: Counter[str] = Counter()
    texts: set[str] = set()
    ids: set[object] = set()
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {n}: not JSON ({exc})")
                continue
            counts["lines"] += 1
            seen = (texts, ids) if unique else None
            if isinstance(row, dict) and "turns" in row:
                errors.extend(f"line {n}: {e}" for e in _thread_errors(row, seen, counts))
            else:
                errors.extend(f"line {n}: {e}" for e in _row_errors(row, seen, counts))
    return errors, counts


def _thread_errors(
    row: dict[str, object],
    seen: tuple[set[str], set[object]] | None,
    counts: Counter[str],
) -> list[str]:
    """A thread (``ANNOTATION_THREADS.md``): each turn checked as a line, plus ``because``.

    Short turns (「好的」, 「是的👌」) recur across threads on purpose, so uniqueness is of
    the whole thread, not of its turns.
    """
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns:
        return ["turns must be a non-empty list"]
    out: list[str] = []
    if seen is not None:
        texts, ids = seen
        key = "\x1f".join(str(t.get("text")) if isinstance(t, dict) else "" for t in turns)
        if key in texts:
            out.append("duplicate thread")
        texts.add(key)
        if row.get("id") in ids:
            out.append(f"duplicate id {row.get('id')!r}")
        ids.add(row.get("id"))
    counts["threads"] += 1
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            out.append(f"turn {i}: not an object")
            continue
        line = {"violations": [], "intent": None, **turn}
        out.extend(f"turn {i}: {e}" for e in _row_errors(line, None, counts))
        for v in turn.get("violations") or []:
            because = v.get("because") if isinstance(v, dict) else None
            if because is None:
                counts["violation:line_visible"] += 1
            elif isinstance(because, int) and 0 <= because < i:
                counts["violation:context_only"] += 1
            else:
                out.append(f"turn {i}: because must be null or an earlier turn, got {because!r}")
    return out


def _row_errors(
    row: dict[str, object],
    seen: tuple[set[str], set[object]] | None,
    counts: Counter[str],
) -> list[str]:
    out: list[str] = []
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["empty or missing text"]
    if seen is not None:
        texts, ids = seen
        if text in texts:
            out.append("duplicate text")
        texts.add(text)
        if row.get("id") in ids:
            out.append(f"duplicate id {row.get('id')!r}")
        ids.add(row.get("id"))
    violations = row.get("violations")
    pii = row.get("pii")
    if not isinstance(violations, list) or not isinstance(pii, list):
        return [*out, "violations and pii must be lists"]
    role = row.get("role")
    if role == "advisor":
        if row.get("intent") is not None:
            out.append("advisor line with an intent")
        for v in violations:
            category = v.get("category") if isinstance(v, dict) else None
            if category not in CATEGORIES:
                out.append(f"unknown category {category!r}")
            counts[f"category:{category}"] += 1
        counts["advisor:violating" if violations else "advisor:clean"] += 1
    elif role == "customer":
        if violations:
            out.append("customer line with violations (the rules bind the seller)")
        intent = row.get("intent")
        if intent is not None and intent not in INTENTS:
            out.append(f"unknown intent {intent!r}")
        sentiment = row.get("sentiment")
        if sentiment is not None and sentiment not in SENTIMENTS:
            out.append(f"unknown sentiment {sentiment!r}")
        counts[f"intent:{intent}"] += 1
    else:
        out.append(f"role must be advisor or customer, got {role!r}")
    for span in pii:
        start, end = span.get("start"), span.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            out.append(f"pii offsets out of range: {span}")
            continue
        if (start and text[start - 1].isdigit()) or (end < len(text) and text[end].isdigit()):
            out.append(f"pii span cuts a run of digits: {text[start:end]!r}")
        error = _pii_error(span.get("type"), text[start:end])
        if error:
            out.append(error)
        counts[f"pii:{span.get('type')}"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = 0
    for name in args:
        errors, counts = check_labels(name)
        print(f"{name}: {counts['lines']} lines, {len(errors)} errors")
        for key in sorted(counts):
            print(f"  {key:32s} {counts[key]}")
        for error in errors:
            print(f"  ERROR {error}")
        status |= bool(errors)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
