"""The pre-send check's latency, alone and while message intake runs at its benchmark rate.

    .venv/bin/python bench/check.py [--n 200] [--intake-n 400] [--layouts one,split]

Per layout (SQLite, a fresh stream; start-up and model loading are not timed):

* ``one`` — ``siyu serve --role worker --role admin``, as a single host runs it: intake's
  analyzer pool of one process and the pre-send check's own pool of one process
  (``SIYU_CHECK__POOL_SIZE``, ``bot.precheck``), one event loop for both;
* ``split`` — ``--role worker`` and ``--role admin`` in two processes (the scale-out
  story): the API process's pool serves checks alone;
* ``shared`` (comparison, not by default) — one process, ``SIYU_CHECK__POOL_SIZE=0``:
  checks queue on intake's pool.

Then, with ``--n`` advisor texts of 200 characters, each with a two-turn context as the
sidebar sends it:

1. ``bare analyze`` — the baseline: ``compliance_nlp``'s analyzer called in this process
   (one thread, as a pool worker runs it) on the same texts and contexts;
2. ``check, idle`` — ``POST /api/v1/compliance/check`` one after another, nothing else
   running (client-side wall time: HTTP, auth, the gate, the pool's IPC, analysis);
3. intake's rate — ``--intake-n`` 会话存档 records queued at once, timed until the worker
   has stored them all: the rate this run's intake sustains (its benchmark rate);
4. ``check, intake at its rate`` — the checks of 2 again while records are queued at that
   rate throughout; the rate intake actually kept meanwhile is printed beside it.

Figures are p50/p95/p99 in ms and the ratio of each p95 to the bare analyze's p95 in the
same run; the target is a p95 under ``TARGET_P95_MS`` for a 200-character text while
intake runs.  Nothing is asserted: the
machine's other work moves every figure — run it more than once and quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchSecrets,
    archive_record,
    fmt,
    latency_summary,
    machine_note,
    percentile,
    print_table,
    redis_for_run,
    settings_env,
)
from pipeline import (
    SiyuProcess,
    _free_port,
    _siyu_command,
    _stream_for,
    _wait_group,
    count_rows,
    migrate,
    stop_all,
    wait_drained,
    wait_ready,
)

TARGET_P95_MS = 150.0
TEXT_CHARS = 200


# ------------------------------------------------------------------ texts


def check_texts(n: int, seed: int) -> list[tuple[str, list[dict[str, str]]]]:
    """``n`` advisor texts of exactly 200 characters (chat lines joined, some breaking
    sales rules) with the two turns before each, as the sidebar sends them."""
    from bot.sandbox.simulator import ADVISOR_CLEAN, ADVISOR_VIOLATIONS, CUSTOMER_LINES

    rng = random.Random(seed)
    customer = [line for lines in CUSTOMER_LINES.values() for line in lines]
    out = []
    for _ in range(n):
        text = ""
        while len(text) < TEXT_CHARS:
            pool = ADVISOR_VIOLATIONS if rng.random() < 0.3 else ADVISOR_CLEAN
            text += rng.choice(pool)
        context = [
            {"role": "customer", "text": rng.choice(customer)},
            {"role": "advisor", "text": rng.choice(ADVISOR_CLEAN)},
        ]
        out.append((text[:TEXT_CHARS], context))
    return out


# ------------------------------------------------------------------ the server


def start_server(
    roles: tuple[str, ...], env: dict[str, str], workdir: Path, name: str
) -> SiyuProcess:
    port = _free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    child_env.update(env)
    child_env["SIYU_HTTP__HOST"] = "127.0.0.1"
    child_env["SIYU_HTTP__PORT"] = str(port)
    child_env["PYTHONUNBUFFERED"] = "1"
    log = workdir / f"{name}.log"
    argv = [*_siyu_command(), "serve"]
    for role in roles:
        argv += ["--role", role]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=child_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return SiyuProcess(role="+".join(roles), port=port, proc=proc, log=log)


#: How the processes are laid out: (label, [(roles, SIYU_CHECK__POOL_SIZE)]).
LAYOUTS: dict[str, tuple[str, list[tuple[tuple[str, ...], int]]]] = {
    # One host, one process: intake and checks side by side, each with its own pool.
    "one": ("one process, own check pool", [(("worker", "admin"), 1)]),
    # The API role in its own process (the scale-out story): its pool serves checks alone.
    "split": ("API in its own process", [(("worker",), 1), (("admin",), 1)]),
    # For comparison only: checks queued on intake's pool.
    "shared": ("one process, checks on intake's pool", [(("worker", "admin"), 0)]),
}


# ------------------------------------------------------------------ measuring


def bare_analyze(texts: list[tuple[str, list[dict[str, str]]]]) -> list[float]:
    """The analyzer itself, in this process, one call per text (the baseline)."""
    from compliance_nlp import AnalyzerConfig, get_analyzer
    from compliance_nlp.types import Turn

    analyzer = get_analyzer(AnalyzerConfig(torch_threads=1))
    analyzer.warm()
    calls = [(t, tuple(Turn(c["role"], c["text"]) for c in ctx)) for t, ctx in texts]  # type: ignore[arg-type]
    for text, context in calls[:5]:
        analyzer.analyze_many([(text, "advisor")], [context])
    out = []
    for text, context in calls:
        t0 = time.perf_counter()
        analyzer.analyze_many([(text, "advisor")], [context])
        out.append(time.perf_counter() - t0)
    return out


async def checks(
    port: int, token: str, texts: list[tuple[str, list[dict[str, str]]]]
) -> tuple[list[float], int]:
    """POST each text to the check endpoint in turn; latencies and the violations seen."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/api/v1/compliance/check"
    headers = {"Authorization": f"Bearer {token}"}
    latencies, flagged = [], 0
    async with aiohttp.ClientSession() as session:
        for text, context in texts[:5]:  # warm the connection and the pool
            async with session.post(url, json={"text": text, "context": context}, headers=headers):
                pass
        for text, context in texts:
            t0 = time.perf_counter()
            async with session.post(
                url, json={"text": text, "role": "advisor", "context": context}, headers=headers
            ) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"check answered {resp.status}: {body}")
            latencies.append(time.perf_counter() - t0)
            flagged += bool(body["violations"])
    return latencies, flagged


