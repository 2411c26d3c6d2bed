"""No raw personal number at rest: database file and WAL, Redis AOF, logs, export."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from core import redis as core_redis
from tests.conftest import make_settings

ID_NO = "110101199003074514"
CARD = "6222021234567890128"
PHONE = "13812345678"
PHONE2 = "13912345678"
RAW = (ID_NO, CARD, PHONE, PHONE2)

# Advisor lines that break sales rules (their findings' evidence reaches the numbers) and
# customer lines that only carry numbers.
LINES = [
    ("zhangwei", "wmCUST0001", f"身份证{ID_NO}发我，我帮你代买，保证收益10%"),
    ("zhangwei", "wmCUST0001", f"转账到我卡{CARD}，保本保息，电话{PHONE}"),
    ("zhangwei", "wmCUST0001", f"加我VX{PHONE2}，私下给你返点2%"),
    ("wmCUST0001", "zhangwei", f"我的手机{PHONE}，卡号{CARD}，身份证{ID_NO}"),
]


def _record(i: int, sender: str, to: str, text: str) -> dict[str, object]:
    return {
        "msgid": f"pii{i}",
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(time.time() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


def test_no_raw_number_anywhere_at_rest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from siyu.cli import main
    from tests.bot.conftest import InThreadAnalyzer
    from tests.bot.harness import start_edge

    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    embedded = core_redis.start_embedded(data / "redis")
    try:
        settings = make_settings(
            data, database_url=f"sqlite://{data / 'siyu.sqlite3'}", redis_url=embedded.url
        )
        monkeypatch.setenv("SIYU_DATA_DIR", str(data))
        monkeypatch.setenv("SIYU_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("SIYU_REDIS_URL", embedded.url)
        monkeypatch.setenv("SIYU_PIPELINE__STREAM", settings.pipeline.stream)
        keys = {k: v.get_secret_value() for k, v in settings.crypto.keys.items()}
        monkeypatch.setenv("SIYU_CRYPTO__KEYS", json.dumps(keys))
        monkeypatch.setenv("SIYU_CRYPTO__ACTIVE_KEY_ID", settings.crypto.active_key_id)

        assert main(["migrate"]) == 0
        f = tmp_path / "in.jsonl"
        f.write_text(
            "\n".join(
                json.dumps(_record(i, *line), ensure_ascii=False) for i, line in enumerate(LINES)
            )
            + "\n",
            encoding="utf-8",
        )
        assert main(["archive", "import", str(f)]) == 0
        f.unlink()  # the input file is the operator's, not siyu's data at rest

        async def drain() -> None:
            edge, closers = await start_edge(settings, analyzer=InThreadAnalyzer())
            try:
                await edge.process_all()
            finally:
                for c in closers:
                    await c()

        asyncio.run(drain())
        capsys.readouterr()
        assert main(["messages", "export", "--since", "2020-01-01"]) == 0
        export = capsys.readouterr().out
    finally:
        embedded.shutdown()

    rows = [json.loads(x) for x in export.splitlines()]
    assert sorted(r["msgid"] for r in rows) == [f"pii{i}" for i in range(len(LINES))]
    # The advisor lines were judged (so evidence exists to leak) ...
    violating = [r for r in rows if r["analysis"]["violations"]]
    assert len(violating) >= 3
    assert all(v["evidence"] for r in violating for v in r["analysis"]["violations"])
    # ... and nothing anywhere holds a number in clear.
    leaks: list[str] = []
    for raw in RAW:
        if raw in export:
            leaks.append(f"export:{raw}")
        if raw in caplog.text:
            leaks.append(f"logs:{raw}")
        for path in data.rglob("*"):
            if path.is_file() and raw.encode() in path.read_bytes():
                leaks.append(f"{path.relative_to(data)}:{raw}")
    files = {p.name for p in data.rglob("*") if p.is_file()}
    assert any(n.endswith(".aof") or "appendonly" in n for n in files), files  # AOF searched
    assert "siyu.sqlite3" in files
    assert not leaks, leaks
