"""What the rule-round test modules ask of an analysis: the categories found as violations
(review findings left out) in an advisor's line, alone or after the turns before it."""

from __future__ import annotations

from compliance_nlp import Analyzer
from compliance_nlp.types import Turn


def line_violations(analyzer: Analyzer, text: str) -> set[str]:
    """Categories an advisor line read alone is a violation of."""
    found = analyzer.analyze(text, "advisor").violations
    return {f.category for f in found if f.severity == "violation"}


def reply_violations(analyzer: Analyzer, turns: list[Turn], reply: str) -> set[str]:
    """Categories an advisor reply is a violation of, read after ``turns`` (oldest first)."""
    result = analyzer.analyze(reply, "advisor", context=turns)
    return {f.category for f in result.violations if f.severity == "violation"}
