"""An institution's lexicon overlay: its terms, exceptions and rewordings over the shipped rules.

The shipped rules (``rules/*.json``) stay the base and change only with a release; what
an institution's compliance team adds lives elsewhere (siyu keeps it in its database)
and reaches the analyzer as data, an ``Overlay``. ``apply_overlay`` returns a new
``RuleSet``: the base untouched, so an upgrade brings new shipped rules and the overlay
still applies over them.

The document (``format`` 1)::

    {
      "format": 1,
      "segments": ["bank", "insurance"],        # the packs this institution runs
      "bases": {"INST_1": "《…》第…条：…"},       # its own regulatory bases
      "terms": [{"id": "INST-12", "term": "稳赚宝", "category": "guaranteed_return",
                 "basis": "ZGXG_19", "severity": "violation", "segment": "",
                 "suggestion": "…"}],
      "exceptions": [{"id": "EXC-3", "phrase": "稳赢增利", "categories": [],
                      "segment": ""}],
      "suggestions": {"by_term": {}, "by_rule": {"GR-001": "…"}, "by_category": {}}
    }

A term is its own rule (its ``id`` is the finding's ``rule_id``) with the shipped rules'
clause checks: negation (「本产品不保本」), refutation, quotation and questions; a term of
one or two characters must also be a word of its clause (jieba), as the shipped short
terms are. An exception drops every rule finding whose span lies inside one of its
occurrences (of its categories; all when none are named), and the violation model reads
the line with the phrase blanked out — a product named 稳赢增利 is a name, not a
promise. An entry whose ``segment`` is not among ``segments`` is not applied; ``""``
applies to every institution.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from compliance_nlp.normalize import normalize
from compliance_nlp.rules import (
    CATEGORIES,
    SEVERITIES,
    ExceptionPhrase,
    Rule,
    RuleDataError,
    RuleSet,
    Suggestions,
)

__all__ = [
    "OVERLAY_FORMAT",
    "SEGMENTS",
    "Overlay",
    "OverlayError",
    "apply_overlay",
    "check_overlay",
    "normalize_term",
]

OVERLAY_FORMAT = 1
#: The institution types a pack is written for: 银行, 证券/基金, 保险, 消费金融.
SEGMENTS: tuple[str, ...] = ("bank", "securities", "insurance", "consumer_finance")
MAX_TERM_CHARS = 40
# Terms this short are matched only where jieba cuts them as a word (保本 in 确保本人
# is not 保本), as the shipped rules' ``boundary_terms`` are.
_WORD_ALIGNED_CHARS = 2


class OverlayError(RuleDataError):
    """The overlay document is malformed; every problem is listed, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a pool worker, it crosses back to the caller by pickle.
        return (OverlayError, (self.problems,))


@dataclass(frozen=True)
class Overlay:
    """One published overlay: its version (the institution's) and its document.

    Hashable and small, so the analyzer pool hands it to worker processes with each
    batch and a worker rebuilds its rules only when the version it holds is another.
    """

    version: str
    document: str = field(repr=False)

    @classmethod
    def from_data(cls, version: str, data: Mapping[str, Any]) -> Overlay:
        text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return cls(version=version, document=text)

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.document)
        return value if isinstance(value, dict) else {}

    @property
    def key(self) -> str:
        """Version and content together: a rebuilt document under an old number still counts."""
        digest = hashlib.sha256(self.document.encode()).hexdigest()[:16]
        return f"{self.version}:{digest}"


def normalize_term(text: str) -> str:
    """A term or phrase as the rules see text: simplified, half width, lower case, no separators."""
    return normalize(text.strip()).text.strip()


def _str_list(value: object) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return list(value)


