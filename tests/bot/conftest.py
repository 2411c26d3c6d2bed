from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.settings import Settings
from tests.bot.harness import Edge, start_edge


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


@pytest.fixture
async def edge(settings: Settings, analyzer: InThreadAnalyzer, redis_client: Any, db: None
               ) -> AsyncIterator[Edge]:
    # db: a migrated, emptied database (PostgreSQL is shared by the session).
    # redis_client: the shared test Redis, flushed for this test.
    e, closers = await start_edge(settings, analyzer=analyzer)
    try:
        yield e
    finally:
        for close in closers:
            await close()
