"""A round that fails while a read is stored and the next one analysed loses nothing.

The worker stores read N while read N+1 is already with the analyzer.  When the round
fails half-way (Redis gone at read N's acknowledgement), both reads stay pending and are
reclaimed; the analysis of read N+1 is called off rather than left running with no one
to take its result, so batches still queued for the analyzer do not hold it from the
next round.  When the reads come back, each message is stored once and the answer in
read N+1 is still judged with the question of read N.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis.exceptions

from bot import models
from bot.keys import STREAM
from tests.bot.harness import Edge
from tests.bot.test_context_pipeline import a_relation, record
from tests.bot.test_worker_overlap import one_per_read

QUESTION = "王经理，这款理财到期本金能拿回来吧？"
ANSWER = "是的👌"


async def test_a_round_failing_after_a_commit_calls_off_the_next_reads_analysis(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    records = [
        record("ov-q", ext, userid, QUESTION, now),
        record("ov-a", userid, ext, ANSWER, now + 20_000),
    ]
    log: list[tuple[str, Any]] = []
    recording = one_per_read(edge, log, monkeypatch)
    analyse = recording.analyze_many
    held = asyncio.Event()  # the answer's analysis waits on it while the question is stored
    called_off: list[str] = []

    async def hold_the_answer(
        items: Sequence[tuple[str, str]], contexts: Sequence[Any] | None = None
    ) -> list[Any]:
        if [text for text, _ in items] == [ANSWER] and not held.is_set():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                called_off.append(ANSWER)
                raise
        return await analyse(items, contexts)

    monkeypatch.setattr(recording, "analyze_many", hold_the_answer)
    worker = edge.worker
    ack = worker._ack

    async def redis_gone(ids: list[str], *, reclaimed: bool) -> None:
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(worker, "_ack", redis_gone)
    assert (await edge.api("POST", "/api/v1/archive/messages", json=records))[0] == 200

    with pytest.raises(redis.exceptions.ConnectionError):
        await worker.run_once(block_ms=None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert called_off == [ANSWER]
    # The question was committed before its acknowledgement failed; nothing else was.
    assert await models.Message.filter(source="archive").values_list("msgid", flat=True) == ["ov-q"]
    assert await edge.app[STREAM].depth() == (2, 2)  # both entries pending, none lost

    # Redis is back: the entries are reclaimed, the question is found stored (not stored
    # twice) and the answer is judged with it, now from the database.
    monkeypatch.setattr(worker, "_ack", ack)
    held.set()
    await edge.process_all()
    assert await edge.app[STREAM].depth() == (0, 0)
    stored = await models.Message.filter(source="archive").order_by("id").values_list("msgid")
    assert [m for (m,) in stored] == ["ov-q", "ov-a"]
    answer = await models.Message.get(source="archive", msgid="ov-a")
    assert answer.has_violation
    context = recording.contexts[ANSWER]
    assert context is not None and "本金能拿回来" in context[0].text
    assert await models.ReviewCase.filter(message=answer).count() == 1
