"""A running console for tests: the admin role of the real app, real Redis, real DB."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from admin import flows
from admin.models import Operator
from core.audit import Actor
from core.server import start_site
from core.settings import Settings
from siyu.app import create_app

PASSWORD = "correct horse battery staple"
CLI = Actor("system", "test", "test")

_CSRF_INPUT = re.compile(r'name="_csrf" value="([^"]+)"')


@dataclass
class Console:
    settings: Settings
    app: web.Application
    base: str

    def client(self) -> aiohttp.ClientSession:
        # unsafe=True: keep cookies for an IP host (127.0.0.1), as a browser does.
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    def url(self, path: str) -> str:
        return self.base + path


async def start_console(settings: Settings, *, analyzer: Any) -> tuple[Console, list[Any]]:
    app = create_app(settings, ("admin",), auto_migrate=True, analyzer=analyzer)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return Console(settings=settings, app=app, base=f"http://127.0.0.1:{port}"), [runner.cleanup]


async def make_operator(
    role: str, *, name: str | None = None, password: str = PASSWORD, **kw: Any
) -> Operator:
    return await flows.do_create_operator(
        actor=CLI, source="test", name=name or f"{role}-user", role=role, password=password, **kw
    )


def csrf_in(html: str) -> str:
    m = _CSRF_INPUT.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


async def sign_in(
    console: Console,
    client: aiohttp.ClientSession,
    name: str,
    password: str = PASSWORD,
    *,
    next_path: str = "",
) -> aiohttp.ClientResponse:
    """Submit the sign-in form as a browser does; returns the (unfollowed) answer."""
    async with client.get(console.url("/login")) as page:
        token = csrf_in(await page.text())
    resp = await client.post(
        console.url("/login"),
        data={"_csrf": token, "name": name, "password": password, "next": next_path},
        allow_redirects=False,
    )
    await resp.read()
    return resp


async def signed_in_client(
    console: Console, name: str, password: str = PASSWORD
) -> tuple[aiohttp.ClientSession, str]:
    """A client with a full session, and its CSRF token (read from the home page)."""
    client = console.client()
    resp = await sign_in(console, client, name, password)
    assert resp.status == 303, resp.status
    async with client.get(console.url("/account/password")) as page:
        return client, csrf_in(await page.text())
