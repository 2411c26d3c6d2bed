"""The admin domain's part of an application: the console's state, its routes, the guard.

``add_console_routes`` runs when the root builds an app with the ``admin`` role: it
mounts the pages, the API routes, the static files and the template environment,
and installs the guard (``admin.auth``) through core's hook, so every route of
every domain is authorised by it.  ``console_ctx`` builds what the guard and pages
share once Redis is up.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from admin import dashboard_pages, pages, review, review_pages, views
from admin import service as admin_service
from admin.auth import guard
from admin.customers import pages as customer_pages
from admin.customers import views as customer_views
from admin.fragments import action_label, cst, result_tag
from admin.keys import CONSOLE, OPERATOR, Console, NavItem
from admin.permissions import load_table
from admin.render import shell_context
from admin.review_views import add_routes as add_review_api
from admin.sessions import LoginThrottle, SessionStore, TotpReplay
from admin.sidebar import views as sidebar_views
from core.access import (
    ACCESS_GUARD,
    ACTOR_NAMES,
    PAGE_CONTEXT,
    REACH,
    access_of,
    menu_of,
    principal_of,
)
from core.appkit import DOMAINS, REDIS, SETTINGS

log = logging.getLogger(__name__)


def _nav(app: web.Application) -> list[NavItem]:
    items = []
    for route in app.router.routes():
        entry = menu_of(route.handler)
        if entry is None or route.method != "GET" or not route.name:
            continue
        access = access_of(route.handler)
        permission = access.permission if access and access.kind == "permission" else ""
        items.append(
            NavItem(
                entry=entry,
                route_name=route.name,
                path=str(route.url_for()),
                permission=permission,
            )
        )
    return sorted(items, key=lambda i: (i.entry.order, i.entry.label))


def check_declared_permissions(app: web.Application) -> None:
    """Refuse to start when a route names a permission the table does not have."""
    table = load_table()
    for route in app.router.routes():
        access = access_of(route.handler)
        if access and access.kind == "permission" and access.permission not in table.permissions:
            raise ValueError(
                f"route {route.method} {route.resource.canonical if route.resource else '?'} "
                f"needs {access.permission!r}, which admin/permissions.json does not define"
            )


async def console_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    table = load_table()
    app[CONSOLE] = Console(
        settings=settings.admin,
        table=table,
        sessions=SessionStore(app[REDIS], settings=settings.admin),
        throttle=LoginThrottle(app[REDIS], settings=settings.admin),
        replay=TotpReplay(app[REDIS]),
        nav=_nav(app),
    )
    check_declared_permissions(app)
    undeclared = sorted(
        f"{r.method} {r.resource.canonical}"
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and access_of(r.handler) is None
    )
    if undeclared:
        log.warning(
            "API routes without a declared permission: only SIYU_API__TOKEN may call them",
            extra={"routes": ", ".join(undeclared)},
        )
    if settings.api.token.get_secret_value():
        log.warning(
            "SIYU_API__TOKEN is deprecated: it acts as a bootstrap key with every scope; "
            "create named keys (`siyu api-keys create`) and unset it"
        )
    yield


def _static_url(app: web.Application) -> Any:
    @functools.cache
    def url(filename: str) -> str:
        # Fixed for the process (the file's hash is): built once per asset.
        return str(
            app.router["admin_static"]
            .url_for(filename=filename)
            .with_query({"v": _asset_version(filename)})
        )

    return url


def _is_id(value: Any) -> bool:
    # What a path part holds on the busiest links (a case's, a customer's row id): the
    # router would quote it into itself.
    if type(value) is int:
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _cached_url(url_for: Any) -> Any:
    """aiohttp-jinja2's ``url()``, with a route's plain URL (no parts, no query) built
    once: the shell's sidebar and a page's links ask for the same dozen on every
    render, and each build through the router cost more than the link's markup.  A
    route with parts that are all row ids is filled into its path's pattern (the
    resource's ``canonical`` form, ``/review/{case_id}``): the same text the router
    builds, without building and quoting a URL per row."""
    plain: dict[str, Any] = {}
    shapes: dict[str, str | None] = {}

    @jinja2.pass_context
    def url(context: Any, __route_name: str, query_: Any = None, **parts: Any) -> Any:
        if query_:
            return url_for(context, __route_name, query_, **parts)
        if parts:
            shape = shapes.get(__route_name, "")
            if shape == "":
                resource = context["app"].router[__route_name]
                shape = shapes[__route_name] = (
                    resource.canonical if isinstance(resource, web.DynamicResource) else None
                )
            if shape is not None and (
                _is_id(next(iter(parts.values())))
                if len(parts) == 1
                else all(_is_id(v) for v in parts.values())
            ):
                return shape.format_map(parts)
            return url_for(context, __route_name, query_, **parts)
        found = plain.get(__route_name)
        if found is None:
            found = plain[__route_name] = url_for(context, __route_name)
        return found

    return url


@functools.cache
def _asset_version(filename: str) -> str:
    # The file's hash, so a new release never runs with a cached old script.
    data = resources.files("admin").joinpath("static", *filename.split("/")).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def _has_templates(package: str) -> bool:
    # A domain is named after its package; a record built elsewhere (a test's) may
    # name none, and then brings no templates.
    if importlib.util.find_spec(package) is None:
        return False
    return resources.files(package).joinpath("templates").is_dir()


async def _reach(request: web.Request) -> frozenset[str] | None:
    # Advisors and team leads see their own book (the review queue's rule); the other
    # roles every customer.  An API key acts for a system, bounded by its scopes.
    op = request.get(OPERATOR)
    if op is None:
        return None
    principal = principal_of(request)
    if principal is not None and principal.kind == "operator" and principal.role != op.role:
        # The chat sidebar acts as an advisor whatever the account's role
        # (admin.sidebar.auth): the member's own book, never the account's wider reach.
        if principal.role == "advisor":
            return frozenset({op.wecom_userid}) if op.wecom_userid else frozenset()
    if op.role not in ("advisor", "team_lead"):
        return None
    return await review.reach_of(op)


def add_console_routes(app: web.Application) -> None:
    domains = app.get(DOMAINS, ())
    # Each domain with pages keeps its templates beside them (<package>/templates); the
    # shell's own come first, so a domain extends base.html and uses its macros.
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("admin", "templates")]
    for d in domains:
        if d.pages and d.name != "admin" and _has_templates(d.name):
            loaders.append(jinja2.PackageLoader(d.name, "templates"))
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        # Templates ship inside the packages: compiled once per process, never checked
        # against the files again on a render (a stat per template and per base).
        auto_reload=False,
    )
    env.filters["cst"] = cst
    env.globals["url"] = _cached_url(env.globals["url"])
    env.globals["action_label"] = action_label
    env.globals["result_tag"] = result_tag
    env.globals["one_second"] = timedelta(seconds=1)
    env.globals["static"] = _static_url(app)
    static_dir = resources.files("admin").joinpath("static")
    app.router.add_static("/static/admin", str(static_dir), name="admin_static")
    pages.add_pages(app)
    review_pages.add_pages(app)
    dashboard_pages.add_pages(app)
    customer_pages.add_pages(app)
    # The advisors' chat sidebar in WeCom (/sidebar/): its own sign-in, guarded apart.
    sidebar_views.add_routes(app)
    # What other domains' pages render with (the shell's context) and filter by (reach).
    app[PAGE_CONTEXT] = shell_context
    app[REACH] = _reach
    # Who did something, by name, on other domains' pages (operators and keys are ours).
    app[ACTOR_NAMES] = admin_service.actor_names
    # Other domains' console pages, mounted inside the shell: the guard below checks
    # the permission each page declares, the sidebar lists those with a @menu entry.
    for d in domains:
        for add in d.pages:
            add(app)
    views.add_routes(app)
    customer_views.add_routes(app)
    add_review_api(app)
    app[ACCESS_GUARD] = guard
