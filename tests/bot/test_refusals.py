"""Refused requests are logged by reason, rate-limited, never with a body or a token;
a GET URL verification gets the same timestamp window as a POST callback.

A receiver-only app (Redis, no database), as ``siyu serve --role receiver`` runs it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.receiver import RECEIVER
from bot.wecom.crypto import CallbackCrypto
from core.appkit import REFUSALS
from core.server import start_site
from core.settings import Settings
from tests.bot.test_edge import text_msg
from tests.conftest import make_settings

PHONE = "13812345678"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Receiver:
    settings: Settings
    app: web.Application
    base: str
    session: aiohttp.ClientSession
    crypto: CallbackCrypto
    clock: FakeClock

    def signed(
        self, plaintext: str, *, timestamp: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        ts = timestamp or str(int(time.time()))
        nonce = secrets.token_hex(8)
        body, sig = self.crypto.build_callback_body(
            plaintext,
            nonce=nonce,
            timestamp=ts,
            to_user_name=self.settings.wecom.corp_id,
            agent_id=str(self.settings.wecom.agent_id),
        )
        return body, {"msg_signature": sig, "timestamp": ts, "nonce": nonce}

    async def post(self, body: bytes, params: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(
            f"{self.base}/wecom/callback", params=params, data=body
        ) as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def receiver(tmp_path: Path, redis_url: str, redis_client: Any) -> AsyncIterator[Receiver]:
    from siyu.app import create_app

    settings = make_settings(
        tmp_path, database_url=f"sqlite://{tmp_path / 'unused.sqlite3'}", redis_url=redis_url
    )
    app = create_app(settings, ("receiver",))
    runner, port = await start_site(app, "127.0.0.1", 0)
    clock = FakeClock()
    app[RECEIVER].refusals.clock = clock
    app[REFUSALS].clock = clock
    crypto = CallbackCrypto(
        token=settings.wecom.token.get_secret_value(),
        encoding_aes_key=settings.wecom.encoding_aes_key.get_secret_value(),
        receive_id=settings.wecom.corp_id,
    )
    async with aiohttp.ClientSession() as session:
        yield Receiver(settings, app, f"http://127.0.0.1:{port}", session, crypto, clock)
    await runner.cleanup()


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() in ("callback refused", "request refused")]


async def test_a_flood_of_bad_signatures_is_one_line_per_reason_per_window(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body, params = receiver.signed(text_msg("1", f"我的手机号{PHONE}"))
    forged = {**params, "msg_signature": "f" * 40}
    for _ in range(50):
        assert await receiver.post(body, forged) == (403, "bad_signature")
    stale = str(int(time.time()) - receiver.settings.wecom.callback_max_skew_s - 60)
    stale_body, stale_params = receiver.signed(text_msg("2", "hi"), timestamp=stale)
    for _ in range(3):
        assert await receiver.post(stale_body, stale_params) == (403, "stale_timestamp")

    lines = refusal_lines(caplog)
    assert [(r.__dict__["reason"], r.__dict__["status"]) for r in lines] == [
        ("bad_signature", 403),
        ("stale_timestamp", 403),
    ]

    receiver.clock.now += 10  # the next window: one line, with the count left out
    assert (await receiver.post(body, forged))[0] == 403
    last = refusal_lines(caplog)[-1]
    assert (last.__dict__["reason"], last.__dict__["suppressed"]) == ("bad_signature", 49)
    # Ids only: neither the body nor what it decrypts to.
    assert PHONE not in caplog.text and body.decode()[:40] not in caplog.text


async def test_oversize_body_413_is_logged(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    params = {"msg_signature": "a" * 40, "timestamp": str(int(time.time())), "nonce": "n"}
    big = b"<xml>" + b"a" * (1024 * 1024 + 10) + b"</xml>"
    assert (await receiver.post(big, params))[0] == 413
    assert [r.__dict__["reason"] for r in refusal_lines(caplog)] == ["too_large"]


async def test_api_401_is_logged_without_the_presented_token(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    presented = "not-the-api-token-" + secrets.token_hex(4)
    for _ in range(4):
        async with receiver.session.post(
            f"{receiver.base}/api/v1/archive/messages",
            headers={"Authorization": f"Bearer {presented}"},
            data=b"[]",
        ) as resp:
            assert resp.status == 401
    lines = refusal_lines(caplog)
    assert [(r.__dict__["reason"], r.__dict__["path"]) for r in lines] == [
        ("unauthorized", "/api/v1/archive/messages")
    ]
    assert presented not in caplog.text


async def test_url_verification_has_the_callback_timestamp_window(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def verify(ts: str) -> tuple[int, str]:
        nonce = secrets.token_hex(4)
        echostr, sig = receiver.crypto.encrypt("echo-9876", nonce=nonce, timestamp=ts)
        params = {"msg_signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr}
        async with receiver.session.get(f"{receiver.base}/wecom/callback", params=params) as r:
            return r.status, await r.text()

    assert await verify(str(int(time.time()))) == (200, "echo-9876")
    # A verification URL captured an hour ago no longer proves anything.
    assert await verify(str(int(time.time()) - 3600)) == (403, "stale_timestamp")
    assert [r.__dict__["reason"] for r in refusal_lines(caplog)] == ["stale_timestamp"]
