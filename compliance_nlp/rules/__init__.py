"""Versioned rule data: lexicon, regulatory bases, cues, sentiment and intent keywords.

Rules live in JSON next to this file so compliance can review and version them without
reading Python; a bank can point ``load_ruleset`` at its own copy (``pii.json``, the
context words of PII detection, and ``pinyin.json``, evasive pinyin, are always read from
here). Loading validates the shape eagerly: a typo in a data file must fail at start-up,
not on the first message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "RULES_DIR",
    "Cues",
    "ExceptionPhrase",
    "Rule",
    "RuleDataError",
    "RuleSet",
    "Suggestions",
    "load_json",
    "load_ruleset",
]

RULES_DIR = Path(__file__).resolve().parent

CATEGORIES: tuple[str, ...] = (
    "guaranteed_return",
    "misleading_promotion",
    "off_book_dealing",
    "improper_inducement",
    "suitability_evasion",
    "account_custody",
    "insider_tip",
    "disparagement",
)
SEVERITIES: tuple[str, ...] = ("violation", "review")


class RuleDataError(ValueError):
    """A rule data file is malformed; raised at load time."""


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    category: str
    severity: str
    basis: str
    description: str
    terms: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    triggers: tuple[str, ...]
    boundary_terms: frozenset[str]
    exempt_context: tuple[re.Pattern[str], ...]
    exempt_all: tuple[tuple[re.Pattern[str], ...], ...]
    question_exempt: bool
    negatable: bool
    evasion_severity: str | None
    # A term right after one of these is another word: 企业微信 is the archived channel
    # the rule wants advisors to stay on, not the personal WeChat it warns about.
    not_after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cues:
    prefix_window: int
    suffix_window: int
    negators: tuple[str, ...]
    not_negation: tuple[str, ...]
    negation_barriers: tuple[str, ...]
    refutations: tuple[str, ...]
    # Found inside a matched span, these reverse it: a pattern reaching across
    # 「去年年化8%，但不代表以后也能」 matched the disclaimer itself.
    span_refutations: tuple[str, ...]
    # Read to the end of the sentence, past the clause: the named claim called a scam or
    # a breach of the rules (「有人私下跟您说能保本保息，那多半是非法集资」) — unless the
    # word is itself negated (「这不是骗局」).
    sentence_refutations: tuple[str, ...]
    quote_pairs: tuple[tuple[str, str], ...]
    report_cues: tuple[str, ...]
    question_marks: frozenset[str]
    question_particles: frozenset[str]
    clause_breaks: frozenset[str]
    # Stripped from a clause's end before looking for a question particle: 「保本吗呀」.
    question_fillers: str


@dataclass(frozen=True, slots=True)
class Suggestions:
    """Compliant rewordings (``suggestions.json``), most specific first: term, rule, category."""

    by_term: dict[str, str] = field(default_factory=dict)
    by_rule: dict[str, str] = field(default_factory=dict)
    by_category: dict[str, str] = field(default_factory=dict)

    def lookup(self, *, category: str, rule_id: str = "", term: str | None = None) -> str | None:
        if term is not None and term in self.by_term:
            return self.by_term[term]
        return self.by_rule.get(rule_id) or self.by_category.get(category) or None


@dataclass(frozen=True, slots=True)
class ExceptionPhrase:
    """A phrase never flagged (an institution's product name holding 稳赢, say).

    ``phrase`` is normalised like the text it is found in; an empty ``categories``
    means every category.
    """

    phrase: str
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    rules: tuple[Rule, ...]
    cues: Cues
    bases: dict[str, str] = field(default_factory=dict)
    category_bases: dict[str, str] = field(default_factory=dict)
    suggestions: Suggestions = field(default_factory=Suggestions)
    # From an institution's overlay (``compliance_nlp.overlay``); none in the shipped data.
    exceptions: tuple[ExceptionPhrase, ...] = ()

    def basis_text(self, key: str) -> str:
        return self.bases.get(key, key)

    def category_basis(self, category: str) -> str:
        return self.basis_text(self.category_bases.get(category, ""))


def load_json(name: str, directory: Path | None = None) -> dict[str, Any]:
    path = (directory or RULES_DIR) / name
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise RuleDataError(f"{path}: top level must be an object")
    return data


def _compile(patterns: list[str], where: str) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(p) for p in patterns)
    except re.error as exc:
        raise RuleDataError(f"{where}: bad pattern: {exc}") from exc


_CLAUSE_GAP = "[^，。！？；,!?;\\n]"
_SENTENCE_GAP = "[^。！？；!?;\\n]"


def _concept_patterns(raw: list[dict[str, Any]], where: str) -> tuple[list[str], list[str]]:
    """Compile concept co-occurrence families into patterns and their triggers.

    A flat lexicon knows sentences; a concept family knows *ways of saying a thing*: any
    word of each set, in order, within ``gap`` characters of the same clause (or of the
    same sentence with ``"scope": "sentence"``). 问卷/测评 × 选/勾/填 × 激进/最高 covers
    「问卷第5题选D就能到积极型」 and 「测评那几道题都勾最高的」 with one entry.
    ``"gap_excludes_negation": true`` refuses a negator between the sets.
    ``"ordered": false`` also accepts the sets in reverse order (two sets only).
    The first set's words are the triggers, so the hot path stays one automaton pass.
    """
    patterns: list[str] = []
    triggers: list[str] = []
    for i, concept in enumerate(raw):
        sets = concept.get("all")
        if not isinstance(sets, list) or len(sets) < 2 or not all(sets):
            raise RuleDataError(f"{where}: concept {i} needs 'all' with two or more word sets")
        gap = int(concept.get("gap", 8))
        scope = str(concept.get("scope", "clause"))
        if scope not in ("clause", "sentence"):
            raise RuleDataError(f"{where}: concept {i}: scope must be clause or sentence")
        filler = _CLAUSE_GAP if scope == "clause" else _SENTENCE_GAP
        if concept.get("gap_excludes_negation", False):
            # 「业绩比较基准不等于到手收益」: a negator between the sets reverses the claim.
            filler = filler[:-1] + "不没非别无未]"
        filler += f"{{0,{gap}}}"
        alts = [
            "(?:"
            + "|".join(re.escape(w) for w in sorted(map(str, ws), key=len, reverse=True))
            + ")"
            for ws in sets
        ]
        patterns.append(filler.join(alts))
        if not concept.get("ordered", True):
            if len(alts) != 2:
                raise RuleDataError(f"{where}: concept {i}: unordered needs exactly two sets")
            patterns.append(filler.join(reversed(alts)))
            triggers.extend(str(w) for w in sets[1])
        triggers.extend(str(w) for w in sets[0])
    return patterns, triggers


def _rule(raw: dict[str, Any], bases: dict[str, str]) -> Rule:
    rid = str(raw["id"])
    category = str(raw["category"])
    severity = str(raw.get("severity", "violation"))
    if category not in CATEGORIES:
        raise RuleDataError(f"rule {rid}: unknown category {category!r}")
    if severity not in SEVERITIES:
        raise RuleDataError(f"rule {rid}: unknown severity {severity!r}")
    basis = str(raw["basis"])
    if basis not in bases:
        raise RuleDataError(f"rule {rid}: unknown basis key {basis!r}")
    concept_patterns, concept_triggers = _concept_patterns(list(raw.get("concepts", [])), rid)
    patterns = _compile(list(raw.get("patterns", [])) + concept_patterns, rid)
    triggers = tuple(dict.fromkeys([*raw.get("triggers", []), *concept_triggers]))
    if patterns and not triggers:
        raise RuleDataError(f"rule {rid}: patterns need triggers (keeps the hot path fast)")
    evasion = raw.get("evasion_severity")
    return Rule(
        id=rid,
        category=category,
        severity=severity,
        basis=basis,
        description=str(raw.get("description", "")),
        terms=tuple(str(t) for t in raw.get("terms", [])),
        patterns=patterns,
        triggers=triggers,
        boundary_terms=frozenset(raw.get("boundary_terms", [])),
        exempt_context=_compile(list(raw.get("exempt_context", [])), rid),
        exempt_all=tuple(_compile(list(group), rid) for group in raw.get("exempt_all", [])),
        question_exempt=bool(raw.get("question_exempt", True)),
        negatable=bool(raw.get("negatable", True)),
        evasion_severity=str(evasion) if evasion else None,
        not_after=tuple(str(w) for w in raw.get("not_after", [])),
    )


def _cues(raw: dict[str, Any]) -> Cues:
    return Cues(
        prefix_window=int(raw["prefix_window"]),
        suffix_window=int(raw["suffix_window"]),
        negators=tuple(raw["negators"]),
        # Longest first, so 不用担心 is removed before 不用 could be.
        not_negation=tuple(sorted(raw["not_negation"], key=len, reverse=True)),
        negation_barriers=tuple(raw.get("negation_barriers", [])),
        refutations=tuple(raw["refutations"]),
        span_refutations=tuple(raw.get("span_refutations", [])),
        sentence_refutations=tuple(raw.get("sentence_refutations", [])),
        quote_pairs=tuple((p[0], p[-1]) for p in raw["quote_pairs"]),
        report_cues=tuple(raw["report_cues"]),
        question_marks=frozenset(raw["question_marks"]),
        question_particles=frozenset(raw["question_particles"]),
        clause_breaks=frozenset(raw["clause_breaks"]),
        question_fillers="".join(raw["question_fillers"]),
    )


_CUES_ADDED_LATER = ("question_fillers",)


@lru_cache(maxsize=8)
def load_ruleset(directory: str = "") -> RuleSet:
    """Load and validate the rule files from ``directory`` (default: the shipped ones)."""
    where = Path(directory) if directory else RULES_DIR
    bases_doc = load_json("bases.json", where)
    bases = {str(k): str(v) for k, v in bases_doc["bases"].items()}
    lexicon = load_json("lexicon.json", where)
    cues_doc = load_json("cues.json", where)
    for key in _CUES_ADDED_LATER:
        # A bank's copy of the rules made before a cue moved out of the code into
        # cues.json reads the shipped value, and so behaves as it did.
        if key not in cues_doc:
            cues_doc[key] = load_json("cues.json")[key]
    cues = _cues(cues_doc)
    # A bank's own rules directory made before suggestions existed reads the shipped ones.
    suggestions_doc = load_json(
        "suggestions.json", where if (where / "suggestions.json").is_file() else None
    )
    rules = tuple(_rule(r, bases) for r in lexicon["rules"])
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleDataError(f"duplicate rule id {rule.id}")
        seen.add(rule.id)
    return RuleSet(
        version=f"lexicon {lexicon['version']} / bases {bases_doc['version']}",
        rules=rules,
        cues=cues,
        bases=bases,
        category_bases={str(k): str(v) for k, v in bases_doc["category_bases"].items()},
        suggestions=Suggestions(
            by_term={str(k): str(v) for k, v in suggestions_doc.get("by_term", {}).items()},
            by_rule={str(k): str(v) for k, v in suggestions_doc.get("by_rule", {}).items()},
            by_category={str(k): str(v) for k, v in suggestions_doc.get("by_category", {}).items()},
        ),
    )
