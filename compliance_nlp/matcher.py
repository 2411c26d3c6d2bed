"""Rule layer for advisor messages: one Aho-Corasick pass, then clause-scoped checks.

A compliance officer must trust what is let through as much as what is flagged, so
every candidate match is checked in its clause for negation (「本产品不保证本金和收益」),
refutation (「保本是不可能的」), quotation of someone else's claim
(「别信那些“包赚不赔”的宣传」) and questions (「您是想要保本的产品吗？」), and for
legitimate facts declared in the rule data (deposit insurance, a contract's guaranteed
rate stated with the dividend called uncertain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ahocorasick

from compliance_nlp import segment
from compliance_nlp.normalize import Normalized
from compliance_nlp.rules import Rule, RuleSet
from compliance_nlp.types import Finding, Severity

__all__ = ["RuleMatcher"]

_TERM = 0
_TRIGGER = 1
# A clause never needs more context than this; bounding it keeps a 100 KB message with
# no punctuation linear instead of quadratic.
_CLAUSE_REACH = 120
# A reviewer needs the evidence once, not 25,000 times (「保本保息」 pasted in a loop).
_MAX_HITS_PER_RULE = 5
_SENTENCE_BREAKS = frozenset("。！？!?\n")
# Before a sentence refutation these turn it around: 「这不是骗局」, 「并非违规」.
_NEGATING_CHARS = ("不", "没", "非", "无")
# After one they set the named thing apart from it: 「跟那些骗局不一样」.
_CONTRASTS = ("不一样", "不同", "两回事", "区别")
# A warning to take care (千万小心) refutes what it follows, unless what it asks care for
# is secrecy: 「我私下返您两个点，千万小心别说出去」, 「一定要小心点」.
_CAUTION = "小心"
_SECRECY = ("点", "些", "别", "不要", "不能", "让", "被")


@dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int
    rule: Rule
    term: str | None


class RuleMatcher:
    """Compiled rule set. Build once per process; ``find`` is pure and thread-safe."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._cues = ruleset.cues
        automaton: Any = ahocorasick.Automaton()
        entries: dict[str, list[tuple[int, int, int]]] = {}
        for index, rule in enumerate(ruleset.rules):
            for term in rule.terms:
                entries.setdefault(term, []).append((_TERM, index, len(term)))
            for trigger in rule.triggers:
                entries.setdefault(trigger, []).append((_TRIGGER, index, len(trigger)))
        for key, value in entries.items():
            automaton.add_word(key, tuple(value))
        automaton.make_automaton()
        self._automaton = automaton
        self._breaks = self._cues.clause_breaks
        # An institution's exceptions (compliance_nlp.overlay): phrases never flagged.
        self._exceptions: Any = None
        if ruleset.exceptions:
            spared: Any = ahocorasick.Automaton()
            for phrase in ruleset.exceptions:
                previous = spared.get(phrase.phrase, None)
                cats = phrase.categories
                if previous is not None:  # the same phrase twice: the wider reach wins
                    cats = frozenset() if not (previous[1] and cats) else previous[1] | cats
                spared.add_word(phrase.phrase, (len(phrase.phrase), cats))
            spared.make_automaton()
            self._exceptions = spared

    # -- candidate generation -------------------------------------------------------
    def _candidates(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        triggered: set[int] = set()
        rules = self.ruleset.rules
        for end_index, values in self._automaton.iter(text):
            for kind, rule_index, length in values:
                if kind == _TERM:
                    start = end_index - length + 1
                    hits.append(
                        _Hit(start, end_index + 1, rules[rule_index], text[start : end_index + 1])
                    )
                else:
                    triggered.add(rule_index)
        # In the rules' file order, not the set's: of two hits with the same span and
        # category the first is kept (``find``), and a set's order moves with every rule
        # added (an inserted rule once put GR-C's exempt 保证 hit before GR-004's).
        for rule_index in sorted(triggered):
            rule = rules[rule_index]
            for pattern in rule.patterns:
                for m in pattern.finditer(text):
                    if m.end() > m.start():
                        hits.append(_Hit(m.start(), m.end(), rule, None))
        return hits

    def exception_spans(self, text: str) -> list[tuple[int, int, frozenset[str]]]:
        """Where the institution's exception phrases occur in normalised ``text``."""
        if self._exceptions is None:
            return []
        return [
            (end - length + 1, end + 1, cats) for end, (length, cats) in self._exceptions.iter(text)
        ]

    def _spared(self, text: str, hits: list[_Hit]) -> list[_Hit]:
        """Hits not inside an exception phrase of their category."""
        spans = self.exception_spans(text)
        if not spans:
            return hits
        return [
            h
            for h in hits
            if not any(
                s <= h.start and h.end <= e and (not cats or h.rule.category in cats)
                for s, e, cats in spans
            )
        ]

    # -- clause-scoped checks -------------------------------------------------------
    def _clause(self, text: str, start: int, end: int) -> tuple[int, int]:
        cs = start
        floor = max(0, start - _CLAUSE_REACH)
        while cs > floor and text[cs - 1] not in self._breaks:
            cs -= 1
        ce = end
        ceiling = min(len(text), end + _CLAUSE_REACH)
        while ce < ceiling and text[ce] not in self._breaks:
            ce += 1
        return cs, ce

    def _negated(self, text: str, cs: int, ce: int, start: int, end: int) -> bool:
        cues = self._cues
        span = text[start:end]
        if any(r in span for r in cues.span_refutations):
            return True
        prefix = text[max(cs, start - cues.prefix_window) : start]
        if prefix:
            for phrase in cues.not_negation:
                if phrase in prefix:
                    prefix = prefix.replace(phrase, "|")
            # A negator before a concession/contrast word negates another verb:
            # 「翻不了倍也至少赚个20%」 still promises 20%.
            for barrier in cues.negation_barriers:
                cut = prefix.rfind(barrier)
                if cut >= 0:
                    prefix = prefix[cut + len(barrier) :]
            if any(n in prefix for n in cues.negators):
                return True
        suffix = text[end : min(ce, end + cues.suffix_window)]
        if suffix and any(r in suffix for r in cues.refutations):
            return True
        return self._refuted_later(text, end)

    def _short_of_refutation(self, text: str, hit: _Hit) -> _Hit | None:
        """A pattern's match stopped before the first refutation inside its span, when
        the pattern still matches there: a concept's gap can reach past what the line
        said into a later warning of another act (「录像时您就说是自己决定的，千万别提…」
        stretched to 千万别 and read as refuted)."""
        if hit.term is not None:
            return None
        span = text[hit.start : hit.end]
        cuts = [at for r in self._cues.span_refutations if (at := span.find(r)) > 0]
        if not cuts:
            return None
        stop = hit.start + min(cuts)
        for pattern in hit.rule.patterns:
            m = pattern.match(text, hit.start, stop)
            if m is not None and m.end() > m.start():
                return _Hit(m.start(), m.end(), hit.rule, None)
        return None

    def _refuted_later(self, text: str, end: int) -> bool:
        """The rest of the sentence calls what was matched a scam or a breach."""
        phrases = self._cues.sentence_refutations
        if not phrases:
            return False
        stop = end
        ceiling = min(len(text), end + _CLAUSE_REACH)
        while stop < ceiling and text[stop] not in _SENTENCE_BREAKS:
            stop += 1
        rest = text[end:stop]
        for phrase in phrases:
            at = rest.find(phrase)
            while at >= 0:
                before = rest[max(0, at - 2) : at]
                after = rest[at + len(phrase) : at + len(phrase) + 4]
                secrecy = phrase.endswith(_CAUTION) and after.startswith(_SECRECY)
                if (
                    not any(n in before for n in _NEGATING_CHARS)
                    and not any(c in after for c in _CONTRASTS)
                    and not secrecy
                ):
                    return True
                at = rest.find(phrase, at + 1)
        return False

    def _quoted(self, text: str, start: int, end: int) -> bool:
        for open_q, close_q in self._cues.quote_pairs:
            if open_q == close_q:
                if text.count(open_q, 0, start) % 2 == 1 and close_q in text[end:]:
                    return True
                continue
            opened = text.rfind(open_q, 0, start + 1)
            if opened < 0:
                continue
            closed_before = text.find(close_q, opened + 1, start)
            if closed_before < 0 and text.find(close_q, end - 1) >= 0:
                return True
        return False

    def _question(self, text: str, cs: int, ce: int) -> bool:
        cues = self._cues
        if ce < len(text) and text[ce] in cues.question_marks:
            return True
        tail = text[cs:ce].rstrip(cues.question_fillers)
        return bool(tail) and tail[-1] in cues.question_particles

    def _word_aligned(self, text: str, cs: int, ce: int, start: int, end: int) -> bool:
        """jieba decides whether 保本 in 确保本人 is really the word 保本."""
        bounds = segment.boundaries(text[cs:ce])
        return (start - cs) in bounds and (end - cs) in bounds

    def _exempt(self, rule: Rule, text: str, answered: str) -> bool:
        # The customer turn a line answers counts as its context: 「放心，到期本息都在」 is
        # a fact after 「大额存单到期本息都能拿回来吧？」, a promise after a question about
        # a wealth product.
        if any(p.search(text) or (answered and p.search(answered)) for p in rule.exempt_context):
            return True
        return any(all(p.search(text) for p in group) for group in rule.exempt_all)

    # -- public ---------------------------------------------------------------------
    def find(self, norm: Normalized, *, answered: str = "") -> list[Finding]:
        """Findings for one advisor message, spans mapped back to the original text.

        ``answered`` is the normalised customer turn the message answers, when known.
        """
        text = norm.text
        hits = self._candidates(text)
        if hits and self._exceptions is not None:
            hits = self._spared(text, hits)
        if not hits:
            return []
        # Longest match wins within a category: 保本保息 hides the 保本 inside it.
        hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
        kept: list[_Hit] = []
        reach: dict[str, int] = {}  # category -> furthest end among kept hits
        last: dict[str, _Hit] = {}  # category -> the kept hit reaching furthest
        per_rule: dict[str, int] = {}
        # The hits of another rule a longer hit of their category hid, by that hit: read
        # in its stead when its own rule lets it go for the customer's words (an exemption
        # read in the turn answered) or a negation — 「亏了算我的，我给您兜底」 after a
        # question about deposit insurance exempts the concept rule's long span, not the
        # personal guarantee inside it.
        hidden: dict[int, list[_Hit]] = {}
        for hit in hits:
            category = hit.rule.category
            if reach.get(category, -1) >= hit.end:
                outer = last[category]
                if hit.rule.id != outer.rule.id:
                    hidden.setdefault(id(outer), []).append(hit)
                continue  # inside a longer hit of the same category
            if per_rule.get(hit.rule.id, 0) >= _MAX_HITS_PER_RULE:
                continue
            if hit.end > reach.get(category, -1):
                reach[category] = hit.end
                last[category] = hit
            per_rule[hit.rule.id] = per_rule.get(hit.rule.id, 0) + 1
            kept.append(hit)
        findings: list[Finding] = []
        report_context: bool | None = None
        exempt_cache: dict[str, bool] = {}
        queue = list(kept)
        while queue:
            hit = queue.pop(0)
            rule = hit.rule
            if rule.id not in exempt_cache:
                exempt_cache[rule.id] = self._exempt(rule, text, answered)
            if exempt_cache[rule.id]:
                if answered and not self._exempt(rule, text, ""):
                    queue[:0] = hidden.pop(id(hit), [])
                continue
            if rule.not_after and any(text.endswith(w, 0, hit.start) for w in rule.not_after):
                continue
            cs, ce = self._clause(text, hit.start, hit.end)
            if hit.term is not None and hit.term in rule.boundary_terms:
                if not self._word_aligned(text, cs, ce, hit.start, hit.end):
                    continue
            if rule.negatable and self._negated(text, cs, ce, hit.start, hit.end):
                shorter = self._short_of_refutation(text, hit)
                queue[:0] = ([shorter] if shorter is not None else []) + hidden.pop(id(hit), [])
                continue
            if rule.question_exempt and self._question(text, cs, ce):
                continue
            severity: Severity = "violation" if rule.severity == "violation" else "review"
            if rule.evasion_severity == "violation" and norm.overlaps_evasion(hit.start, hit.end):
                severity = "violation"
            if self._quoted(text, hit.start, hit.end):
                if report_context is None:
                    report_context = any(c in text for c in self._cues.report_cues)
                if report_context:
                    continue
                severity = "review"
            start, end = norm.to_original(hit.start, hit.end)
            findings.append(
                Finding(
                    category=rule.category,
                    severity=severity,
                    start=start,
                    end=end,
                    evidence=norm.original[start:end],
                    rule_id=rule.id,
                    source="rule",
                    basis=self.ruleset.basis_text(rule.basis),
                    suggestion=self.ruleset.suggestions.lookup(
                        category=rule.category, rule_id=rule.id, term=hit.term
                    ),
                )
            )
        return _dedupe(findings)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per category and overlapping span; the stronger severity wins."""
    out: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.severity != "violation", f.start - f.end)):
        if any(o.category == f.category and o.start < f.end and f.start < o.end for o in out):
            continue
        out.append(f)
    out.sort(key=lambda f: (f.start, f.end))
    return out
