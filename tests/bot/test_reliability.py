"""Reliability: nothing WeCom or the archive puller was told "accepted" is ever lost.

Real OS processes throughout: ``siyu serve --role worker`` runs as a separate
process (with its compliance_nlp pool and the shipped model) and is killed with
SIGKILL; a redis-server owned by the test is killed and restarted on the same
port and data dir; PostgreSQL refuses connections for a while.  The tests run
against SQLite and, when reachable, PostgreSQL.  Nothing here is a timed
assertion: every wait polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot import models
from core import redis as core_redis
from core.settings import Settings
from tests.bot.harness import Edge, start_edge, xml
from tests.bot.procs import Proc, RedisServer, siyu_worker, wait_for

pytestmark = pytest.mark.slow

# Texts the real analyzer has work to do on: PII to mask, sales-rule
# violations that open review cases and queue alerts, customer intents.
CUSTOMER_TEXTS = [
    "我的手机号是13812345678，帮我查下理财到期日",
    "你们这款基金现在收益多少？",
    "我要赎回，太失望了，我要投诉你们",
    "身份证号110101199003077777，帮我开个户",
    "谢谢，明天再联系",
]
ADVISOR_TEXTS = [
    "这款产品保本保收益，年化8%稳赚不赔",
    "过往业绩不代表未来表现，请您根据风险承受能力选择。",
    "把您的银行卡密码发我，我帮您操作",
    "您好，产品说明书已发您，请查收。",
]
DRAIN_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 180.0


def callback_text(msg_id: str, content: str, *, corp_id: str, agent_id: int) -> str:
    return xml(
        {
            "ToUserName": corp_id,
            "FromUserName": "zhangwei",
            "CreateTime": int(time.time()),
            "MsgType": "text",
            "Content": content,
            "MsgId": msg_id,
            "AgentID": agent_id,
        }
    )


def archive_record(msgid: str, sender: str, to: str, text: str) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(time.time() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


async def stored_rows(msgids: list[str]) -> list[tuple[str, str]]:
    """(source, msgid) of every stored row among ``msgids``: duplicates would show twice."""
    rows: list[tuple[str, str]] = []
    for i in range(0, len(msgids), 500):
        rows += await models.Message.filter(msgid__in=msgids[i : i + 500]).values_list(
            "source", "msgid"
        )  # type: ignore[arg-type]
    return rows


async def stored_count(msgids: list[str]) -> int:
    n = 0
    for i in range(0, len(msgids), 500):
        n += await models.Message.filter(msgid__in=msgids[i : i + 500]).count()
    return n


async def stream_depth(client: aioredis.Redis, settings: Settings) -> tuple[int, int]:
    stream, group = settings.pipeline.stream, settings.pipeline.group
    length = int(await client.xlen(stream))
    try:
        pending = int((await client.xpending(stream, group))["pending"])
    except aioredis.ResponseError:
        pending = 0
    return length, pending


async def is_stored(msg_id: str) -> bool:
    return await stored_count([msg_id]) == 1


def worker_consumer(proc: Proc) -> str:
    """Consumer name of a worker process's first (only) stream consumer (bot.worker)."""
    return f"{socket.gethostname()}-{proc.pid}-0"


async def dead_letters(keys: list[str]) -> list[str]:
    return list(
        await models.DeadLetter.filter(dedup_key__in=keys).values_list("dedup_key", flat=True)
    )  # type: ignore[arg-type]


# ------------------------------------------------------------------ SIGKILL mid-batch


