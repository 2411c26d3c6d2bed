"""Typed keys of the admin domain: its state on the app, the caller on a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from markupsafe import Markup

from admin.models import Operator
from admin.permissions import PermissionTable
from admin.sessions import LoginThrottle, Session, SessionStore, TotpReplay
from core.access import MenuEntry
from core.settings import AdminSettings


@dataclass(frozen=True)
class NavItem:
    entry: MenuEntry
    route_name: str
    path: str
    # "" = any signed-in operator.
    permission: str


@dataclass
class Console:
    """What the console and the guard share for the life of the app."""

    settings: AdminSettings
    table: PermissionTable
    sessions: SessionStore
    throttle: LoginThrottle
    replay: TotpReplay
    nav: list[NavItem] = field(default_factory=list)
    # The sidebar drawn per (role, current route): admin.render.nav_html.
    nav_html: dict[tuple[str, str], Markup] = field(default_factory=dict)


# Where a state-changing request carries its CSRF token: a form field, or the header
# htmx sends (base.html sets it on <body>).
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"

CONSOLE = web.AppKey("admin_console", Console)
OPERATOR = web.RequestKey("admin_operator", Operator)
SESSION = web.RequestKey("admin_session", Session)
