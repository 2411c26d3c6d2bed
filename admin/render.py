"""Rendering a console template with what every page shows (the shell's context).

A helper rather than aiohttp-jinja2's context-processor middleware: that middleware
would run on every request of the process — WeCom callbacks included — to build a
context only console pages use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from admin.keys import CONSOLE, CSRF_FIELD, CSRF_HEADER, OPERATOR, SESSION, Console, NavItem


def nav_html(request: web.Request, console: Console, role: str, route_name: str) -> Markup:
    """The sidebar for ``role`` with ``route_name`` marked, drawn once per pair.

    Both the menu (the app's routes) and the permission table are fixed for the life of
    the app, so the same pair always draws the same links; a page draws them from here
    instead of looping over the menu on every view.
    """
    key = (role, route_name)
    found = console.nav_html.get(key)
    if found is None:
        found = console.nav_html[key] = Markup(  # noqa: S704 - a template's autoescaped output
            aiohttp_jinja2.get_env(request.app)
            .get_template("nav.html")
            .render(nav=nav_items(console, role), route_name=route_name)
        )
    return found


def nav_items(console: Console, role: str) -> list[NavItem]:
    granted = console.table.granted(role)
    return [n for n in console.nav if not n.permission or n.permission in granted]


def shell_context(request: web.Request) -> dict[str, Any]:
    console = request.app[CONSOLE]
    op = request.get(OPERATOR)
    session = request.get(SESSION)
    route_name = request.match_info.route.name or ""
    context: dict[str, Any] = {
        "me": op,
        "csrf": session.csrf if session else "",
        "csrf_field": CSRF_FIELD,
        "csrf_header": CSRF_HEADER,
        "table": console.table,
        "route_name": route_name,
        "nav": [],
        "nav_html": Markup(""),
        "now": datetime.now(UTC),
    }
    # The sidebar lists what this operator may open, and only once signed in fully.
    if op is not None and session is not None and session.stage == "full":
        context["nav"] = nav_items(console, op.role)
        context["nav_html"] = nav_html(request, console, op.role, route_name)
    return context


def render(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    # A guarded page has its shell's context on the request already (admin.auth), and
    # aiohttp-jinja2 adds it; a public page (sign-in, an error before the guard) has not.
    if not request.get(aiohttp_jinja2.REQUEST_CONTEXT_KEY):
        context = {**shell_context(request), **context}
    return aiohttp_jinja2.render_template(template, request, context, status=status)
