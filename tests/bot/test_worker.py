"""Worker semantics: hooks in the transaction, retries, dead letters, requeue."""

from __future__ import annotations

from typing import Any

import pytest

from bot import models
from bot.hooks import StoredMessage
from bot.keys import STREAM
from bot.worker import requeue_dead_letter
from core.domain import Domain
from core.settings import Settings
from siyu.domains import DOMAINS
from tests.bot.harness import start_edge
from tests.bot.test_edge import text_msg


@pytest.fixture
async def flaky_edge(settings: Settings, analyzer: Any, redis_client: Any, db: None):  # type: ignore[no-untyped-def]
    calls: dict[str, int] = {"n": 0, "fail": 0}

    async def flaky_tagging_hook(message: StoredMessage, conn: Any) -> None:
        calls["n"] += 1
        if calls["fail"] > 0:
            calls["fail"] -= 1
            raise RuntimeError("tagging service hiccup")

    settings.pipeline.max_deliveries = 3
    flaky = Domain(name="flaky", hooks={"on_message": flaky_tagging_hook})
    edge, closers = await start_edge(settings, analyzer=analyzer, domains=(*DOMAINS, flaky))
    try:
        yield edge, calls
    finally:
        for c in closers:
            await c()


async def test_failing_hook_rolls_back_and_is_retried(flaky_edge) -> None:  # type: ignore[no-untyped-def]
    edge, calls = flaky_edge
    calls["fail"] = 1
    await edge.post_callback(text_msg("8100000000000000001", "你好"))
    await edge.process_all()
    # First delivery failed inside the transaction: nothing half-stored; the
    # reclaimed delivery stored the message once.
    assert await models.Message.filter(msgid="8100000000000000001").count() == 1
    assert calls["n"] == 2
    assert await models.DeadLetter.all().count() == 0
    length, pending = await edge.app[STREAM].depth()
    assert (length, pending) == (0, 0)


async def test_poison_entry_goes_to_dead_letter_then_requeues(flaky_edge) -> None:  # type: ignore[no-untyped-def]
    edge, calls = flaky_edge
    calls["fail"] = 100
    await edge.post_callback(text_msg("8100000000000000002", "你好"))
    await edge.process_all()
    assert await models.Message.filter(msgid="8100000000000000002").count() == 0
    dl = await models.DeadLetter.get()
    assert dl.deliveries == 3 and "tagging service hiccup" in dl.error
    assert "你好" not in dl.payload_sealed  # kept sealed
    assert (await edge.app[STREAM].depth()) == (0, 0)  # acknowledged, not lost
    calls["fail"] = 0
    await requeue_dead_letter(edge.app[STREAM], dl.id)
    await edge.process_all()
    assert await models.Message.filter(msgid="8100000000000000002").count() == 1
    assert (await models.DeadLetter.get(id=dl.id)).status == "requeued"


async def test_dead_idle_consumers_are_forgotten_busy_ones_kept(flaky_edge) -> None:  # type: ignore[no-untyped-def]
    edge, _calls = flaky_edge
    stream = edge.app[STREAM]
    await edge.post_callback(text_msg("8100000000000000003", "你好"))
    # "ghost-busy" reads the entry and dies holding it; "ghost-idle" holds nothing.
    await stream.redis.xreadgroup(stream.group, "ghost-busy", {stream.stream: ">"}, count=1)
    await stream.redis.xgroup_createconsumer(stream.stream, stream.group, "ghost-idle")
    assert await edge.worker.forget_dead_consumers(idle_ms=-1) == 1
    names = {c["name"] for c in await stream.redis.xinfo_consumers(stream.stream, stream.group)}
    assert b"ghost-busy" in names and b"ghost-idle" not in names
