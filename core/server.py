"""Run an app until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable

from aiohttp import web

from core.settings import Role, Settings

log = logging.getLogger(__name__)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def serve(settings: Settings, roles: Iterable[Role], *, auto_migrate: bool = False,
                stop: asyncio.Event | None = None) -> None:
    from bot.app import build_app

    app = build_app(settings, roles, auto_migrate=auto_migrate)
    runner, port = await start_site(app, settings.http.host, settings.http.port)
    log.info("siyu serving", extra={"roles": ",".join(roles), "port": port})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
