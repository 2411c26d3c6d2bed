"""The one entry point: text + role in, ``Analysis`` out.

Order of work, and why:
1. validate (clear ``AnalysisError`` instead of a crash in the worker);
2. width/script folding, then PII on the 1:1 folded text, so PII offsets are exact;
3. advisor messages: rules on the evasion-normalised text, then the violation model,
   both reading the customer turn the line answers when the conversation is given, and
   the question/answer frames (``dialogue``: what the customer asked about names the
   category an assuring or compliant reply breaks; refusals and corrections stay clean)
   (「是的👌」 promises the principal after 「到期本金能拿回来吧？」, and is service after
   「明天能到账吗？」); a violation only the model sees needs financial ground in the
   line or that turn (``DomainAnchors``), so everyday chat never reaches a reviewer;
   a short line with context that nothing made a violation is then read by the pair
   model (``pair``: learned from conversations, not from enumerated phrasings) after
   each customer turn it may answer, unless the frames read it as a refusal or a fact;
   customer messages: intent (model, or keywords) — compliance categories describe
   what a *seller* may not say, so they are not applied to customers;
4. sentiment from the lexicon (complaints with no sentiment words count as negative).
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import TypeGuard, get_args

from compliance_nlp import segment
from compliance_nlp.dialogue import (
    DialogueRules,
    Reading,
    asked_turns,
    followed_turns,
    settled_turns,
)
from compliance_nlp.lexicon import DomainAnchors, KeywordIntent, SentimentLexicon
from compliance_nlp.matcher import RuleMatcher
from compliance_nlp.model import (
    SequenceClassifier,
    answered_turn,
    is_model_dir,
    model_text,
    shipped_model_dir,
    violation_input,
)
from compliance_nlp.normalize import Normalized, normalize, translate_chars
from compliance_nlp.overlay import Overlay, apply_overlay
from compliance_nlp.pair import GOES_ON as PAIR_GOES_ON
from compliance_nlp.pair import MAX_REPLY_CHARS as PAIR_MAX_REPLY_CHARS
from compliance_nlp.pair import UNASKED_SCORE as PAIR_UNASKED_SCORE
from compliance_nlp.pair import PairModel, load_pair_model
from compliance_nlp.pii import MASK_STYLES, find_pii, load_pii_words, mask_pii, mask_span
from compliance_nlp.rules import CATEGORIES, load_ruleset
from compliance_nlp.types import (
    Analysis,
    AnalyzerConfig,
    Finding,
    InvalidInputError,
    ModelLoadError,
    Role,
    Severity,
    Turn,
)

__all__ = ["Analyzer", "analyze", "get_analyzer", "validate_input"]

ROLES: tuple[Role, ...] = get_args(Role)
_SURROGATES = re.compile("[\ud800-\udfff]")
_MODEL_EVIDENCE_CHARS = 200
_CONTEXT_EVIDENCE_CHARS = 60
Context = Sequence[Turn]


def _normal_text(text: str) -> str:
    return normalize(text).text


def _names_nothing(text: str) -> bool:
    return False


# After a reported claim or a disclaimer these set the advisor's own word against it:
# 「收益会变是官方说法，实际上我保证不低于4%」 warns of nothing.
_OVERRIDE_CUES = ("实际上", "其实", "说白了", "说实话", "实话说", "私下跟您说", "私下跟你说")


def _overrides(text: str, report_cues: Sequence[str]) -> bool:
    """Whether an override cue follows the first report cue in ``text``."""
    first = min((at for c in report_cues if (at := text.find(c)) >= 0), default=-1)
    return first >= 0 and any(text.find(o, first) >= 0 for o in _OVERRIDE_CUES)


def _is_role(role: object) -> TypeGuard[Role]:
    return role in ROLES


def validate_input(text: object, role: object, *, max_chars: int = 200_000) -> tuple[str, Role]:
    """Check one input; returns the text with lone surrogates replaced (1:1, offsets kept).

    Lone surrogates arrive from JSON ``"\\ud800"`` escapes; they cannot be encoded as
    UTF-8, so left in place they would crash the writer of the masked text.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if not _is_role(role):
        raise InvalidInputError(f"role must be 'advisor' or 'customer', got {role!r}")
    if len(text) > max_chars:
        raise InvalidInputError(f"text too long: {len(text)} characters (limit {max_chars})")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text, role