def check_overlay(data: object, base: RuleSet) -> list[str]:
    """Every problem of an overlay document (none: it applies); no side effects."""
    if not isinstance(data, dict):
        return ["overlay: must be an object"]
    problems: list[str] = []
    if data.get("format", OVERLAY_FORMAT) != OVERLAY_FORMAT:
        problems.append(f"format: {data.get('format')!r} is not {OVERLAY_FORMAT}")
    segments = _str_list(data.get("segments", []))
    if segments is None:
        problems.append("segments: must be a list of strings")
    else:
        problems += [f"segments: unknown segment {s!r}" for s in segments if s not in SEGMENTS]
    bases = data.get("bases", {})
    if not isinstance(bases, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in bases.items()
    ):
        problems.append("bases: must map a key to its text")
        bases = {}
    known_bases = set(base.bases) | set(bases)
    ids: set[str] = {r.id for r in base.rules}
    terms = data.get("terms", [])
    if not isinstance(terms, list):
        problems.append("terms: must be a list")
        terms = []
    for i, entry in enumerate(terms):
        where = f"terms[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        rid = entry.get("id")
        if not isinstance(rid, str) or not rid:
            problems.append(f"{where}: id missing")
        elif rid in ids:
            problems.append(f"{where}: id {rid!r} is already a rule's")
        else:
            ids.add(rid)
        term = entry.get("term")
        if not isinstance(term, str) or not normalize_term(term):
            problems.append(f"{where}: term is empty")
        elif len(normalize_term(term)) > MAX_TERM_CHARS:
            problems.append(f"{where}: term longer than {MAX_TERM_CHARS} characters")
        if entry.get("category") not in CATEGORIES:
            problems.append(f"{where}: unknown category {entry.get('category')!r}")
        if entry.get("severity", "violation") not in SEVERITIES:
            problems.append(f"{where}: unknown severity {entry.get('severity')!r}")
        if entry.get("basis") not in known_bases:
            problems.append(f"{where}: unknown basis {entry.get('basis')!r}")
        if entry.get("segment", "") not in ("", *SEGMENTS):
            problems.append(f"{where}: unknown segment {entry.get('segment')!r}")
        if not isinstance(entry.get("suggestion", ""), str):
            problems.append(f"{where}: suggestion must be text")
    exceptions = data.get("exceptions", [])
    if not isinstance(exceptions, list):
        problems.append("exceptions: must be a list")
        exceptions = []
    for i, entry in enumerate(exceptions):
        where = f"exceptions[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        phrase = entry.get("phrase")
        if not isinstance(phrase, str) or not normalize_term(phrase):
            problems.append(f"{where}: phrase is empty")
        elif len(normalize_term(phrase)) > MAX_TERM_CHARS:
            problems.append(f"{where}: phrase longer than {MAX_TERM_CHARS} characters")
        cats = _str_list(entry.get("categories", []))
        if cats is None:
            problems.append(f"{where}: categories must be a list")
        else:
            problems += [f"{where}: unknown category {c!r}" for c in cats if c not in CATEGORIES]
        if entry.get("segment", "") not in ("", *SEGMENTS):
            problems.append(f"{where}: unknown segment {entry.get('segment')!r}")
    suggestions = data.get("suggestions", {})
    if not isinstance(suggestions, dict):
        problems.append("suggestions: must be an object")
    else:
        for part in ("by_term", "by_rule", "by_category"):
            value = suggestions.get(part, {})
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                problems.append(f"suggestions.{part}: must map text to text")
    return problems


def _applies(entry: Mapping[str, Any], segments: set[str]) -> bool:
    segment = str(entry.get("segment", "") or "")
    return not segment or segment in segments


def _term_rule(entry: Mapping[str, Any]) -> Rule:
    term = normalize_term(str(entry["term"]))
    return Rule(
        id=str(entry["id"]),
        category=str(entry["category"]),
        severity=str(entry.get("severity", "violation")),
        basis=str(entry["basis"]),
        description=str(entry.get("description", "")),
        terms=(term,),
        patterns=(),
        triggers=(),
        boundary_terms=frozenset({term}) if len(term) <= _WORD_ALIGNED_CHARS else frozenset(),
        exempt_context=(),
        exempt_all=(),
        question_exempt=bool(entry.get("question_exempt", True)),
        negatable=bool(entry.get("negatable", True)),
        evasion_severity=None,
    )


def apply_overlay(base: RuleSet, overlay: Overlay) -> RuleSet:
    """``base`` with ``overlay`` over it; raises ``OverlayError`` listing every problem."""
    data = overlay.data
    problems = check_overlay(data, base)
    if problems:
        raise OverlayError(problems)
    segments = set(data.get("segments", []))
    bases = {**base.bases, **{str(k): str(v) for k, v in data.get("bases", {}).items()}}
    terms = [e for e in data.get("terms", []) if _applies(e, segments)]
    rules = base.rules + tuple(_term_rule(e) for e in terms)
    by_term = dict(base.suggestions.by_term)
    for entry in terms:
        if str(entry.get("suggestion", "")).strip():
            by_term[normalize_term(str(entry["term"]))] = str(entry["suggestion"]).strip()
    extra = data.get("suggestions", {})
    suggestions = Suggestions(
        by_term={**by_term, **{normalize_term(k): v for k, v in extra.get("by_term", {}).items()}},
        by_rule={**base.suggestions.by_rule, **extra.get("by_rule", {})},
        by_category={**base.suggestions.by_category, **extra.get("by_category", {})},
    )
    exceptions = base.exceptions + tuple(
        ExceptionPhrase(
            phrase=normalize_term(str(e["phrase"])),
            categories=frozenset(str(c) for c in e.get("categories", [])),
        )
        for e in data.get("exceptions", [])
        if _applies(e, segments)
    )
    return replace(
        base,
        version=f"{base.version} / overlay {overlay.version}",
        rules=rules,
        bases=bases,
        suggestions=suggestions,
        exceptions=exceptions,
    )
