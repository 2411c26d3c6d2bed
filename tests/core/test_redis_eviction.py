"""A shared Redis that may evict keys is refused at start (an evicted entry is a lost message)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from core import redis as core_redis
from core.settings import Settings, SettingsError


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """A Redis of this test's own: its policy changes touch no other test."""
    embedded = core_redis.start_embedded(tmp_path / "redis")
    client = core_redis.client_for(embedded.url)
    try:
        yield embedded.url, client
    finally:
        await client.aclose()
        embedded.shutdown()


def _settings(tmp_path: Path, url: str, **kw: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, redis_url=url, **kw)


async def test_shared_redis_that_may_evict_is_refused_at_start(
    private_redis: tuple[str, aioredis.Redis], tmp_path: Path
) -> None:
    url, client = private_redis
    await client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(SettingsError) as err:
        async with core_redis.redis_lifespan(_settings(tmp_path, url)):
            pass
    message = str(err.value)
    assert "allkeys-lru" in message and "noeviction" in message
    assert "SIYU_REDIS_ALLOW_EVICTION" in message
    # volatile-* evicts the dedup and replay-defence keys: refused as well.
    await client.config_set("maxmemory-policy", "volatile-ttl")
    with pytest.raises(SettingsError, match="volatile-ttl"):
        await core_redis.check_shared_redis(client, allow_eviction=False)


async def test_eviction_allowed_by_setting_starts_with_a_warning(
    private_redis: tuple[str, aioredis.Redis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, client = private_redis
    await client.config_set("maxmemory-policy", "allkeys-lru")
    caplog.set_level(logging.WARNING, logger="core.redis")
    async with core_redis.redis_lifespan(
        _settings(tmp_path, url, redis_allow_eviction=True)
    ) as started:
        assert await started.ping()
    assert any("evict" in r.getMessage() for r in caplog.records)


async def test_noeviction_starts(private_redis: tuple[str, aioredis.Redis], tmp_path: Path) -> None:
    url, client = private_redis
    await client.config_set("maxmemory-policy", "noeviction")
    async with core_redis.redis_lifespan(_settings(tmp_path, url)) as started:
        assert await started.ping()


class _ClusterNode:
    """What INFO answers on a Redis Cluster node (no cluster to run in a test)."""

    async def info(self, section: str) -> dict[str, Any]:
        return {"memory": {"maxmemory_policy": "noeviction"}, "cluster": {"cluster_enabled": 1}}[
            section
        ]


async def test_cluster_node_is_refused_with_the_reason() -> None:
    with pytest.raises(SettingsError, match="Cluster"):
        await core_redis.check_shared_redis(_ClusterNode(), allow_eviction=True)  # type: ignore[arg-type]
