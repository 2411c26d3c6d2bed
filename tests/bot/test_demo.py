"""`siyu demo` end to end: simulator → callbacks/archive → pipeline → outbox → fake WeCom."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from siyu.demo import run_demo


@pytest.mark.slow
async def test_demo_loop_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("SIYU_REDIS_URL", "SIYU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SIYU_OUTBOX__POLL_INTERVAL_S", "0.2")
    stop = asyncio.Event()
    counts: dict[str, int] = {}

    async def watch() -> None:
        from siyu.demo import demo_counts

        for _ in range(240):  # up to ~120 s; stops as soon as the loop has turned
            await asyncio.sleep(0.5)
            try:
                counts.update(await demo_counts())
            except Exception:  # noqa: BLE001 - DB not initialised yet
                continue
            if (
                counts["messages"] >= 10
                and counts["app_messages_sent"] >= 1
                and counts["customers"] >= 3
            ):
                break
        stop.set()

    watcher = asyncio.create_task(watch())
    await run_demo(data_dir=tmp_path / "demo", port=0, rate=20.0, stop=stop)
    await watcher
    assert counts["customers"] >= 3
    assert counts["messages"] >= 10
    assert counts["app_messages_sent"] >= 1
    out = capsys.readouterr().out
    assert "/wecom/callback" in out and "demo stopped" in out
