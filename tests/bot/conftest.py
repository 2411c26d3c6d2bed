from __future__ import annotations

import asyncio
from typing import Any


class InThreadAnalyzer:
    """The real compliance_nlp analysis (shipped model), run off the event loop."""

    def __init__(self) -> None:
        from compliance_nlp import AnalyzerConfig

        self.config = AnalyzerConfig()

    async def analyze_many(self, items: list[tuple[str, str]]) -> list[Any]:
        from compliance_nlp import analyze

        return await asyncio.to_thread(
            lambda: [analyze(text, role, self.config) for text, role in items]  # type: ignore[arg-type]
        )
