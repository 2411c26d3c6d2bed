"""What must still hold when a touch goes out: the checks of the scheduler and the
outbox's before-send re-check (``check_*``: they read, they change nothing).

A touch that fails is skipped with the reason stored, never sent:

==================  ==========================================================
``opted_out``       the customer replied 退订, or an operator opted them out
``relation_deleted`` the advisor no longer follows the customer
``unsuitable``      product risk R*n* above the customer's imported C*n*
                    (《证券期货投资者适当性管理办法》 art. 19; 《商业银行理财业务
                    监督管理办法》 art. 26)
``compliance``      the step's content now has a ``violation`` (the lexicon or the
                    model changed since the campaign was approved)
``exited``          the enrolment ended (replied, goal, tag …) before the touch went
``late``            not handed to WeCom within its lateness allowance
``mass_send_allowance`` the customer has had today's mass send already
==================  ==========================================================

Quiet hours and quotas are not failures: the touch is moved to the next moment it
may go (``sop.engine.dispatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compliance_nlp import AnalyzerConfig, get_analyzer
from sop.engine.specs import content_text, render

log = logging.getLogger(__name__)

__all__ = ["ContentVerdict", "check_content", "check_suitability", "risk_rank"]

RISK = ("1", "2", "3", "4", "5")


def risk_rank(level: Any, prefix: str) -> int | None:
    """``"R4"`` → 4 for prefix ``R``; None when absent or not a level."""
    if not isinstance(level, str) or len(level) != 2 or level[0].upper() != prefix:
        return None
    return int(level[1]) if level[1] in RISK else None


def check_suitability(
    product: Mapping[str, Any] | None, attributes: Mapping[str, Any]
) -> str | None:
    """``unsuitable`` when the product's risk exceeds the customer's tolerance.

    Only where both are known: the campaign names a product with a risk level and the
    institution imported the customer's level (``attr.risk_level``, C1–C5).  A product
    of risk R*n* needs a customer of C*n* or above.
    """
    if not product:
        return None
    r = risk_rank(product.get("risk_level"), "R")
    c = risk_rank(attributes.get("risk_level"), "C")
    if r is None or c is None:
        return None
    return "unsuitable" if c < r else None


SAMPLE_VALUES = {
    "customer_name": "王先生",
    "advisor_name": "张经理",
    "product_name": "该产品",
    "maturity_date": "2026年12月31日",
}


@dataclass(frozen=True)
class ContentVerdict:
    violation: bool
    categories: tuple[str, ...]


class ContentChecker:
    """The step's content through compliance_nlp, once per text and analyzer version.

    Content is re-checked at send time because the lexicon and the models may have
    changed since compliance approved the campaign; the same text under the same
    analyzer gives the same answer, so each distinct text is analysed once.
    """

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self._config = config or AnalyzerConfig()
        self._cache: dict[str, ContentVerdict] = {}
        self._lock = asyncio.Lock()

    def _analyse(self, text: str) -> ContentVerdict:
        analysis = get_analyzer(self._config).analyze(text, "advisor")
        cats = tuple(sorted({f.category for f in analysis.violations if f.severity == "violation"}))
        return ContentVerdict(bool(cats), cats)

    async def verdict(self, content: Mapping[str, Any]) -> ContentVerdict:
        # Variables read as ordinary words (a name, a date), never as braces the model
        # has not seen in training: what is checked is what a customer would read.
        text = render(content_text(content), SAMPLE_VALUES)
        if not text.strip():
            return ContentVerdict(False, ())
        analyzer = get_analyzer(self._config)
        key = hashlib.sha256(f"{analyzer.model_version}\0{text}".encode()).hexdigest()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        async with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                # The model is CPU-bound: off the event loop.
                hit = await asyncio.to_thread(self._analyse, text)
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[key] = hit
        return hit


async def check_content(checker: ContentChecker, content: Mapping[str, Any]) -> str | None:
    verdict = await checker.verdict(content)
    if verdict.violation:
        log.warning("touch content fails compliance now", extra={"categories": verdict.categories})
        return "compliance"
    return None
