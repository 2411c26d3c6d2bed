"""The read's hooks run last in its transaction, after the edge's own review cases and
alerts are written: the admin dashboard's counters, rows every worker's reads update,
stay locked from its update to the commit, no longer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import models
from bot.flows import StoreDeps, do_store_messages
from bot.hooks import Hooks, NamedHook, StoredMessage
from core.settings import Settings
from tests.bot.test_store_together import VIOLATION, _chat, _keyring, _read


async def test_a_read_hook_finds_the_reads_review_cases_and_alerts_written(
    db: None, settings: Settings, analyzer: Any
) -> None:
    seen: list[tuple[int, int]] = []

    async def per_read(messages: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
        ids = [m.id for m in messages]
        cases = await models.ReviewCase.filter(message_id__in=ids).using_db(conn).count()
        alerts = await models.Alert.filter(kind="violation").using_db(conn).count()
        seen.append((cases, alerts))

    deps = StoreDeps(
        keyring=_keyring(settings),
        hooks=Hooks(on_messages=(NamedHook("test.on_messages", per_read),)),
        agent_id=1000002,
    )
    read = await _read(analyzer, [_chat("h1", VIOLATION), _chat("h2"), _chat("h3", VIOLATION)])
    await do_store_messages(items=read, deps=deps)
    assert seen == [(2, 2)]
