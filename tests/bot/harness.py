"""A running siyu edge for tests: real receiver, real Redis, real DB, fake WeCom."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import build_pipeline
from bot.keys import METRICS, STREAM
from bot.sandbox.archive import SandboxArchive, add_archive_routes
from bot.sandbox.fake_api import SandboxState, build_fake_wecom_app
from bot.wecom.crypto import CallbackCrypto
from bot.worker import Worker
from core.domain import Domain
from core.server import start_site
from core.settings import Settings
from siyu.app import create_app
from siyu.domains import DOMAINS


def xml(fields: dict[str, Any]) -> str:
    from bot.sandbox.simulator import _xml

    return _xml(fields)


@dataclass
class Edge:
    settings: Settings
    app: web.Application
    base: str
    session: aiohttp.ClientSession
    crypto: CallbackCrypto
    state: SandboxState
    archive: SandboxArchive
    fake_base: str
    worker: Worker

    def signed(
        self, plaintext: str, *, timestamp: str | None = None, nonce: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        ts = timestamp or str(int(time.time()))
        nonce = nonce or secrets.token_hex(8)
        body, sig = self.crypto.build_callback_body(
            plaintext,
            nonce=nonce,
            timestamp=ts,
            to_user_name=self.settings.wecom.corp_id,
            agent_id=str(self.settings.wecom.agent_id),
        )
        return body, {"msg_signature": sig, "timestamp": ts, "nonce": nonce}

    async def post_callback(self, plaintext: str, **kw: Any) -> tuple[int, str]:
        body, params = self.signed(plaintext, **kw)
        return await self.post_raw(body, params)

    async def post_raw(self, body: bytes, params: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(
            f"{self.base}/wecom/callback", params=params, data=body
        ) as resp:
            return resp.status, await resp.text()

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.settings.api.token.get_secret_value()}"}
        headers.update(kw.pop("headers", {}))
        async with self.session.request(
            method, f"{self.base}{path}", headers=headers, **kw
        ) as resp:
            ctype = resp.content_type
            return resp.status, (
                await resp.json() if ctype == "application/json" else await resp.text()
            )

    async def process_all(self, *, rounds: int = 50) -> int:
        """Run the worker until the stream has nothing left for it."""
        total = 0
        for _ in range(rounds):
            n = await self.worker.run_once(block_ms=None)
            total += n
            if n == 0:
                length, pending = await self.app[STREAM].depth()
                if pending == 0:
                    break
                await asyncio.sleep(self.settings.pipeline.claim_idle_ms / 1000)
        return total

    async def queued(self) -> int:
        return int((await self.app[STREAM].depth())[0])


async def start_edge(
    settings: Settings,
    *,
    analyzer: Any,
    domains: Sequence[Domain] = DOMAINS,
    migrate_only: bool = False,
) -> tuple[Edge, list[Any]]:
    """Start the edge; ``migrate_only`` skips touching Redis at start (it may be down)."""
    state = SandboxState(corp_id=settings.wecom.corp_id)
    state.seed_demo(random.Random(1))
    archive = SandboxArchive()
    fake = build_fake_wecom_app(state)
    add_archive_routes(fake, archive)
    fake_runner, fake_port = await start_site(fake, "127.0.0.1", 0)
    fake_base = f"http://127.0.0.1:{fake_port}"
    settings.wecom.api_base_url = fake_base
    from pydantic import SecretStr

    settings.wecom.app_secret = SecretStr(state.secrets["app"])
    settings.wecom.contact_secret = SecretStr(state.secrets["contact"])
    settings.wecom.agent_id = state.agent_id
    # Receiver and API in the app; the worker is driven by the test, step by step.
    app = create_app(
        settings, ("receiver", "admin"), domains=domains, auto_migrate=True, analyzer=analyzer
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    pipeline = build_pipeline(app)
    worker = Worker(
        stream=app[STREAM],
        pipeline=pipeline,
        settings=settings.pipeline,
        metrics=app[METRICS],
        consumer="test-worker",
    )
    if not migrate_only:
        await app[STREAM].ensure_group()
    session = aiohttp.ClientSession()
    crypto = CallbackCrypto(
        token=settings.wecom.token.get_secret_value(),
        encoding_aes_key=settings.wecom.encoding_aes_key.get_secret_value(),
        receive_id=settings.wecom.corp_id,
    )
    edge = Edge(
        settings=settings,
        app=app,
        base=f"http://127.0.0.1:{port}",
        session=session,
        crypto=crypto,
        state=state,
        archive=archive,
        fake_base=fake_base,
        worker=worker,
    )
    return edge, [session.close, runner.cleanup, fake_runner.cleanup]
