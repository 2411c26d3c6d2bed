"""Shared fixtures: real Redis (embedded unless SIYU_REDIS_URL/REDIS_URL is set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core import redis as core_redis


def _external_redis_url() -> str:
    return os.environ.get("SIYU_REDIS_URL") or os.environ.get("REDIS_URL") or ""


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = _external_redis_url()
    if url:
        yield url
        return
    embedded = core_redis.start_embedded(Path(tmp_path_factory.mktemp("redis")))
    yield embedded.url
    embedded.shutdown()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = core_redis.client_for(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()
