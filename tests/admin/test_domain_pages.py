"""A domain's console pages (``Domain.pages``) are mounted in the shell and guarded.

The root hands the console the list of domains; each page declares its permission and
sidebar entry where it is defined, and the one guard enforces it like admin's own.
"""

from __future__ import annotations

from aiohttp import web

from core.access import menu, requires
from core.domain import Domain
from core.server import start_site
from core.settings import Settings
from siyu.app import create_app
from siyu.domains import DOMAINS
from tests.admin.console import Console, make_operator, signed_in_client


@requires("tags:write")
@menu("桩页面", group="测试", order=99)
async def stub_page(request: web.Request) -> web.StreamResponse:
    return web.Response(text="stub page body", content_type="text/html")


def add_stub_pages(app: web.Application) -> None:
    app.router.add_get("/stub-page", stub_page, name="stub_page")


STUB = Domain(name="stubpages", pages=(add_stub_pages,))


async def test_a_domains_pages_are_mounted_guarded_and_listed(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> None:
    app = create_app(
        console_settings, ("admin",), domains=(*DOMAINS, STUB), auto_migrate=True, analyzer=analyzer
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    console = Console(settings=console_settings, app=app, base=f"http://127.0.0.1:{port}")
    try:
        await make_operator("marketing", name="ops")
        await make_operator("compliance", name="reviewer")
        async with console.client() as anonymous:
            async with anonymous.get(console.url("/stub-page"), allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login")
        client, _ = await signed_in_client(console, "ops")
        async with client:
            async with client.get(console.url("/stub-page")) as r:
                assert r.status == 200 and "stub page body" in await r.text()
            async with client.get(console.url("/")) as r:
                assert 'href="/stub-page"' in await r.text()  # in the sidebar
        client, _ = await signed_in_client(console, "reviewer")
        async with client:
            async with client.get(console.url("/stub-page")) as r:
                assert r.status == 403
            async with client.get(console.url("/")) as r:
                assert 'href="/stub-page"' not in await r.text()
    finally:
        await runner.cleanup()


async def test_links_built_in_templates_are_the_routers(console: Console) -> None:
    """``url()`` fills a route's pattern for row ids (admin.app._cached_url): the same
    text the router builds, for every route of every domain; anything else the router
    builds itself."""
    import string

    import aiohttp_jinja2

    url = aiohttp_jinja2.get_env(console.app).globals["url"]
    context = {"app": console.app}
    checked = 0
    for resource in console.app.router.resources():
        if not isinstance(resource, web.DynamicResource) or not resource.name:
            continue
        names = [f for _, f, _, _ in string.Formatter().parse(resource.canonical) if f]
        for value in (7, "12", "wm x/é?", "-1"):
            parts = {n: value for n in names}
            want = str(resource.url_for(**{n: str(value) for n in names}))
            assert str(url(context, resource.name, **parts)) == want, (resource.name, value)
        checked += 1
    assert checked > 20
    got = url(context, "review_case", query_={"back": "a&b"}, case_id=3)
    assert str(got) == str(console.app.router["review_case"].url_for(case_id="3")) + "?back=a%26b"
