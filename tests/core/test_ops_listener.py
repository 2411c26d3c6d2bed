"""/readyz and /metrics off the internet-facing listener: SIYU_HTTP__OPS_PORT and _OPS_TOKEN.

A receiver-only app (Redis, no database) started as ``siyu serve --role receiver`` would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.appkit import OPS_ADDRESS
from core.server import start_site
from core.settings import Settings
from tests.conftest import make_settings


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[str, str | None]]:
    """(public base URL, ops base URL or None) of a started receiver."""
    from siyu.app import create_app

    app = create_app(settings, ("receiver",))
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        ops = app.get(OPS_ADDRESS)
        yield f"http://127.0.0.1:{port}", (f"http://{ops[0]}:{ops[1]}" if ops else None)
    finally:
        await runner.cleanup()


@pytest.fixture
def receiver_settings(tmp_path: Path, redis_url: str, redis_client: Any) -> Callable[..., Settings]:
    def build(**http: object) -> Settings:
        return make_settings(
            tmp_path,
            database_url=f"sqlite://{tmp_path / 'unused.sqlite3'}",
            redis_url=redis_url,
            http=http,
        )

    return build


async def status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_nothing_set_keeps_every_endpoint_on_the_public_listener(
    receiver_settings: Callable[..., Settings],
) -> None:
    async with running(receiver_settings()) as (public, ops):
        assert ops is None
        for path in ("/healthz", "/readyz", "/metrics"):
            assert await status(public + path) == 200


async def test_ops_port_moves_readyz_and_metrics_off_the_public_listener(
    receiver_settings: Callable[..., Settings],
) -> None:
    settings = receiver_settings(ops_port=0)
    async with running(settings) as (public, ops):
        assert ops is not None and ops.startswith("http://127.0.0.1:")  # loopback by default
        assert await status(public + "/healthz") == 200
        assert await status(public + "/metrics") == 404
        assert await status(public + "/readyz") == 404

        assert await status(ops + "/healthz") == 200
        assert await status(ops + "/readyz") == 200
        async with aiohttp.ClientSession() as session, session.get(ops + "/metrics") as resp:
            assert resp.status == 200
            assert "siyu_queue_length" in await resp.text()  # the domains' gauges, refreshed
        # The internal listener serves nothing else.
        assert await status(ops + "/wecom/callback") == 404
        assert await status(ops + "/api/v1/compliance/check") == 404


async def test_ops_token_guards_readyz_and_metrics_but_not_healthz(
    receiver_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = "ops-token-for-the-scraper"
    async with running(receiver_settings(ops_token=token)) as (public, _ops):
        assert await status(public + "/healthz") == 200
        for _ in range(5):
            assert await status(public + "/metrics") == 401
        assert await status(public + "/readyz", token="wrong") == 401
        assert await status(public + "/metrics", token=token) == 200
        assert await status(public + "/readyz", token=token) == 200

    refused = [r for r in caplog.records if r.getMessage() == "request refused"]
    # Rate-limited by reason: one line for the six refusals, none carrying the token.
    assert [r.__dict__["reason"] for r in refused] == ["ops_unauthorized"]
    assert token not in caplog.text and "wrong" not in caplog.text


async def test_ops_listener_with_a_token(receiver_settings: Callable[..., Settings]) -> None:
    token = "another-ops-token"
    async with running(receiver_settings(ops_port=0, ops_token=token)) as (_public, ops):
        assert ops is not None
        assert await status(ops + "/metrics") == 401
        assert await status(ops + "/metrics", token=token) == 200
        assert await status(ops + "/healthz") == 200


def test_ops_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_HTTP__OPS_PORT", "9464")
    monkeypatch.setenv("SIYU_HTTP__OPS_HOST", "10.0.0.5")
    monkeypatch.setenv("SIYU_HTTP__OPS_TOKEN", "t")
    s = Settings(_env_file=None)
    assert (s.http.ops_port, s.http.ops_host) == (9464, "10.0.0.5")
    assert s.http.ops_token.get_secret_value() == "t"
    monkeypatch.delenv("SIYU_HTTP__OPS_PORT")
    assert Settings(_env_file=None, http={"port": 1}).http.ops_port is None  # type: ignore[arg-type]
