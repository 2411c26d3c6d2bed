"""The event loop siyu's commands run on: uvloop where it is installed, else asyncio's.

uvloop (libuv) does a loop turn, a socket read and a socket write in C: aiohttp's
server, asyncpg and the Redis client spend less CPU per message on it.  It is a
dependency on every platform it builds for; where it is missing (Windows) or
``SIYU_EVENT_LOOP=asyncio`` asks for the standard loop (to rule the loop out when
chasing a bug), commands run on asyncio's own loop, unchanged.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: ``SIYU_EVENT_LOOP``: ``uvloop`` (the default, where installed) or ``asyncio``.
ENV = "SIYU_EVENT_LOOP"


def loop_factory() -> LoopFactory | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: which loop runs (the running one by default)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` gives."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
