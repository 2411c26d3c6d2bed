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

from admin.keys import CONSOLE, CSRF_FIELD, CSRF_HEADER, OPERATOR, SESSION


def shell_context(request: web.Request) -> dict[str, Any]:
    console = request.app[CONSOLE]
    op = request.get(OPERATOR)
    session = request.get(SESSION)
    context: dict[str, Any] = {
        "me": op,
        "csrf": session.csrf if session else "",
        "csrf_field": CSRF_FIELD,
        "csrf_header": CSRF_HEADER,
        "table": console.table,
        "route_name": request.match_info.route.name or "",
        "nav": [],
        "now": datetime.now(UTC),
    }
    # The sidebar lists what this operator may open, and only once signed in fully.
    if op is not None and session is not None and session.stage == "full":
        granted = console.table.granted(op.role)
        context["nav"] = [n for n in console.nav if not n.permission or n.permission in granted]
    return context


def render(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    return aiohttp_jinja2.render_template(
        template, request, {**shell_context(request), **context}, status=status
    )
