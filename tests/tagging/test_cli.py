"""`siyu tags sync` and `siyu tags seal-attributes` from the command line, against the sandbox."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from bot.sandbox.fake_api import SandboxState, build_fake_wecom_app
from core.domain import CliContext
from core.server import start_site
from core.settings import Settings


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    """The fake WeCom API on a loop of its own: the CLI runs its own event loop."""
    state = SandboxState(corp_id="wwclisync00000001")
    state.seed_demo(random.Random(3))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        runner, port = await start_site(build_fake_wecom_app(state), "127.0.0.1", 0)
        box["runner"], box["url"] = runner, f"http://127.0.0.1:{port}"
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    try:
        yield state, box["url"]
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _ctx(settings: Settings, **wecom: Any) -> CliContext:
    from siyu.app import schema_of
    from siyu.domains import DOMAINS

    configured = settings.model_copy(update={"wecom": settings.wecom.model_copy(update=wecom)})
    return CliContext(settings_factory=lambda: configured, schema=schema_of(DOMAINS))


def test_tags_sync_pulls_reconciles_and_prints_the_report(
    settings: Settings,
    sandbox: tuple[SandboxState, str],
    capsys: pytest.CaptureFixture[str],
    redis_client_sync: None,
    redis_url: str,
) -> None:
    from siyu import cli as siyu_cli

    if "postgres" in settings.database_url:
        pytest.skip("the command's wiring, once: the sync itself is tested on both databases")
    state, url = sandbox
    ctx = _ctx(
        settings,
        corp_id=state.corp_id,
        app_secret=SecretStr(state.secrets["app"]),
        api_base_url=url,
    )
    assert siyu_cli.main(["migrate"], ctx=ctx) == 0
    capsys.readouterr()
    assert siyu_cli.main(["tags", "sync"], ctx=ctx) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["counts"]["group_created"] == len(state.tag_groups)
    assert report["counts"]["tag_created"] == sum(len(g.tags) for g in state.tag_groups.values())
    # The library is in: a second run has nothing to repair.
    assert siyu_cli.main(["tags", "sync"], ctx=ctx) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == {"ok": True, "counts": {}, "changes": []}
    # WeCom refusing (a wrong secret: 40001) is reported, exit 1, nothing changed.  The
    # access token the runs share through Redis is dropped first, or it would be used.
    import redis as sync_redis

    with sync_redis.Redis.from_url(redis_url) as r:
        r.flushdb()
    wrong = _ctx(
        settings,
        corp_id=state.corp_id,
        app_secret=SecretStr("not-the-secret"),
        api_base_url=url,
    )
    assert siyu_cli.main(["tags", "sync"], ctx=wrong) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["ok"] is False and refused["errcode"] == 40001
    # Without a WeCom configuration the command says what is missing.
    assert siyu_cli.main(["tags", "sync"], ctx=_ctx(settings, corp_id="")) == 2
    assert "SIYU_WECOM__CORP_ID" in capsys.readouterr().err
