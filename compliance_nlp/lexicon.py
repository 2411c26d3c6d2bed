"""Lexicon sentiment and the keyword intent fallback (customer messages)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ahocorasick

from compliance_nlp.rules import RULES_DIR, load_json
from compliance_nlp.types import Sentiment

__all__ = ["DomainAnchors", "KeywordIntent", "SentimentLexicon"]


class SentimentLexicon:
    """Counts positive/negative words (longest match wins, a negator flips the polarity).

    Good enough to route churn alerts; the label is advisory, not a compliance finding.
    """

    def __init__(self, directory: str = "") -> None:
        from pathlib import Path

        data = load_json("sentiment.json", Path(directory) if directory else None)
        self.version = str(data["version"])
        automaton: Any = ahocorasick.Automaton()
        for word in data["positive"]:
            automaton.add_word(word, (1, len(word)))
        for word in data["negative"]:
            automaton.add_word(word, (-1, len(word)))
        automaton.make_automaton()
        self._automaton = automaton
        self._pos_emoji = tuple(data["positive_emoji"])
        self._neg_emoji = tuple(data["negative_emoji"])
        self._negators = tuple(sorted(data["negators"], key=len, reverse=True))

    def score(self, norm_text: str, original: str) -> Sentiment:
        matches: list[tuple[int, int, int]] = []
        for end_index, (polarity, length) in self._automaton.iter(norm_text):
            matches.append((end_index - length + 1, end_index + 1, polarity))
        total = 0
        if matches:
            matches.sort(key=lambda m: (m[0], m[0] - m[1]))
            last_end = -1
            for start, end, polarity in matches:
                if start < last_end:
                    continue
                last_end = end
                before = norm_text[max(0, start - 2) : start]
                if polarity > 0 and any(before.endswith(n) for n in self._negators):
                    polarity = -polarity
                total += polarity
        if any(e in original for e in self._pos_emoji):
            total += 1
        if any(e in original for e in self._neg_emoji):
            total -= 1
        if total > 0:
            return "positive"
        if total < 0:
            return "negative"
        return "neutral"


class KeywordIntent:
    """Fallback intent when no model is configured: first intent whose keyword occurs."""

    def __init__(self, directory: str = "") -> None:
        from pathlib import Path

        data = load_json("intents.json", Path(directory) if directory else None)
        self.version = str(data["version"])
        self._order: list[str] = list(data["order"])
        automaton: Any = ahocorasick.Automaton()
        rank = {name: i for i, name in enumerate(self._order)}
        for name, words in data["keywords"].items():
            for word in words:
                current = automaton.get(word, None)
                if current is None or rank[name] < current:
                    automaton.add_word(word, rank[name])
        automaton.make_automaton()
        self._automaton = automaton
        # Phrasings that decide the intent whatever the model read (``decisive``): a
        # grievance (凭什么扣我, 说好的…呢, 谁负责) is a complaint though it names a card
        # fee or an app; an order in the first person (我要买, 也来一份, 再加2万进去) is a
        # purchase though it names the product. Each overrules only the labels in its
        # ``over`` list, so 想买R4的, 得测到什么级别 stays a risk-assessment question.
        self._decisive: list[
            tuple[str, frozenset[str], re.Pattern[str], re.Pattern[str] | None]
        ] = [
            (
                str(cue["intent"]),
                frozenset(str(x) for x in cue["over"]),
                re.compile("|".join(cue["patterns"])),
                re.compile("|".join(cue["unless"])) if cue.get("unless") else None,
            )
            for cue in data.get("decisive", [])
        ]
        self.decisive_score = float(data.get("decisive_score", 0.9))

    def decisive(self, norm_text: str, predicted: str) -> str | None:
        """The intent a decisive phrasing gives ``norm_text`` over ``predicted``, if any."""
        for intent, over, pattern, unless in self._decisive:
            if intent != predicted and predicted not in over:
                continue
            if not pattern.search(norm_text):
                continue
            if unless is not None and unless.search(norm_text):
                continue
            # A cue of the label read already confirms it: later cues do not overrule.
            return None if intent == predicted else intent
        return None

    def classify(self, norm_text: str) -> tuple[str, float]:
        best = len(self._order)
        for _, rank in self._automaton.iter(norm_text):
            best = min(best, rank)
        if best < len(self._order):
            return self._order[best], 0.5
        return "chitchat", 0.5


class DomainAnchors:
    """Does a text stand on financial ground at all? (``rules/anchors.json``)

    The evidence a model-only violation needs: the small classifier gives saturated
    scores to lines unlike its training data (「晚安」, 「恭喜发财🧧」 read as violations at
    0.91), so ``Analyzer`` keeps a model finding no rule shares only when the line, or the
    customer turn it answers, names money, a product, an account, a procedure, the market
    or an institution. A rules directory without its own anchors file uses the shipped one.
    """

    def __init__(self, directory: str = "") -> None:
        where = Path(directory) if directory else None
        if where is not None and not (where / "anchors.json").is_file():
            where = RULES_DIR
        data = load_json("anchors.json", where)
        self.version = str(data["version"])
        automaton: Any = ahocorasick.Automaton()
        for term in data["terms"]:
            automaton.add_word(str(term), str(term))
        automaton.make_automaton()
        self._automaton = automaton
        self._patterns = tuple(re.compile(p) for p in data["patterns"])
        self._latin_everyday = frozenset(str(w) for w in data["latin_everyday"])
        self._latin = re.compile(r"[a-z]{2,}")
        # Everyday words holding an anchor (不好意思, 钱先生, 车票): blanked first.
        words = sorted((str(w) for w in data.get("not_anchors", [])), key=len, reverse=True)
        self._not_anchors = re.compile("|".join(map(re.escape, words))) if words else None
        # Shapes of everyday logistics (a phone number, an extension, a room, a distance):
        # blanked before the literal words, so their digits are no amount.
        self._not_anchor_patterns = tuple(
            re.compile(p) for p in data.get("not_anchor_patterns", [])
        )
        # What the line itself says against a category the model alone proposes: a risk
        # disclosed, a level mismatch refused, a scam warned against (``counter_evidence``).
        self._counter: tuple[tuple[frozenset[str], tuple[re.Pattern[str], ...]], ...] = tuple(
            (
                frozenset(str(c) for c in group["categories"]),
                tuple(re.compile(p) for p in group["patterns"]),
            )
            for group in data.get("counter_evidence", [])
        )
        # What a line must say for a category's act to be there at all (``category_ground``).
        self._ground: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...] = tuple(
            (str(category), tuple(re.compile(p) for p in patterns))
            for category, patterns in data.get("category_ground", {}).items()
        )

    def anchored(self, norm_text: str) -> bool:
        """True when the normalised text names something financial (see the class doc)."""
        text = norm_text.lower()
        for pattern in self._not_anchor_patterns:
            text = pattern.sub("|", text)
        if self._not_anchors is not None:
            text = self._not_anchors.sub("|", text)
        for _ in self._automaton.iter(text):
            return True
        if any(p.search(text) for p in self._patterns):
            return True
        return any(w not in self._latin_everyday for w in self._latin.findall(text))

    def countered(self, norm_text: str) -> frozenset[str]:
        """Categories the normalised line speaks against (``counter_evidence`` in
        anchors.json): a violation of one of them only the model proposes is no evidence
        there — the small model reads 「港股通有汇率风险」 or 「您是C2，这款R4的超出您的等级
        了，我不能给您推荐」 as the violation the line is disclosing or refusing."""
        text = norm_text.lower()
        out: set[str] = set()
        for categories, patterns in self._counter:
            if not categories <= out and any(p.search(text) for p in patterns):
                out |= categories
        return frozenset(out)

    def ungrounded(self, norm_text: str, answered: str = "") -> frozenset[str]:
        """Categories whose act neither the normalised line nor the customer turn it
        answers can describe (``category_ground`` in anchors.json): account custody needs
        the advisor or a handing-over or acting verb, so 「密码输错三次会锁，您慢慢来」 is
        no evidence of it, whatever the model's score; 「好的收到」 after 「验证码发你了」
        still is."""
        texts = [norm_text.lower(), answered.lower()]
        return frozenset(
            category
            for category, patterns in self._ground
            if not any(p.search(t) for p in patterns for t in texts if t)
        )
