"""A started ``siyu serve`` role says which event loop it runs: uvloop, where installed."""

from __future__ import annotations

import json

import pytest

from core.settings import Settings
from tests.bot.procs import Proc, _siyu_command, siyu_env, wait_for


def _serving_line(proc: Proc) -> dict[str, object] | None:
    try:
        text = proc.log_path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if '"siyu serving"' in line:
            return dict(json.loads(line))
    return None


@pytest.mark.parametrize("asked", ["", "asyncio"])
async def test_a_started_role_reports_its_event_loop(settings: Settings, asked: str) -> None:
    pytest.importorskip("uvloop")
    wecom = settings.wecom
    env = siyu_env(
        settings,
        SIYU_WECOM__CORP_ID=wecom.corp_id,
        SIYU_WECOM__TOKEN=wecom.token.get_secret_value(),
        SIYU_WECOM__ENCODING_AES_KEY=wecom.encoding_aes_key.get_secret_value(),
        **({"SIYU_EVENT_LOOP": asked} if asked else {}),
    )
    name = f"receiver-{asked or 'default'}"
    proc = Proc(
        [*_siyu_command(), "serve", "--role", "receiver"],
        env=env,
        cwd=settings.data_dir / name,
        log_path=settings.data_dir / f"{name}.log",
    ).start()
    try:
        line = await wait_for(
            lambda: _serving_line(proc) or (not proc.alive and {"exited": True}),
            deadline_s=60,
            what="the receiver's start-up line",
            diagnose=proc.log_tail,
        )
    finally:
        proc.stop()
    assert line.get("roles") == "receiver", proc.log_tail()
    assert line.get("loop") == (asked or "uvloop"), proc.log_tail()
