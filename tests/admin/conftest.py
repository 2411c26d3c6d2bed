"""Fixtures of the console tests: a fast password hash and a running console."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from argon2 import PasswordHasher

from core.settings import Settings
from tests.admin.console import Console, start_console


@pytest.fixture(autouse=True)
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id with tiny parameters: the tests check behaviour, not the cost."""
    from admin import security

    fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(security, "_HASHER", fast)
    monkeypatch.setattr(security, "_DUMMY_HASH", fast.hash("dummy"))
    yield


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    settings.admin.cookie_secure = False  # plain HTTP on loopback
    settings.admin.totp_required_roles = []
    return settings


@pytest.fixture
async def console(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[Console]:
    c, closers = await start_console(console_settings, analyzer=analyzer)
    try:
        yield c
    finally:
        for close in closers:
            await close()
