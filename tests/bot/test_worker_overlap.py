"""A read is analysed while the read before it is stored, without changing what is judged.

The analyzer runs in its own process: storing read N while read N+1 waits for the
analyzer (and the reverse) left one of the two idle at any time.  What must not change:
reads are stored in the order read and acknowledged after their own commit, and a line
is judged with its conversation as if every read had been stored before the next one
(read N's messages are not in the database yet when read N+1 is prepared).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest

import bot.pipeline
from bot import models
from bot.flows import do_store_messages
from bot.keys import STREAM
from bot.worker import Worker
from compliance_nlp.types import Turn
from tests.bot.harness import Edge
from tests.bot.test_context_pipeline import a_relation, record


class Recording:
    """The edge's analyzer, writing down each call's texts and contexts in ``log``."""

    def __init__(self, analyzer: Any, log: list[tuple[str, Any]]) -> None:
        self.analyzer = analyzer
        self.log = log
        self.contexts: dict[str, tuple[Turn, ...] | None] = {}

    async def analyze_many(
        self, items: Sequence[tuple[str, str]], contexts: Sequence[Any] | None = None
    ) -> list[Any]:
        self.log.append(("analyse", [text for text, _ in items]))
        for (text, _), ctx in zip(items, contexts or [None] * len(items), strict=True):
            self.contexts[text] = ctx
        return list(await self.analyzer.analyze_many(items, contexts))


def one_per_read(edge: Edge, log: list[tuple[str, Any]], monkeypatch: Any) -> Recording:
    """Point the edge's worker at a recording analyzer and one entry per read; write down
    each read's commit (``do_store_messages`` returns once its transaction is over)."""
    store = do_store_messages

    async def recorded_store(*, items: Any, deps: Any) -> Any:
        results = await store(items=items, deps=deps)
        log.append(("stored", [m.draft.msgid for m in items]))
        return results

    monkeypatch.setattr(bot.pipeline, "do_store_messages", recorded_store)
    recording = Recording(edge.worker.pipeline.analyzer, log)
    edge.worker = Worker(
        stream=edge.app[STREAM],
        pipeline=dataclasses.replace(edge.worker.pipeline, analyzer=recording),
        settings=edge.settings.pipeline.model_copy(update={"batch_size": 1}),
        metrics=edge.worker.metrics,
        consumer="overlap-worker",
    )
    return recording


async def test_a_read_is_analysed_while_the_read_before_it_is_stored(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    texts = ["请问周末营业吗？", "周末正常营业", "好的谢谢"]
    records = [
        record(f"o{i}", *((ext, userid) if i % 2 == 0 else (userid, ext)), text, now + i * 1000)
        for i, text in enumerate(texts)
    ]
    log: list[tuple[str, Any]] = []
    one_per_read(edge, log, monkeypatch)
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and body["accepted"] == 3

    assert await edge.worker.run_once(block_ms=None) == 3
    # Read 2 went to the analyzer before read 1 was committed, read 3 before read 2 was.
    assert log == [
        ("analyse", [texts[0]]),
        ("analyse", [texts[1]]),
        ("stored", ["o0"]),
        ("analyse", [texts[2]]),
        ("stored", ["o1"]),
        ("stored", ["o2"]),
    ]
    assert await edge.app[STREAM].depth() == (0, 0)  # each acknowledged after its commit
    stored = await models.Message.filter(source="archive").order_by("id").values_list("msgid")
    assert [msgid for (msgid,) in stored] == ["o0", "o1", "o2"]  # in the order read


async def test_a_line_is_judged_with_the_read_before_it_not_yet_stored(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question is in read 1, the advisor's answer in read 2: when read 2 is prepared
    the question is not in the database, yet its answer is judged with it — masked, as
    it will be stored."""
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    question = "王经理，这款理财到期本金能拿回来吧？我电话13812345678"
    records = [
        record("q1", ext, userid, question, now),
        record("a1", userid, ext, "是的👌", now + 20_000),
    ]
    log: list[tuple[str, Any]] = []
    recording = one_per_read(edge, log, monkeypatch)
    assert (await edge.api("POST", "/api/v1/archive/messages", json=records))[0] == 200

    assert await edge.worker.run_once(block_ms=None) == 2
    assert [k for k, _ in log] == ["analyse", "analyse", "stored", "stored"]
    context = recording.contexts["是的👌"]
    assert context is not None and [t.role for t in context] == ["customer"]
    assert "本金能拿回来" in context[0].text
    assert "13812345678" not in context[0].text  # the masked text, as stored
    stored_question = await models.Message.get(source="archive", msgid="q1")
    assert context[0].text == stored_question.masked_text
    answer = await models.Message.get(source="archive", msgid="a1")
    assert answer.has_violation
    assert await models.ReviewCase.filter(message=answer).exists()


async def test_a_worker_asked_to_stop_stores_the_reads_in_hand_and_reads_no_more(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown gives the worker ten seconds: it stores and acknowledges the reads it
    holds, then stops reading — the rest stays in the stream for the next worker."""
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    records = [record(f"s{i}", ext, userid, f"第{i}条", now + i * 1000) for i in range(5)]
    log: list[tuple[str, Any]] = []
    recording = one_per_read(edge, log, monkeypatch)
    stop = asyncio.Event()
    analyse = recording.analyze_many

    async def stop_on_first(items: Any, contexts: Any = None) -> list[Any]:
        stop.set()  # SIGTERM arrives while read 1 is being analysed
        return await analyse(items, contexts)

    monkeypatch.setattr(recording, "analyze_many", stop_on_first)
    assert (await edge.api("POST", "/api/v1/archive/messages", json=records))[0] == 200

    await asyncio.wait_for(edge.worker.run(stop), timeout=60)
    # Read 2 was already read when the stop came: both stored, nothing more read.
    assert [k for k, _ in log] == ["analyse", "analyse", "stored", "stored"]
    stored = await models.Message.filter(source="archive").values_list("msgid")
    assert sorted(m for (m,) in stored) == ["s0", "s1"]
    assert await edge.app[STREAM].depth() == (3, 0)  # unread, not pending
