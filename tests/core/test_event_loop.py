"""siyu's commands run on uvloop where it is installed, on asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core import loops


async def _running() -> str:
    return loops.loop_name(asyncio.get_running_loop())


def test_commands_run_on_uvloop_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(loops.ENV, raising=False)
    assert loops.run(_running()) == "uvloop"


def test_asyncio_s_loop_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loops.ENV, "asyncio")
    assert loops.run(_running()) == "asyncio"


def test_asyncio_s_loop_where_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loops.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loops.loop_factory() is None
    assert loops.run(_running()) == "asyncio"


def test_the_coroutine_s_result_and_errors_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails() -> None:
        raise KeyError("x")

    async def answers() -> int:
        await asyncio.sleep(0)
        return 42

    assert loops.run(answers()) == 42
    with pytest.raises(KeyError):
        loops.run(fails())
