"""The worker's analyzer takes a read as one batch: the pool's batches are the reads."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bot.app import analyzer_ctx
from bot.keys import ANALYZER, SETTINGS
from compliance_nlp.pool import AnalyzerPool
from core.appkit import STOP, TASKS
from core.settings import Settings


async def test_the_pool_batches_as_many_messages_as_a_read_holds(
    settings: Settings, db: None
) -> None:
    settings.pipeline.batch_size = 96
    settings.nlp.pool_size = 0  # in-process: the rules-only analyzer starts in a second
    settings.nlp.use_model = False
    app = web.Application()
    app[SETTINGS] = settings
    app[STOP] = asyncio.Event()
    app[TASKS] = []
    ctx = analyzer_ctx(app)
    await anext(ctx)
    try:
        pool = app[ANALYZER]
        assert isinstance(pool, AnalyzerPool)
        assert pool.batch_size == 96
    finally:
        app[STOP].set()
        await asyncio.gather(*app[TASKS])
        await anext(ctx, None)
