"""The sidebar's own surface: an advisor's short session from WeCom OAuth, and its guard.

An advisor reaches the sidebar through WeCom alone — no password, no second factor — so
what that sign-in opens is kept small and apart from the console:

* its own cookie (``siyu_sidebar``) and its own keyspace in Redis: a console session
  never opens the sidebar, and a sidebar session never opens a console page;
* a short life (``SIYU_SIDEBAR__SESSION_IDLE_S`` / ``_MAX_S``): WeCom signs the advisor in
  again, silently, when it ends;
* one role whatever the account's: ``advisor`` — the caller's own customers, by the
  follow relation of their WeCom userid — so a compliance officer who opens the sidebar
  in WeCom gets an advisor's reach, not the console's;
* beyond ``/sidebar/`` it calls only the API routes listed in ``SIDEBAR_API``.

``admin.auth.guard`` hands every ``/sidebar/`` route that declares access to ``guard``
here, and asks ``api_caller`` when an ``/api/`` call carries no console session.  The
session itself is ``admin.sessions.SessionStore``: the same records, CSRF tokens and
clock-decided expiry as the console's.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from admin import service as admin_service
from admin.errors import api_error, error_page, see_other
from admin.keys import CONSOLE, OPERATOR, SESSION, Console
from admin.models import Operator
from admin.sessions import Session, SessionStore
from bot.wecom.client import WeComClient
from bot.wecom.oauth import AgentTicketCache
from core.access import PRINCIPAL, Access, Handler, Principal
from core.settings import AdminSettings, SidebarSettings

log = logging.getLogger(__name__)

PREFIX = "/sidebar/"
COOKIE = "siyu_sidebar"
# The OAuth round trip's state and where to return, bound to this browser (a login CSRF
# defence: a code obtained elsewhere cannot be pushed into someone's sidebar).
STATE_COOKIE = "siyu_sidebar_oauth"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The sidebar's role, whatever the account's: an advisor's reach and permissions.
ROLE = "advisor"

#: API routes a sidebar session may call (prefixes): the pre-send check, the
#: compliant reply library, and the advisor's SOP touches (read one, record its send).
SIDEBAR_API = ("/api/v1/compliance/check", "/api/v1/snippets", "/api/v1/touches/")


@dataclass
class Sidebar:
    """What the sidebar's routes share for the life of the app."""

    settings: SidebarSettings
    sessions: SessionStore
    corp_id: str
    agent_id: int
    # None when no WeCom app secret is configured: the sidebar cannot sign anyone in.
    client: WeComClient | None
    tickets: AgentTicketCache | None
    cookie_secure: bool


SIDEBAR = web.AppKey("admin_sidebar", Sidebar)


@dataclass(frozen=True)
class Caller:
    """A signed-in advisor on the sidebar."""

    session: Session
    operator: Operator
    principal: Principal

    @property
    def userid(self) -> str:
        return self.operator.wecom_userid or ""


CALLER = web.RequestKey("sidebar_caller", Caller)


def session_store(redis: object, settings: SidebarSettings, keyspace: object) -> SessionStore:
    """The console's store, under its own keys and the sidebar's shorter lifetimes."""
    lifetimes = AdminSettings(
        session_idle_s=settings.session_idle_s, session_max_s=settings.session_max_s
    )
    return SessionStore(redis, settings=lifetimes, keyspace=keyspace)  # type: ignore[arg-type]


def principal_for(op: Operator, console: Console) -> Principal:
    return Principal(
        kind="operator",
        id=str(op.id),
        name=op.name,
        role=ROLE,
        permissions=console.table.granted(ROLE),
    )


async def load_caller(request: web.Request) -> Caller | None:
    """The advisor's live sidebar session, if the cookie names one and it still agrees."""
    sidebar = request.app.get(SIDEBAR)
    if sidebar is None:
        return None
    session = await sidebar.sessions.load(request.cookies.get(COOKIE, ""))
    if session is None:
        return None
    op = await admin_service.operator_by_id(operator_id=session.operator_id)
    if op is None or op.status != "active" or op.session_epoch != session.epoch:
        # Disabled, or an administrator changed the account: this session ends.
        await sidebar.sessions.destroy(session)
        return None
    if not op.wecom_userid:
        await sidebar.sessions.destroy(session)
        return None
    return Caller(session=session, operator=op, principal=principal_for(op, request.app[CONSOLE]))


def _csrf_ok(request: web.Request, session: Session) -> bool:
    presented = request.headers.get(CSRF_HEADER, "")
    return bool(presented) and hmac.compare_digest(presented.encode(), session.csrf.encode())


def _sign_in_again(request: web.Request) -> web.StreamResponse:
    if request.method in ("GET", "HEAD") and not request.path.startswith(PREFIX + "api/"):
        target = request.app.router["sidebar_oauth_start"].url_for()
        return see_other(f"{target}?next={quote(request.path_qs, safe='')}")
    return api_error(401, "sidebar session ended: open the sidebar again", code="signed_out")


async def guard(request: web.Request, handler: Handler, access: Access) -> web.StreamResponse:
    """Authorise a ``/sidebar/`` route by the sidebar session (never the console's)."""
    if access.kind == "public":
        return await handler(request)
    caller = await load_caller(request)
    if caller is None:
        return _sign_in_again(request)
    if request.method in UNSAFE_METHODS and not _csrf_ok(request, caller.session):
        log.warning("sidebar csrf refused", extra={"operator_id": caller.operator.id})
        return api_error(403, "missing or wrong CSRF token", code="csrf")
    if access.kind == "permission" and access.permission not in caller.principal.permissions:
        return error_page(request, 403)
    request[CALLER] = caller
    request[PRINCIPAL] = caller.principal
    request[OPERATOR] = caller.operator
    request[SESSION] = caller.session
    return await handler(request)


async def api_caller(request: web.Request) -> Caller | None:
    """The sidebar's advisor on an API route the sidebar calls; None elsewhere."""
    if not any(request.path.startswith(p) for p in SIDEBAR_API):
        return None
    if COOKIE not in request.cookies:
        return None
    return await load_caller(request)
