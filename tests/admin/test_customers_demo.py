"""`siyu demo`: its customers are in the console's customer list — all of them for the
admin, the demo advisor's own for the 客户经理 account — signing in with the printed
passwords (kept in demo-secrets.json)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest

from siyu.demo import run_demo


async def _names(base: str, name: str, password: str) -> list[str]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/login") as r:
            token = re.search(r'name="_csrf" value="([^"]+)"', await r.text())
        assert token is not None
        async with http.post(
            f"{base}/login",
            data={"_csrf": token.group(1), "name": name, "password": password},
            allow_redirects=False,
        ) as r:
            assert r.status == 303, (name, r.status)
        async with http.get(f"{base}/customers") as r:
            html = await r.text()
    table = html.split('id="customers"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'href="/customers/\d+">([^<]+)</a>', table)


@pytest.mark.slow
async def test_demo_customers_appear_in_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("SIYU_REDIS_URL", "SIYU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "demo"
    stop = asyncio.Event()
    seen: dict[str, list[str]] = {}

    async def watch() -> None:
        base = ""
        for _ in range(240):  # up to ~120 s
            await asyncio.sleep(0.5)
            if not base:
                found = re.search(
                    r"Console\s+(http://127\.0\.0\.1:\d+)/login", capsys.readouterr().out
                )
                if not found:
                    continue
                base = found.group(1)
            secrets = json.loads((data_dir / "demo-secrets.json").read_text())["operators"]
            seen["admin"] = await _names(base, "admin", secrets["admin"])
            seen["advisor"] = await _names(base, "advisor", secrets["advisor"])
            if len(seen["admin"]) >= 3 and seen["advisor"]:
                break
        stop.set()

    watcher = asyncio.create_task(watch())
    await run_demo(data_dir=data_dir, port=0, rate=20.0, stop=stop)
    await watcher
    assert len(seen["admin"]) >= 3
    # The advisor's book: customers the demo's first advisor follows, fewer than all.
    assert seen["advisor"] and len(seen["advisor"]) <= len(seen["admin"])
