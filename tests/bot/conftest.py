from __future__ import annotations

import asyncio
from typing import Any


class InThreadAnalyzer:
    """The real compliance_nlp analysis (shipped model), run off the event loop."""

    def __init__(self) -> None:
        from compliance_nlp import AnalyzerConfig

        self.config = AnalyzerConfig()

    async def analyze_many(
        self, items: list[tuple[str, str]], contexts: list[Any] | None = None
    ) -> list[Any]:
        from compliance_nlp import get_analyzer

        return await asyncio.to_thread(get_analyzer(self.config).analyze_many, items, contexts)