def records(n: int, *, tag: str, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    base = secrets.token_hex(4)
    return [
        archive_record(msgid=f"chk{tag}{base}{i}", msgtime_ms=now_ms + i, rng=rng) for i in range(n)
    ]


async def intake_rate(stream: Any, n: int, *, tag: str) -> float:
    """Messages a second the worker stores when ``n`` records arrive at once."""
    from bot.archive import ingest_records

    batch = records(n, tag=tag, seed=7)
    t0 = time.perf_counter()
    for i in range(0, n, 200):
        await ingest_records(stream, batch[i : i + 200])
    if not await wait_drained(stream, timeout_s=600):
        raise RuntimeError("intake did not drain in 10 minutes")
    return n / (time.perf_counter() - t0)


@dataclass
class Paced:
    queued: int = 0
    seconds: float = 0.0


async def paced_intake(stream: Any, rate: float, stop: asyncio.Event, *, tag: str) -> Paced:
    """Queue records at ``rate`` a second until ``stop``: intake at its benchmark rate."""
    from bot.archive import ingest_records

    tick = 0.2
    per_tick = max(1, round(rate * tick))
    out = Paced()
    t0 = time.perf_counter()
    seed = 100
    while not stop.is_set():
        seed += 1
        await ingest_records(stream, records(per_tick, tag=f"{tag}{seed}", seed=seed))
        out.queued += per_tick
        target = t0 + out.queued / rate
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
    out.seconds = time.perf_counter() - t0
    return out


@dataclass
class Run:
    label: str
    idle: list[float]
    busy: list[float]
    rate: float
    paced: Paced
    stored_during: int
    backlog: int
    flagged: int


async def run_layout(
    *,
    layout: str,
    sec: BenchSecrets,
    data_dir: Path,
    redis_url: str,
    texts: list[tuple[str, list[dict[str, str]]]],
    intake_n: int,
) -> Run:
    label, spec = LAYOUTS[layout]
    workdir = data_dir / layout
    workdir.mkdir()
    stream_name = f"siyu:bench:check:{secrets.token_hex(4)}"
    database_url = f"sqlite://{workdir / 'siyu.sqlite3'}"
    env = settings_env(
        sec, data_dir=workdir, redis_url=redis_url, stream=stream_name, database_url=database_url
    )
    env.update(
        {
            "SIYU_NLP__POOL_SIZE": "1",
            # The limits are not what is measured here.
            "SIYU_CHECK__PER_KEY_PER_MINUTE": "1000000",
        }
    )
    _settings, stream = _stream_for(env, redis_url)
    procs: list[SiyuProcess] = []
    try:
        migrate(env, workdir)
        for i, (roles, pool_size) in enumerate(spec):
            proc_env = {**env, "SIYU_CHECK__POOL_SIZE": str(pool_size)}
            procs.append(start_server(roles, proc_env, workdir, f"server{i}"))
        await wait_ready(procs, 300)
        await _wait_group(stream)
        port = next(p.port for p in procs if "admin" in p.role)
        idle, flagged = await checks(port, sec.api_token, texts)
        rate = await intake_rate(stream, intake_n, tag=layout)
        before = await count_rows(database_url, "bot_message")
        stop = asyncio.Event()
        feeder = asyncio.create_task(paced_intake(stream, rate, stop, tag=layout))
        try:
            busy, _ = await checks(port, sec.api_token, texts)
        finally:
            stop.set()
            paced = await feeder
        stored_during = await count_rows(database_url, "bot_message") - before
        backlog = int(await stream.redis.xlen(stream.stream))
        await wait_drained(stream, timeout_s=600)
        return Run(label, idle, busy, rate, paced, stored_during, backlog, flagged)
    finally:
        stop_all(procs)
        await stream.redis.delete(stream_name)
        await stream.redis.aclose()


def _ms(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1000


async def main_async(args: argparse.Namespace) -> None:
    sec = BenchSecrets.generate()
    texts = check_texts(args.n, seed=args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="siyu-bench-check-"))
    try:
        with redis_for_run(data_dir, args.redis_url, fsync="everysec") as redis_url:
            runs = [
                await run_layout(
                    layout=layout,
                    sec=sec,
                    data_dir=data_dir,
                    redis_url=redis_url,
                    texts=texts,
                    intake_n=args.intake_n,
                )
                for layout in args.layouts.split(",")
            ]
            # The baseline last, with the servers gone: the analyzer alone on the machine.
            bare = bare_analyze(texts)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    base_p95 = _ms(bare, 95)
    print(f"\ncompliance check, {args.n} texts of {TEXT_CHARS} characters with a 2-turn context")
    print(machine_note())
    rows = [["bare analyze (in process)", "-", *_cols(bare), "1.00", ""]]
    for r in runs:
        rows.append(
            [
                f"check, idle — {r.label}",
                "-",
                *_cols(r.idle),
                _ratio(r.idle, base_p95),
                _verdict(r.idle),
            ]
        )
        kept = r.stored_during / r.paced.seconds if r.paced.seconds else 0.0
        rows.append(
            [
                f"check, intake at {r.rate:.0f} msg/s — {r.label}",
                f"{kept:.0f} msg/s",
                *_cols(r.busy),
                _ratio(r.busy, base_p95),
                _verdict(r.busy),
            ]
        )
    print_table(
        [
            "",
            "intake kept",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p95 / bare p95",
            f"p95 < {TARGET_P95_MS:.0f} ms",
        ],
        rows,
    )
    for r in runs:
        print(
            f"{r.label}: intake's benchmark rate {r.rate:.1f} msg/s "
            f"({args.intake_n} records at once); "
            f"during the checks {r.paced.queued} queued in {r.paced.seconds:.1f} s, "
            f"{r.stored_during} stored, {r.backlog} waiting when the checks ended; "
            f"{r.flagged}/{args.n} texts had findings"
        )


def _cols(values: list[float]) -> list[str]:
    s = latency_summary(values)
    return [fmt(s["p50"]), fmt(_ms(values, 95)), fmt(s["p99"])]


def _ratio(values: list[float], base_p95: float) -> str:
    return fmt(_ms(values, 95) / base_p95, ".2f")


def _verdict(values: list[float]) -> str:
    return "yes" if _ms(values, 95) < TARGET_P95_MS else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="checks per phase (default 200)")
    parser.add_argument(
        "--intake-n", type=int, default=400, help="records that measure intake's rate"
    )
    parser.add_argument(
        "--layouts",
        default="one,split",
        help="comma-separated: one (worker+admin in one process, a check pool of its own), "
        "split (the API role in its own process), shared (checks on intake's pool, for "
        "comparison); default one,split",
    )
    parser.add_argument("--redis-url", default="", help="a Redis to use (default: embedded)")
    parser.add_argument("--seed", type=int, default=11)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
