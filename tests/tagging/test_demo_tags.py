"""`siyu demo`: the scheduler's tagging-sync job pulls the sandbox's corp tags at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from siyu.demo import run_demo


@pytest.mark.slow
async def test_demo_pulls_the_sandbox_corp_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("SIYU_REDIS_URL", "SIYU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    stop = asyncio.Event()
    seen: dict[str, int] = {}

    async def watch() -> None:
        from tagging import service

        for _ in range(240):  # up to ~120 s; stops as soon as the library is in
            await asyncio.sleep(0.5)
            try:
                groups = await service.live_groups()
                run = await service.last_run(kind="reconcile")
            except Exception:  # noqa: BLE001 - DB not initialised yet
                continue
            if groups and run is not None:
                seen["groups"] = len(groups)
                seen["linked"] = sum(1 for g in groups if g.wecom_group_id)
                seen["ok"] = int(run.ok)
                break
        stop.set()

    watcher = asyncio.create_task(watch())
    await run_demo(data_dir=tmp_path / "demo", port=0, rate=5.0, stop=stop)
    await watcher
    assert seen["groups"] >= 3 and seen["linked"] == seen["groups"] and seen["ok"] == 1