async def test_worker_killed_mid_batch_loses_nothing(
    edge: Edge, redis_client: aioredis.Redis
) -> None:
    """kill -9 of a worker part-way through a batch: a fresh worker reclaims its
    pending entries (XAUTOCLAIM) and every accepted message is stored exactly once."""
    settings = edge.settings
    settings.pipeline.claim_idle_ms = 500
    # Small reads, so the stream takes many of them and "part-way" is a wide window.
    settings.pipeline.batch_size = 20
    run = f"{secrets.randbelow(10**9):09d}"
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)

    # 200 member messages as signed, encrypted callbacks + 100 archive transcripts.
    callback_ids = [f"7{run}{i:05d}" for i in range(200)]
    results = []
    for chunk in range(0, len(callback_ids), 25):
        results += await asyncio.gather(
            *(
                edge.post_callback(
                    callback_text(
                        mid,
                        CUSTOMER_TEXTS[i % len(CUSTOMER_TEXTS)] + f"（{i}）",
                        corp_id=settings.wecom.corp_id,
                        agent_id=settings.wecom.agent_id,
                    )
                )
                for i, mid in enumerate(callback_ids[chunk : chunk + 25], start=chunk)
            )
        )
    assert results == [(200, "success")] * len(callback_ids)
    records = [
        archive_record(
            f"arc{run}_{i}",
            *((userid, ext) if i % 2 else (ext, userid)),
            (ADVISOR_TEXTS if i % 2 else CUSTOMER_TEXTS)[(i // 2) % 4] + f"（{i}）",
        )
        for i in range(100)
    ]
    status, report = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and report["accepted"] == len(records), report
    expected = sorted(
        [("callback", m) for m in callback_ids] + [("archive", r["msgid"]) for r in records]
    )
    msgids = [m for _, m in expected]
    n = len(expected)
    assert await edge.queued() == n

    stream, group = settings.pipeline.stream, settings.pipeline.group
    first = siyu_worker(settings, name="worker-1")
    second = siyu_worker(settings, name="worker-2")

    def logs() -> str:
        return f"{first.log_tail()}\n{second.log_tail()}"

    try:
        first.start()
        dead_consumer = worker_consumer(first)

        async def owned() -> int:
            summary = await redis_client.xpending(stream, group)
            mine = {c["name"].decode(): int(c["pending"]) for c in summary["consumers"] or []}
            return mine.get(dead_consumer, 0)

        async def started() -> bool:
            if not first.alive:
                raise AssertionError(f"first worker exited on its own\n{first.log_tail()}")
            return await owned() > 0

        # Starting (the model loads in the worker's analyzer process) may take long on a
        # busy machine; that is not what is timed below.
        await wait_for(
            started,
            deadline_s=STARTUP_TIMEOUT_S,
            interval=0.005,
            diagnose=logs,
            what="the first worker to read from the stream",
        )

        async def mid_batch() -> bool:
            if not first.alive:
                raise AssertionError(f"first worker exited on its own\n{first.log_tail()}")
            # Past the first acknowledged batch, holding a later one, and at least two
            # reads from the end: the probe and the kill are two steps apart, and in
            # between the worker may store another read, but not finish the stream.
            batch = settings.pipeline.batch_size
            stored = await stored_count(msgids)
            return batch < stored < n - 2 * batch and await owned() > 0

        await wait_for(
            mid_batch,
            deadline_s=DRAIN_TIMEOUT_S,
            interval=0.005,
            diagnose=logs,
            what="the first worker to be part-way through the stream",
        )
        first.kill()
        stored_at_kill = await stored_count(msgids)
        assert stored_at_kill < n, "the first worker finished before the kill landed"
        orphaned = await redis_client.xpending_range(
            stream, group, min="-", max="+", count=n, consumername=dead_consumer
        )
        assert orphaned, "the killed worker should have left delivered-but-unacked entries"

        second.start()

        async def drained() -> bool:
            assert second.alive, f"second worker exited\n{second.log_tail()}"
            return await stored_count(msgids) == n and await stream_depth(
                redis_client, settings
            ) == (0, 0)

        await wait_for(
            drained,
            deadline_s=STARTUP_TIMEOUT_S + DRAIN_TIMEOUT_S,  # it loads the model first
            diagnose=logs,
            what=f"the second worker to drain the stream ({n} messages)",
        )
        second.stop()
        assert second.popen is not None and second.popen.returncode == 0, second.log_tail()
    finally:
        first.stop()
        second.stop()

    # Every accepted message is stored, and stored once.
    rows = await stored_rows(msgids)
    assert sorted(rows) == expected
    assert len(set(rows)) == len(rows) == n
    # The dead consumer's pending entries were taken over, not abandoned.
    assert (
        await redis_client.xpending_range(
            stream, group, min="-", max="+", count=n, consumername=dead_consumer
        )
        == []
    )
    keys = [f"msg:{m}" for m in callback_ids] + [f"arc:{r['msgid']}" for r in records]
    assert await dead_letters(keys) == []
    # Nothing was stored unanalysed, and the violations found opened review cases.
    assert await models.Message.filter(msgid__in=msgids, analysis__isnull=True).count() == 0
    assert await models.ReviewCase.filter(message__msgid__in=msgids).count() > 0


# ------------------------------------------------------------------ Redis restarted


@dataclass
class Sent:
    msg_id: str
    plaintext: str
    started: float
    finished: float
    status: int
    body: str


@dataclass
class Traffic:
    """Callbacks sent continuously by a few concurrent 'WeCom' senders."""

    edge: Edge
    run: str
    sent: list[Sent] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    counter: int = 0

    def next_message(self) -> tuple[str, str]:
        self.counter += 1
        msg_id = f"8{self.run}{self.counter:05d}"
        s = self.edge.settings
        text = CUSTOMER_TEXTS[self.counter % len(CUSTOMER_TEXTS)] + f"（{self.counter}）"
        return msg_id, callback_text(
            msg_id, text, corp_id=s.wecom.corp_id, agent_id=s.wecom.agent_id
        )

    async def send_one(self) -> int:
        msg_id, plain = self.next_message()
        t0 = time.monotonic()
        status, body = await self.edge.post_callback(plain)
        self.sent.append(Sent(msg_id, plain, t0, time.monotonic(), status, body))
        return status

    async def sender(self) -> None:
        while not self.stop.is_set():
            if await self.send_one() != 200:
                await asyncio.sleep(0.05)  # WeCom does not retry in a tight loop either

    def ok_after(self, t: float) -> int:
        return sum(1 for s in self.sent if s.started > t and s.status == 200)

    def done_after(self, t: float) -> int:
        return sum(1 for s in self.sent if s.started > t)


@pytest.fixture
async def owned_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restart_answers_503_and_loses_nothing_acknowledged(
    settings: Settings, db: None, analyzer: Any, owned_redis: RedisServer
) -> None:
    """Redis killed under traffic: the receiver answers 503 (never "success") until it
    is back, then recovers by itself; the worker rides the outage out; every callback
    answered "success" is stored once, and WeCom's retries of the 503s complete the set."""
    settings.redis_url = owned_redis.url
    settings.pipeline.claim_idle_ms = 500
    edge, closers = await start_edge(settings, analyzer=analyzer)
    probe = core_redis.client_for(owned_redis.url)
    worker: Proc = siyu_worker(settings, name="worker")
    traffic = Traffic(edge=edge, run=f"{secrets.randbelow(10**9):09d}")
    senders: list[asyncio.Task[None]] = []
    try:
        # A worker runs through the whole outage: it must ride it out, not die.
        worker.start()
        # One callback through to the DB first: the worker is up, its model loaded.
        await traffic.send_one()
        assert traffic.sent[0].status == 200
        await wait_for(
            lambda: is_stored(traffic.sent[0].msg_id),
            deadline_s=DRAIN_TIMEOUT_S,
            diagnose=worker.log_tail,
            what="the worker to store a first callback",
        )
        senders = [asyncio.create_task(traffic.sender()) for _ in range(4)]
        await wait_for(
            lambda: traffic.ok_after(0) >= 50,
            deadline_s=30,
            what="callbacks accepted before the outage",
        )

        owned_redis.kill()
        down_at = time.monotonic()
        # Longer than the worker's blocking read (1 s), so the worker's own
        # connection breaks too and it has to ride the outage out.
        await wait_for(
            lambda: traffic.done_after(down_at) >= 40 and time.monotonic() - down_at > 2.5,
            deadline_s=60,
            what="callbacks answered during the outage",
        )
        restart_at = time.monotonic()
        await asyncio.to_thread(owned_redis.start)  # the receiver keeps answering meanwhile
        up_at = time.monotonic()
        await wait_for(
            lambda: traffic.ok_after(up_at) >= 50,
            deadline_s=60,
            what="callbacks accepted again after the restart",
        )
        traffic.stop.set()
        await asyncio.gather(*senders)

        sent = traffic.sent
        assert len({s.msg_id for s in sent}) == len(sent)
        # Only two answers exist: "success" (durably queued) or 503 (WeCom retries).
        odd = [
            (s.status, s.body)
            for s in sent
            if (s.status, s.body) not in ((200, "success"), (503, "queue unavailable"))
        ]
        assert odd == []
        during = [s for s in sent if s.started > down_at and s.finished < restart_at]
        assert len(during) >= 30
        assert {s.status for s in during} == {503}, "success answered while Redis was down"
        ok = sorted(s.msg_id for s in sent if s.status == 200)
        refused = [s for s in sent if s.status == 503]
        all_ids = sorted(s.msg_id for s in sent)

        async def acknowledged_stored() -> bool:
            assert worker.alive, f"worker exited\n{worker.log_tail()}"
            return set(ok) <= {m for _, m in await stored_rows(all_ids)} and await stream_depth(
                probe, settings
            ) == (0, 0)

        await wait_for(
            acknowledged_stored,
            deadline_s=DRAIN_TIMEOUT_S,
            diagnose=worker.log_tail,
            what="the worker to store every acknowledged callback",
        )
        rows = await stored_rows(all_ids)
        stored = [m for _, m in rows]
        assert len(stored) == len(set(stored)), "a message was stored twice"
        assert set(ok) <= set(stored), "an acknowledged callback was lost"
        # A 503'd callback may be stored (queued, then the reply was lost) or absent.
        assert set(stored) <= set(all_ids)

        # WeCom retries what got no "success": every retry is accepted now.
        retried = await asyncio.gather(*(edge.post_callback(s.plaintext) for s in refused))
        assert retried == [(200, "success")] * len(refused)

        async def all_stored() -> bool:
            assert worker.alive, f"worker exited\n{worker.log_tail()}"
            return await stored_count(all_ids) == len(all_ids) and await stream_depth(
                probe, settings
            ) == (0, 0)

        await wait_for(
            all_stored,
            deadline_s=DRAIN_TIMEOUT_S,
            diagnose=worker.log_tail,
            what="the worker to store the retried callbacks",
        )
        rows = await stored_rows(all_ids)
        assert sorted(rows) == [("callback", m) for m in all_ids]
        assert await dead_letters([f"msg:{m}" for m in all_ids]) == []
        worker.stop()
        assert worker.popen is not None and worker.popen.returncode == 0, worker.log_tail()
    finally:
        traffic.stop.set()
        for t in senders:
            t.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        worker.stop()
        await probe.aclose()
        for close in closers:
            await close()


# ------------------------------------------------------------------ database outage


async def test_worker_rides_out_a_database_outage(
    edge: Edge, redis_client: aioredis.Redis, database_url: str
) -> None:
    """The database away for a while (failover, restart): intake goes on, the worker
    keeps retrying instead of dying, and resumes when the database is back."""
    if not database_url.startswith("postgres"):
        pytest.skip("the outage is made by PostgreSQL refusing connections to the test database")
    import asyncpg

    from tests.conftest import PG_ADMIN_URL

    settings = edge.settings
    settings.pipeline.claim_idle_ms = 500
    # Small reads, so the stream takes many of them and "part-way" is a wide window.
    settings.pipeline.batch_size = 20
    stream, group = settings.pipeline.stream, settings.pipeline.group
    dbname = database_url.rsplit("/", 1)[1]
    worker = siyu_worker(settings, name="worker")
    traffic = Traffic(edge=edge, run=f"{secrets.randbelow(10**9):09d}")
    admin = await asyncpg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"))
    try:
        worker.start()
        assert await traffic.send_one() == 200
        await wait_for(
            lambda: is_stored(traffic.sent[0].msg_id),
            deadline_s=DRAIN_TIMEOUT_S,
            diagnose=worker.log_tail,
            what="the worker to store a first callback",
        )

        # The database goes away: open connections cut, new ones refused.
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            dbname,
        )
        # Intake needs only Redis: WeCom still hears "success".
        for _ in range(20):
            assert await traffic.send_one() == 200

        # The worker fails on them, and instead of dying it takes them up again.
        async def retried_during_outage() -> bool:
            assert worker.alive, f"worker exited\n{worker.log_tail()}"
            rows = await redis_client.xpending_range(stream, group, min="-", max="+", count=100)
            return any(int(r["times_delivered"]) >= 2 for r in rows)

        await wait_for(
            retried_during_outage,
            deadline_s=30,
            diagnose=worker.log_tail,
            what="the worker to retry its entries while the database is down",
        )
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')

        all_ids = sorted(s.msg_id for s in traffic.sent)

        async def all_stored() -> bool:
            assert worker.alive, f"worker exited\n{worker.log_tail()}"
            return await stored_count(all_ids) == len(all_ids) and await stream_depth(
                redis_client, settings
            ) == (0, 0)

        await wait_for(
            all_stored,
            deadline_s=DRAIN_TIMEOUT_S,
            diagnose=worker.log_tail,
            what="the worker to resume once the database is back",
        )
        assert sorted(await stored_rows(all_ids)) == [("callback", m) for m in all_ids]
        assert await dead_letters([f"msg:{m}" for m in all_ids]) == []
    finally:
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await admin.close()
        worker.stop()
