"""An analyzer process freezes what it loaded, so full collections skip the models."""

from __future__ import annotations

import asyncio

from compliance_nlp import AnalyzerConfig
from compliance_nlp.pool import AnalyzerPool, _worker_frozen


async def test_a_warmed_pool_process_has_frozen_its_models() -> None:
    pool = AnalyzerPool(AnalyzerConfig(), processes=1)
    await pool.start()
    try:
        loop = asyncio.get_running_loop()
        frozen = await loop.run_in_executor(pool._require(), _worker_frozen)
        # The rules, tokenizers and ONNX sessions are tens of thousands of objects.
        assert frozen > 10_000
        results = await pool.analyze_many([("加我VX详聊", "advisor")])
        assert results[0].violations[0].category == "off_book_dealing"
    finally:
        await pool.close()
