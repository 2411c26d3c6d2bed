"""The 会话存档 puller on a bad day: missing or wrong keys, SDK hiccups, long ids, a lost
lock, a restarted sandbox.  Nothing it pulled is lost or skipped, the cursor never goes
back, and the operator is told once when it stops and once when it carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bot import models
from bot import service as bot_service
from bot.archive_puller import ArchivePuller, FinanceSdkError
from bot.keys import METRICS, STREAM
from bot.sandbox.archive import SandboxArchive, SandboxFinanceSdk, add_archive_routes
from core.server import start_site
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, cli_env, record

__all__ = ["cli_env"]  # the CLI test's environment fixture


async def no_sleep(_seconds: float) -> None:
    return None


def puller(edge: Edge, archive: SandboxArchive, *, sdk: Any = None, **kw: Any) -> ArchivePuller:
    keys = kw.pop("private_keys", None)
    return ArchivePuller(
        sdk=sdk or SandboxFinanceSdk(edge.fake_base),
        private_keys=keys if keys is not None else {"1": archive.private_key(1)},
        stream=edge.app[STREAM],
        metrics=edge.app[METRICS],
        sleep=no_sleep,
        **kw,
    )


def add_chat(edge: Edge, archive: SandboxArchive, n: int, prefix: str) -> list[int]:
    userid, ext = a_relation(edge)
    return [
        archive.append(record(f"{prefix}{i}", ext, userid, f"第{i}条：我想了解一下理财"))
        for i in range(n)
    ]


def blocked_gauge(edge: Edge, reason: str, ver: str) -> float | None:
    return edge.app[METRICS].registry.get_sample_value(
        "siyu_archive_blocked", {"reason": reason, "publickey_ver": ver}
    )


def puller_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.archive_puller" and text in r.getMessage()]


class FlakySdk:
    """DecryptData fails ``failures`` times (a native SDK hiccup), then works."""

    def __init__(self, inner: SandboxFinanceSdk, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def get_chat_data(self, seq: int, limit: int, timeout_s: int) -> list[dict[str, Any]]:
        return self.inner.get_chat_data(seq, limit, timeout_s)

    def decrypt_data(self, random_key: str, encrypt_chat_msg: str) -> str:
        if self.failures:
            self.failures -= 1
            raise FinanceSdkError("DecryptData", 10003)
        return self.inner.decrypt_data(random_key, encrypt_chat_msg)

    def close(self) -> None:
        return None


class HeldSdk(FlakySdk):
    """The first GetChatData waits until the test lets it go (a slow pull)."""

    def __init__(self, inner: SandboxFinanceSdk) -> None:
        super().__init__(inner, 0)
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_chat_data(self, seq: int, limit: int, timeout_s: int) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(30)
        return self.inner.get_chat_data(seq, limit, timeout_s)


# ------------------------------------------------------------------- keys


async def test_a_missing_key_stops_the_cursor_before_the_record_and_alerts_once(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    add_chat(edge, edge.archive, 3, "v1-")
    edge.archive.rotate_key()  # the console got a new public key; siyu has not the private one
    add_chat(edge, edge.archive, 2, "v2-")
    p = puller(edge, edge.archive)

    first = await p.pull_once()
    again = await p.pull_once()

    assert (first.accepted, first.dead_lettered, first.cursor) == (3, 0, 3)
    assert first.blocked is not None and (first.blocked.reason, first.blocked.seq) == (
        "missing_key",
        4,
    )
    assert (again.accepted, again.cursor) == (0, 3)  # still waiting, nothing skipped
    assert await models.DeadLetter.all().count() == 0
    assert (await models.ArchiveCursor.get(name="default")).seq == 3
    assert len(puller_lines(caplog, "stopped before a record")) == 1  # once, not per pull
    assert blocked_gauge(edge, "missing_key", "2") == 1.0

    p.private_keys["2"] = edge.archive.private_key(2)  # configured, scheduler restarted
    resumed = await p.pull_once()

    assert (resumed.accepted, resumed.cursor, resumed.blocked) == (2, 5, None)
    assert len(puller_lines(caplog, "resumed")) == 1
    assert blocked_gauge(edge, "missing_key", "2") == 0.0
    await edge.process_all()
    assert await models.Message.filter(source="archive").count() == 5


async def test_a_decrypt_hiccup_is_retried_not_dead_lettered(edge: Edge) -> None:
    add_chat(edge, edge.archive, 4, "h")
    sdk = FlakySdk(SandboxFinanceSdk(edge.fake_base), failures=2)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    p = puller(edge, edge.archive, sdk=sdk)
    p._sleep = sleep
    report = await p.pull_once()

    assert (report.accepted, report.dead_lettered, report.cursor) == (4, 0, 4)
    assert delays == [0.25, 0.5]  # backing off between tries
    assert await models.DeadLetter.all().count() == 0


async def test_a_wrong_key_dead_letters_a_few_sealed_then_stops_and_redecrypt_recovers_them(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    add_chat(edge, edge.archive, 5, "w")
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = puller(edge, edge.archive, private_keys={"1": wrong})

    first = await p.pull_once()
    second = await p.pull_once()

    # Two failures in a row are dead-lettered; the third looks like a wrong key: stop.
    assert (first.dead_lettered, first.cursor) == (2, 2)
    assert first.blocked is not None and first.blocked.reason == "decrypt_failing"
    assert (second.dead_lettered, second.cursor) == (2, 4)
    assert len(puller_lines(caplog, "stopped before a record")) == 1
    dead = await models.DeadLetter.all().order_by("id")
    assert [d.source for d in dead] == ["archive_raw"] * 4
    assert all(d.deliveries == 3 for d in dead)  # tried three times each
    raw_items = [r for r in edge.archive.chat_data(0, 10)]
    for d in dead:  # sealed with the field key: not even WeCom's ciphertext in clear
        assert d.payload_sealed.startswith("v1.")
        assert not any(r["encrypt_random_key"] in d.payload_sealed for r in raw_items)

    p.private_keys["1"] = edge.archive.private_key(1)  # the right key file, restarted
    asked = await bot_service.request_archive_redecrypt(ids=None)
    fixed = await p.pull_once()

    assert asked == [d.id for d in dead]
    assert (fixed.redecrypted, fixed.accepted, fixed.cursor, fixed.blocked) == (4, 5, 5, None)
    assert {d.status for d in await models.DeadLetter.all()} == {"requeued"}
    await edge.process_all()
    assert await models.Message.filter(source="archive").count() == 5


async def test_a_redecrypt_that_still_fails_reopens_the_dead_letter(edge: Edge) -> None:
    add_chat(edge, edge.archive, 1, "s")
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = puller(edge, edge.archive, private_keys={"1": wrong})
    assert (await p.pull_once()).dead_lettered == 1
    assert await bot_service.request_archive_redecrypt(ids=None)

    report = await p.pull_once()  # still the wrong key

    assert report.redecrypted == 0 and report.errors
    dl = await models.DeadLetter.get()
    assert dl.status == "open" and dl.error.startswith("redecrypt:")


async def test_a_dead_letter_kept_in_clear_by_an_older_version_is_redecrypted(edge: Edge) -> None:
    add_chat(edge, edge.archive, 1, "legacy")
    item = edge.archive.chat_data(0, 1)[0]
    await bot_service.add_dead_letter(  # as the puller stored them before: the raw item
        stream_id=f"archive-seq-{item['seq']}",
        source="archive_raw",
        dedup_key=f"arc:{item['msgid']}",
        payload_sealed=json.dumps(item),
        error="decrypt: no private key for publickey_ver 1",
        deliveries=1,
    )
    p = puller(edge, edge.archive)
    await bot_service.advance_archive_cursor(name="default", seq=1)  # it was passed then

    assert await bot_service.request_archive_redecrypt(ids=None)
    report = await p.pull_once()

    assert (report.redecrypted, report.accepted) == (1, 1)
    assert (await models.DeadLetter.get()).status == "requeued"


# -------------------------------------------------------------------- ids


async def test_a_long_msgid_dead_letter_does_not_raise_out_of_the_pull(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    long_id = "1" * 40 + "_" + "a" * 60 + "_external"
    bad = record(long_id, ext, userid, "hi")
    bad["tolist"] = "not-a-list"  # fails validation: dead-lettered with its id
    edge.archive.append(bad)
    add_chat(edge, edge.archive, 2, "ok")
    p = puller(edge, edge.archive)

    report = await p.pull_once()
    again = await p.pull_once()

    assert (report.dead_lettered, report.accepted, report.cursor) == (1, 2, 3)
    assert again.records == 0  # the batch does not come back on every pull
    dl = await models.DeadLetter.get()
    assert dl.source == "archive" and len(dl.stream_id) <= 64


# ------------------------------------------------------------ lock, fence


async def test_a_puller_that_lost_its_lock_mid_pull_cannot_move_the_cursor(edge: Edge) -> None:
    add_chat(edge, edge.archive, 25, "f")
    held = HeldSdk(SandboxFinanceSdk(edge.fake_base))
    slow = puller(edge, edge.archive, sdk=held, batch_size=10)
    other = puller(edge, edge.archive, batch_size=10)

    slow_pull = asyncio.create_task(slow.pull_once())
    assert await asyncio.to_thread(held.entered.wait, 30)
    # Its lock expires while it waits on WeCom (a stalled process): another scheduler pulls.
    await edge.app[STREAM].redis.delete(edge.app[STREAM].keys.key("archive", "lock"))
    assert (await other.pull_once()).cursor == 25
    held.release.set()
    late = await slow_pull

    assert late.fenced
    assert held.calls == 1  # stopped at once: no second pull running beside the first
    assert (await models.ArchiveCursor.get(name="default")).seq == 25


async def test_the_lock_is_renewed_while_a_pull_runs(edge: Edge) -> None:
    add_chat(edge, edge.archive, 3, "r")
    held = HeldSdk(SandboxFinanceSdk(edge.fake_base))
    slow = puller(edge, edge.archive, sdk=held, lock_timeout_s=1.0)
    redis = edge.app[STREAM].redis
    lock_key = edge.app[STREAM].keys.key("archive", "lock")

    slow_pull = asyncio.create_task(slow.pull_once())
    assert await asyncio.to_thread(held.entered.wait, 30)
    loop = asyncio.get_running_loop()
    start = loop.time()
    lowest = await redis.pttl(lock_key)
    renewed = False
    # Past the lock's own timeout, it is still held (renewed, not merely fresh).
    while loop.time() - start < 1.5 or not renewed:
        assert loop.time() - start < 20, "the lock was never renewed"
        ttl = await redis.pttl(lock_key)
        assert ttl > 0, "the lock expired during the pull"
        renewed = renewed or ttl > lowest
        lowest = min(lowest, ttl)
        await asyncio.sleep(0.05)
    assert (await puller(edge, edge.archive).pull_once()).batches == 0  # held: not pulled

    held.release.set()
    report = await slow_pull
    assert (report.accepted, report.fenced) == (3, False)


async def test_the_cursor_never_moves_back(edge: Edge) -> None:
    lease = await bot_service.claim_archive_cursor(name="default")
    assert await bot_service.advance_archive_cursor(name="default", seq=10, fence=lease.fence)
    assert await bot_service.advance_archive_cursor(name="default", seq=4, fence=lease.fence)
    assert (await models.ArchiveCursor.get(name="default")).seq == 10
    newer = await bot_service.claim_archive_cursor(name="default")
    assert newer.seq == 10 and newer.fence == lease.fence + 1
    assert not await bot_service.advance_archive_cursor(name="default", seq=20, fence=lease.fence)
    assert (await models.ArchiveCursor.get(name="default")).seq == 10


# ---------------------------------------------------------------- sandbox


@pytest.fixture
async def serve_archive() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def serve(archive: SandboxArchive) -> str:
        app = web.Application()
        add_archive_routes(app, archive)
        runner, port = await start_site(app, "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield serve
    for r in runners:
        await r.cleanup()


async def test_a_restarted_sandbox_archive_continues_after_the_cursor(
    edge: Edge, tmp_path: Path, serve_archive: Any
) -> None:
    seq_file = tmp_path / "sandbox" / "archive_seq"
    before = SandboxArchive(seq_path=seq_file)
    add_chat(edge, before, 5, "b")
    p = puller(edge, before, sdk=SandboxFinanceSdk(await serve_archive(before)))
    assert (await p.pull_once()).cursor == 5

    after = SandboxArchive(seq_path=seq_file)  # the demo restarted: a new process
    assert add_chat(edge, after, 2, "a") == [6, 7]
    p = puller(edge, after, sdk=SandboxFinanceSdk(await serve_archive(after)))
    report = await p.pull_once()

    assert (report.accepted, report.cursor) == (2, 7)  # seen at once, not after 5 more
    assert json.loads(seq_file.read_text()) == 7


# -------------------------------------------------------------------- CLI


def test_cli_redecrypt_marks_them_for_the_puller_and_refuses_other_ids(
    cli_env: None,
    settings: Any,
    capsys: pytest.CaptureFixture[str],
    redis_client_sync: None,
    redis_url: str,
) -> None:
    import redis as sync_redis

    from core import db as core_db
    from siyu.cli import main
    from tests.conftest import SCHEMA

    assert main(["migrate"]) == 0

    async def seed() -> tuple[int, int]:
        async with core_db.db_lifespan(settings, SCHEMA):
            for stream_id, source in (("archive-seq-7", "archive_raw"), ("1-0", "callback")):
                await bot_service.add_dead_letter(
                    stream_id=stream_id,
                    source=source,
                    dedup_key="arc:m7",
                    payload_sealed="v1.sealed",
                    error="decrypt: ValueError",
                    deliveries=3,
                )
            raw = await models.DeadLetter.get(source="archive_raw")
            other = await models.DeadLetter.get(source="callback")
            return int(raw.id), int(other.id)

    async def statuses() -> dict[int, str]:
        async with core_db.db_lifespan(settings, SCHEMA):
            return {int(d.id): d.status for d in await models.DeadLetter.all()}

    raw_id, other_id = asyncio.run(seed())
    capsys.readouterr()

    assert main(["archive", "redecrypt"]) == 2  # neither ids nor --all
    assert main(["archive", "redecrypt", str(raw_id), str(other_id)]) == 2
    assert main(["archive", "redecrypt", "999999"]) == 2
    err = capsys.readouterr().err
    assert "use siyu deadletter requeue" in err and "no such dead letter" in err
    assert asyncio.run(statuses()) == {raw_id: "open", other_id: "open"}  # nothing marked

    assert main(["archive", "redecrypt", "--all", "--wait", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"requested": [raw_id], "requeued": [], "still_failing": [], "pending": [raw_id]}
    assert asyncio.run(statuses()) == {raw_id: "redecrypt", other_id: "open"}
    client = sync_redis.Redis.from_url(redis_url)
    try:
        assert client.lrange("siyu:archive:wake", 0, -1) == [b"1"]  # the puller is woken
    finally:
        client.close()


async def test_a_record_with_a_lone_surrogate_is_dead_lettered_not_raised(edge: Edge) -> None:
    """A record the ingest refuses for an unencodable character is kept for the operator
    (sealed, its JSON escaped) and the pull goes on past it."""
    userid, ext = a_relation(edge)
    bad = record("surrogate1", ext, userid, "坏字符\ud800在这里")
    edge.archive.append(bad)
    add_chat(edge, edge.archive, 2, "fine")
    p = puller(edge, edge.archive)

    report = await p.pull_once()

    assert (report.dead_lettered, report.accepted) == (1, 2)
    dl = await models.DeadLetter.get()
    assert dl.source == "archive" and "surrogate" in dl.error
