"""Run an application until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from core.loops import loop_name

log = logging.getLogger(__name__)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except BaseException:
        # A context that refused to start (a bad setting, a database not migrated):
        # close the ones already started, in reverse, before the error is reported.
        try:
            await runner.cleanup()
        except Exception:
            log.exception("cleanup after a failed start")
        raise
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    label: str = "",
) -> None:
    """Serve ``app`` (built by the root) until a signal or ``stop`` is set."""
    runner, bound = await start_site(app, host, port)
    log.info("siyu serving", extra={"roles": label, "port": bound, "loop": loop_name()})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