class Analyzer:
    """Rules, lexicons and models for one ``AnalyzerConfig``; thread-safe once built."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        if self.config.mask_style != "tag" and self.config.mask_style not in MASK_STYLES:
            raise InvalidInputError(f"unknown mask_style {self.config.mask_style!r}")
        self.ruleset = load_ruleset(self.config.rules_dir)
        load_pii_words()  # a malformed rules/pii.json fails here, not on the first number
        self.matcher = RuleMatcher(self.ruleset)
        self.sentiment = SentimentLexicon(self.config.rules_dir)
        self.keyword_intent = KeywordIntent(self.config.rules_dir)
        self.anchors = DomainAnchors(self.config.rules_dir)
        self.dialogue = DialogueRules(self.ruleset, self.config.rules_dir)
        # A context turn is read by every line whose window holds it (up to
        # ``context_turns`` of them): its normalised text, whether it stands on financial
        # ground, whether it closes a question and whether it names something a rule
        # forbids (``_turn_asks``, with the pair model) are worked out once. A line's own
        # ground is asked again by the pair reading (``_anchored``).
        self._turn_norm = lru_cache(maxsize=4096)(_normal_text)
        self._turn_anchored = lru_cache(maxsize=4096)(
            lambda text: self.anchors.anchored(self._turn_norm(text))
        )
        self._closes = lru_cache(maxsize=4096)(self.dialogue.closes)
        self._refuses = lru_cache(maxsize=4096)(self.dialogue.refuses)
        self._follows = lru_cache(maxsize=4096)(self.dialogue.follows)
        self._anchored = lru_cache(maxsize=1024)(self.anchors.anchored)
        self.intent_model: SequenceClassifier | None = None
        self.violation_model: SequenceClassifier | None = None
        if self.config.use_model:
            self.intent_model = self._load(self.config.intent_model_dir, "intent")
            self.violation_model = self._load(self.config.violation_model_dir, "violation")
        self.pair_model: PairModel | None = None
        if self.config.use_model and self.config.use_pair_model:
            self.pair_model = load_pair_model(
                self.config.pair_model_dir, rules_dir=self.config.rules_dir
            )
        self._turn_asks = lru_cache(maxsize=4096)(
            self.pair_model.asks if self.pair_model is not None else _names_nothing
        )
        parts = [self.ruleset.version]
        for label, model in (("intent", self.intent_model), ("violation", self.violation_model)):
            if model is not None:
                parts.append(f"{label} {model.name}@{model.version}")
        if self.pair_model is not None:
            parts.append(f"pair {self.pair_model.name}@{self.pair_model.version}")
        self.model_version = "; ".join(parts)

    def with_overlay(self, overlay: Overlay | None) -> Analyzer:
        """This analyzer with an institution's overlay over the shipped rules (None: none).

        The models, lexicons and PII words are shared, not reloaded: only the rule set
        and its matcher are built again, so a running process takes a new overlay in
        well under a second. Raises ``OverlayError`` for a malformed overlay.
        """
        base = load_ruleset(self.config.rules_dir)
        ruleset = apply_overlay(base, overlay) if overlay is not None else base
        twin = copy.copy(self)
        twin.model_version = self.model_version.replace(self.ruleset.version, ruleset.version, 1)
        twin.ruleset = ruleset
        twin.matcher = RuleMatcher(ruleset)
        return twin

    def _model_text(self, norm: Normalized) -> str:
        """The line as the violation model reads it: without the exception phrases.

        Removed, not masked: any stand-in is a word to the model (「某某」 reads as a
        competitor named in disparagement).
        """
        spans = self.matcher.exception_spans(norm.text)
        if not spans:
            return norm.original
        keep = [True] * len(norm.original)
        for start, end, _cats in spans:
            a, b = norm.to_original(start, end)
            keep[a:b] = [False] * (b - a)
        return "".join(c for c, k in zip(norm.original, keep, strict=True) if k)

    @staticmethod
    def _whole_line(finding: Finding, text: str) -> Finding:
        stripped = text.strip()
        start = text.find(stripped) if stripped else 0
        end = start + min(len(stripped), _MODEL_EVIDENCE_CHARS)
        return replace(finding, start=start, end=end, evidence=text[start:end])

    def _load(self, directory: str, kind: str) -> SequenceClassifier | None:
        if directory:
            return SequenceClassifier(directory, threads=self.config.torch_threads)
        shipped = shipped_model_dir(kind)
        if not is_model_dir(shipped):
            return None  # not trained yet: fall back to keywords/rules only
        return SequenceClassifier(shipped, threads=self.config.torch_threads)

    def warm(self) -> None:
        """Load everything lazy (jieba, first forward pass) before traffic arrives."""
        segment.warm()
        question = "您好，这款产品保本吗？"
        self.analyze_many([(question, "customer"), ("确保本人操作", "advisor")])
        # and the reading of a line in its conversation (frames, pair model)
        self.analyze_many([("放心", "advisor")], [[Turn("customer", question)]])

    def analyze(self, text: str, role: Role, *, context: Context | None = None) -> Analysis:
        return self.analyze_many([(text, role)], [context])[0]

    def analyze_many(
        self,
        items: Sequence[tuple[str, str]],
        contexts: Sequence[Context | None] | None = None,
    ) -> list[Analysis]:
        """Analyse a batch; model calls are batched across the whole list.

        ``contexts[i]``, when given, is the conversation before ``items[i]`` (both sides,
        oldest first; masked text is enough); only its last ``config.context_turns``
        turns are read.
        """
        checked = [validate_input(t, r, max_chars=self.config.max_chars) for t, r in items]
        answered, asked, settled, followed = self._answered_turns(contexts, [r for _, r in checked])
        folded = [translate_chars(t) for t, _ in checked]
        norms = [normalize(t) for t, _ in checked]
        piis = [find_pii(f) for f in folded]
        customer_idx = [i for i, (_, r) in enumerate(checked) if r == "customer"]
        advisor_idx = [i for i, (_, r) in enumerate(checked) if r == "advisor"]

        intents: dict[int, tuple[str, float]] = {}
        if self.intent_model is not None and customer_idx:
            # The model reads the message without its phone/card/ID digits: they carry no
            # intent, and a long digit run drowned the words of short messages (「我电话
            # 139…你存一下，改天请你喝茶」 read as account_service). ``model_text`` is the
            # function training builds its examples with, so the two cannot drift apart.
            preds = self.intent_model.predict(
                [model_text(checked[i][0], piis[i]) for i in customer_idx]
            )
            floor = self.config.intent_keyword_fallback_below
            for i, p in zip(customer_idx, preds, strict=True):
                intents[i] = (p.label, round(p.score, 4))
                if p.score < floor:
                    keyword, score = self.keyword_intent.classify(norms[i].text)
                    if keyword != "chitchat":
                        intents[i] = (keyword, score)
        else:
            for i in customer_idx:
                intents[i] = self.keyword_intent.classify(norms[i].text)
        # A grievance or an order in so many words decides over the label read
        # (``KeywordIntent.decisive``): 「凭什么扣我年费」 is a complaint, not account service.
        for i in customer_idx:
            decided = self.keyword_intent.decisive(norms[i].text, intents[i][0])
            if decided is not None:
                intents[i] = (decided, self.keyword_intent.decisive_score)

        model_findings: dict[int, list[Finding]] = {}
        clean_probs: dict[int, float] = {}
        model_texts: dict[int, str] = {}
        if self.violation_model is not None and advisor_idx:
            model_texts = {i: self._model_text(norms[i]) for i in advisor_idx}
            model_findings, clean_probs = self._model_findings(
                [model_texts[i] for i in advisor_idx], advisor_idx, answered
            )
            if self.ruleset.exceptions:  # the span of what was written, not of what was read
                model_findings = {
                    i: [self._whole_line(f, checked[i][0]) for f in found]
                    for i, found in model_findings.items()
                }

        # Advisor lines: the line rules and the question/answer frames first, so the model's
        # reading of a line alone is asked only where it decides something (``_line_alone``).
        ruled: dict[int, tuple[list[Finding], Reading | None, bool]] = {}
        for i in advisor_idx:
            turn = answered.get(i)
            answered_norm = self._turn_norm(turn[1]) if turn else ""
            rule_findings = self.matcher.find(norms[i], answered=answered_norm)
            reading = None
            if i in asked:
                reading = self.dialogue.find(
                    norms[i],
                    folded[i].lower(),
                    [(j, self._turn_norm(t), t) for j, t in asked[i]],
                    settled=settled[i],
                    followed=followed[i],
                )
                rule_findings = reading.apply(rule_findings, model=False)
            anchored = self._anchored(norms[i].text) or (
                turn is not None and bool(answered_norm) and self._turn_anchored(turn[1])
            )
            ruled[i] = (rule_findings, reading, anchored)
        if model_findings and answered:
            model_findings = self._line_alone(model_findings, answered, ruled, model_texts)

        results: list[Analysis] = []
        for i, (text, role) in enumerate(checked):
            pii = piis[i]
            findings: list[Finding] = []
            if role == "advisor":
                rule_findings, reading, anchored = ruled[i]
                turn = answered.get(i)
                answered_norm = self._turn_norm(turn[1]) if turn else ""
                model_found = model_findings.get(i, [])
                if reading is not None:
                    model_found = reading.apply(model_found, model=True)
                findings = self._combine(
                    rule_findings,
                    model_found,
                    norms[i].text,
                    clean_probs.get(i, 0.0),
                    anchored=anchored,
                    countered=self.anchors.countered(norms[i].text)
                    | self.anchors.ungrounded(norms[i].text, answered_norm),
                )
                if i in asked and self.pair_model is not None:
                    # A question the advisor already refused is no longer asked.
                    # Nor is one reached past the advisor's answer to it (``followed``):
                    # the model reads a reply with the turn it answers.
                    shut = settled[i] | followed[i]
                    open_turns = [(j, t) for j, t in asked[i] if j not in shut]
                    findings += self._pair_findings(text, norms[i], findings, open_turns, reading)
                # A compliant rewording where the rule data has one (suggestions.json and
                # the institution's overlay): by rule, else by category for model findings.
                findings = [
                    f
                    if f.suggestion
                    else replace(
                        f,
                        suggestion=self.ruleset.suggestions.lookup(
                            category=f.category, rule_id=f.rule_id
                        ),
                    )
                    for f in findings
                ]
            if pii:
                # Evidence is stored and exported in clear beside the masked text: it must
                # never carry a number the masked text hides. Offsets stay those of the
                # original, for a reviewer entitled to open the sealed copy.
                style = self.config.mask_style
                findings = [
                    replace(f, evidence=mask_span(text, pii, f.start, f.end, style))
                    for f in findings
                ]
            intent: str | None = None
            intent_score: float | None = None
            if i in intents:
                intent, intent_score = intents[i]
            sentiment = self.sentiment.score(norms[i].text, text)
            if intent == "complaint" and sentiment == "neutral":
                sentiment = "negative"
            results.append(
                Analysis(
                    role=role,
                    intent=intent,
                    intent_score=intent_score,
                    sentiment=sentiment,
                    violations=tuple(findings),
                    pii=tuple(pii),
                    masked_text=mask_pii(text, pii, self.config.mask_style),
                    model_version=self.model_version,
                )
            )
        return results

    def _pair_findings(
        self,
        text: str,
        norm: Normalized,
        findings: list[Finding],
        asked: list[tuple[int, str]],
        reading: Reading | None,
    ) -> list[Finding]:
        """A violation the conversation makes, by the pair model (``pair``): the customer
        turn it may answer (``asked``: index, masked text) after which the model is surest
        of a category, at or above ``pair_threshold`` (``pair.UNASKED_SCORE`` after a turn
        that names nothing forbidden), on a short line, when nothing else found that
        category — unless the frames read the reply as refusing or correcting (or stating
        a fact about) what was asked."""
        model = self.pair_model
        reply = norm.text
        if model is None or len(reply) > PAIR_MAX_REPLY_CHARS:
            return []
        if reading is not None and reading.refused:
            return []  # as below, before the model is asked
        violated = {f.category for f in findings if f.severity == "violation"}
        # As for the line model: a conversation off financial ground is no evidence
        # (「楼下那家包子铺还开着吗」 → 「开着呢」), and a reply that only refuses or
        # corrects (「零风险的产品是没有的」) goes along with nothing.
        reply_anchored = self._anchored(reply)
        # A turn that names something a rule forbids (``stance.json`` requests) is on
        # financial ground whatever its anchors.
        names = {j: self._turn_asks(t) for j, t in asked}
        turns = [(j, t) for j, t in asked if reply_anchored or names[j] or self._turn_anchored(t)]
        if not turns:
            return []
        stance = set(model.stance.read(reply))
        if (
            "^refuse" in stance
            and not stance & {"assure", "comply"}
            and not PAIR_GOES_ON.search(reply)
        ):
            return []
        probs = model.proba([(t, text) for _, t in turns])
        best: tuple[float, int, str, str] | None = None
        for (j, turn), row in zip(turns, probs, strict=True):
            # A turn that names nothing a rule forbids (``stance.json`` requests) is weak
            # evidence: 「要带啥」 → 「身份证原件+银行卡」 needs a surer model.
            bar = 0.0 if names[j] else PAIR_UNASKED_SCORE
            for k, label in enumerate(model.labels):
                if label != "none" and row[k] >= bar and (best is None or row[k] > best[0]):
                    best = (float(row[k]), j, turn, label)
        if best is None or best[0] < self.config.pair_threshold:
            return []
        score, j, turn, category = best
        # The customer's question names the category (保本吗 → guaranteed_return, 和存款
        # 一样吗 → misleading_promotion, 内部消息 → insider_tip): where the model's surest
        # category is another, the named one it rates highest is the finding's.
        named = self.dialogue.categories(self._turn_norm(turn)) - {category}
        if named and category not in self.dialogue.categories(self._turn_norm(turn)):
            row = probs[[k for k, _ in turns].index(j)]
            category = max(named, key=lambda c: row[model.labels.index(c)])
        if category in violated:
            return []  # already found, by a rule or the line model
        if reading is not None and (reading.refused or reading.cleared.get(category)):
            return []
        finding = Finding(
            category=category,
            severity="violation",
            start=0,
            end=len(text),
            evidence=text,
            rule_id="PAIR",
            source="model",
            score=round(score, 4),
            basis=self.ruleset.category_basis(category),
            context_index=j,
            context_evidence=turn[:_CONTEXT_EVIDENCE_CHARS],
        )
        return [self._whole_line(finding, text)]

    def _answered_turns(
        self, contexts: Sequence[Context | None] | None, roles: Sequence[str]
    ) -> tuple[
        dict[int, tuple[int, str]],
        dict[int, list[tuple[int, str]]],
        dict[int, frozenset[int]],
        dict[int, frozenset[int]],
    ]:
        """Per advisor item with context, the customer turn it answers
        (``model.answered_turn``), the turns the question/answer frames read
        (``dialogue.asked_turns``) and those of them an advisor turn already refused
        (``dialogue.settled_turns``), and those reached past the advisor's answer to them
        by a follow-up (``dialogue.followed_turns``). Every item's context is checked."""
        if contexts is None:
            return {}, {}, {}, {}
        if len(contexts) != len(roles):
            raise InvalidInputError(f"{len(contexts)} contexts for {len(roles)} messages")
        out: dict[int, tuple[int, str]] = {}
        asked: dict[int, list[tuple[int, str]]] = {}
        settled: dict[int, frozenset[int]] = {}
        followed: dict[int, frozenset[int]] = {}
        # The windows of a conversation's lines share their turns: each is checked once.
        valid: dict[Turn, Turn] = {}
        for i, context in enumerate(contexts):
            if not context:
                continue
            turns = []
            for t in context:
                turn = t if isinstance(t, Turn) else Turn.parse(t)
                hashable = isinstance(turn.text, str) and isinstance(turn.role, str)
                checked = valid.get(turn) if hashable else None
                if checked is None:
                    text, _ = validate_input(turn.text, turn.role, max_chars=self.config.max_chars)
                    checked = Turn(turn.role, text)
                    if hashable:
                        valid[turn] = checked
                turns.append(checked)
            if roles[i] != "advisor":
                continue  # a customer message is read without its context
            window = self.config.context_turns
            found = answered_turn(turns, window=window, mask_style=self.config.mask_style)
            if found is not None:
                out[i] = found
                asked[i] = asked_turns(
                    turns,
                    found,
                    window=window,
                    mask_style=self.config.mask_style,
                    closes=self._closes,
                    follows=self._follows,
                    refuses=self._refuses,
                )
                settled[i] = settled_turns(turns, asked[i], self._refuses)
                followed[i] = followed_turns(turns, asked[i], self._closes)
        return out, asked, settled, followed

    def _combine(
        self,
        rule_findings: list[Finding],
        model: list[Finding],
        text: str,
        clean_prob: float,
        *,
        anchored: bool = True,
        countered: frozenset[str] = frozenset(),
    ) -> list[Finding]:
        """Merge what the rules and the model found; each finding keeps its source.

        Thresholds are calibrated by cross-validation over the development pool
        (``AnalyzerConfig``, ``compliance_nlp.crossval``), so that model-made violations
        keep held-fold clean lines flagged at most ~3%:

        - The model agreeing with a rule finding (same category, at or above
          ``model_agree_threshold``) corroborates it: a rule *review* becomes a violation.
        - The model naming another category than the rules, at or above
          ``model_agree_threshold`` while a rule already made the line a violation, adds
          its category as a violation: the line is flagged either way, and the model's
          per-category head is more often right about *which* rule was broken than a
          keyword that happens to be present (「转我私卡，系统那边我来搞定」 is off-book,
          not suitability evasion).
        - A model finding on a line no rule flagged is a violation at or above
          ``model_violation_threshold`` when the text has no negation, question or
          quotation cue — the frames the clause-scoped rules exist to read, and where a
          small model is most often confidently wrong (「这是一款非保本产品」) — or at or
          above ``model_framed_threshold`` when it has one; otherwise it queues for
          review.
        - A model finding on a line no rule touched at all is dropped unless the line, or
          the customer turn it answers, stands on financial ground (``anchored``): the
          model's score saturates on lines unlike its training data, so without such
          evidence it is no evidence.
        - A model finding no rule shares, of a category the line itself speaks against
          (``countered``: a risk disclosed, a level mismatch refused, a scam warned
          against — ``DomainAnchors.countered``), queues for review at most.
        - The model sure the line is clean (``clean_prob`` at or above
          ``model_veto_threshold``) turns rule violations on a line that warns the
          customer (a ``report_cues`` word: 报警, 警惕, 别信 …) into review findings:
          「如果有人让您加私人微信转账，请直接报警」 names the act to warn against it.

        ``_alone_decides`` reads these rules to skip the model's second reading where it
        cannot change the result: change the two together (``test_nlp_shortcuts``).
        """
        cfg = self.config
        findings = list(rule_findings)
        if not findings and not anchored:
            return []
        rule_violation = any(f.severity == "violation" for f in findings)
        framed = self._has_frame_cue(text)
        warns = any(c in text for c in self.ruleset.cues.report_cues) and not _overrides(
            text, self.ruleset.cues.report_cues
        )
        if rule_violation and not model and warns and clean_prob >= cfg.model_veto_threshold:
            # A question/answer frame's finding (it names the customer turn) has read
            # the refusals and warnings of the reply itself: 「理解，就按您说的来」 quotes
            # no one.
            findings = [
                f if f.context_index is not None else replace(f, severity="review")
                for f in findings
            ]
            rule_violation = any(f.severity == "violation" for f in findings)
        for m in model:
            score = m.score or 0.0
            same = [f for f in findings if f.category == m.category]
            if same:
                if score >= cfg.model_agree_threshold:
                    findings = [
                        replace(f, severity="violation") if f in same and f.source == "rule" else f
                        for f in findings
                    ]
                continue
            if rule_violation and score >= cfg.model_agree_threshold:
                severity: Severity = "violation"
            elif (
                not rule_violation
                and m.category not in countered
                and score
                >= (cfg.model_framed_threshold if framed else cfg.model_violation_threshold)
            ):
                severity = "violation"
            else:
                severity = "review"
            findings.append(replace(m, severity=severity))
        return findings

    def _has_frame_cue(self, text: str) -> bool:
        cues = self.ruleset.cues
        stripped = text
        for phrase in cues.not_negation:
            if phrase in stripped:
                stripped = stripped.replace(phrase, "|")
        if any(n in stripped for n in cues.negators) or any(q in text for q in cues.question_marks):
            return True
        return any(o in text for o, _ in cues.quote_pairs)

    def _model_findings(
        self, texts: list[str], indices: list[int], answered: dict[int, tuple[int, str]]
    ) -> tuple[dict[int, list[Finding]], dict[int, float]]:
        """The model's finding per advisor line, and how sure it is the line is clean.

        A line with context is read together with the customer turn it answers, and a
        finding from that reading names the turn; ``_line_alone`` then reads the line
        alone where that matters: if the line alone says it too, the turn is not named.
        """
        assert self.violation_model is not None
        out: dict[int, list[Finding]] = {}
        clean: dict[int, float] = {}
        cfg = self.config
        model = self.violation_model
        inputs = [
            violation_input(text, answered[i][1] if i in answered else None)
            for i, text in zip(indices, texts, strict=True)
        ]
        preds = model.predict(inputs)
        for i, text, pred in zip(indices, texts, preds, strict=True):
            # Labels outside the taxonomy (none/clean/O/LABEL_0) mean "nothing found".
            if pred.label not in CATEGORIES:
                clean[i] = pred.score
                continue
            if pred.score < cfg.model_review_threshold:
                continue
            context_index: int | None = None
            context_evidence: str | None = None
            if i in answered:
                context_index, turn_text = answered[i]
                context_evidence = turn_text[:_CONTEXT_EVIDENCE_CHARS]
            # Severity is decided in ``_combine``, where the rules' view is known.
            severity: Severity = "review"
            stripped = text.strip()
            start = text.find(stripped) if stripped else 0
            end = start + len(stripped)
            out[i] = [
                Finding(
                    category=pred.label,
                    severity=severity,
                    start=start,
                    end=min(end, start + _MODEL_EVIDENCE_CHARS),
                    evidence=text[start : min(end, start + _MODEL_EVIDENCE_CHARS)],
                    rule_id=f"model:{model.name}@{model.version}",
                    source="model",
                    basis=self.ruleset.category_basis(pred.label),
                    score=round(pred.score, 4),
                    context_index=context_index,
                    context_evidence=context_evidence,
                )
            ]
        return out, clean

    @staticmethod
    def _alone_decides(
        category: str, rule_findings: list[Finding], reading: Reading | None, anchored: bool
    ) -> bool:
        """Whether naming the customer turn or not can change what a line's model finding
        of ``category`` comes to, given the line's rule and frame findings (``Reading.apply``
        done), its frames' reading and whether it stands on financial ground.

        Not when the frames drop the finding either way (a category they cleared, a
        refusal), nor when ``_combine`` keeps nothing of the line (no rule finding, off
        financial ground). Otherwise, when frames recognised a question (or none were
        read) the finding is kept either way, and it joins the line's findings only when
        no rule finding shares its category (one that does only takes its score as
        corroboration). When no frame recognised a question, ``Reading.apply`` drops a
        finding that names a turn and keeps one that does not: that changes nothing only
        when rule findings of its category are all violations already (a model finding
        on a flagged line is never clean enough for ``_combine``'s veto).
        """
        if reading is not None and (reading.cleared.get(category) or reading.refused):
            return False
        if not rule_findings and not anchored:
            return False
        same = [f for f in rule_findings if f.category == category]
        if reading is None or reading.asked:
            return not same
        return not same or any(f.severity != "violation" for f in same)

    def _line_alone(
        self,
        found: dict[int, list[Finding]],
        answered: dict[int, tuple[int, str]],
        ruled: dict[int, tuple[list[Finding], Reading | None, bool]],
        texts: dict[int, str],
    ) -> dict[int, list[Finding]]:
        """``found`` with the customer turn no longer named where the line alone says it.

        A finding the model made from a line read with the turn it answers names that
        turn (``_model_findings``); the line is read alone too (a second pass, over the
        flagged lines only), and when it is flagged of the same category alone, the turn
        gave the line no meaning of its own and the finding does not name it. The second
        pass reads only the lines where that can change the result (``_alone_decides``).
        """
        assert self.violation_model is not None
        cfg = self.config
        decides = [
            i
            for i, fs in found.items()
            if i in answered and fs and self._alone_decides(fs[0].category, *ruled[i])
        ]
        if not decides:
            return found
        preds = self.violation_model.predict([violation_input(texts[i]) for i in decides])
        out = dict(found)
        for i, pred in zip(decides, preds, strict=True):
            out[i] = [
                replace(f, context_index=None, context_evidence=None)
                if pred.label == f.category and pred.score >= cfg.model_review_threshold
                else f
                for f in found[i]
            ]
        return out


_cache: dict[AnalyzerConfig, Analyzer] = {}
_cache_lock = threading.Lock()


def get_analyzer(config: AnalyzerConfig | None = None) -> Analyzer:
    """One analyzer per distinct config per process (models load once)."""
    key = config or AnalyzerConfig()
    analyzer = _cache.get(key)
    if analyzer is None:
        with _cache_lock:
            analyzer = _cache.get(key)
            if analyzer is None:
                analyzer = Analyzer(key)
                _cache[key] = analyzer
    return analyzer


def analyze(
    text: str,
    role: Role,
    config: AnalyzerConfig | None = None,
    *,
    context: Context | None = None,
) -> Analysis:
    """Analyse one message, optionally with the conversation before it (oldest first).

    Raises ``AnalysisError`` for input it refuses.
    """
    return get_analyzer(config).analyze(text, role, context=context)


__all__ += ["ModelLoadError"]
