"""The guard: the one place where every console page and API route is authorised.

``core.appkit.api_auth`` hands each request here once the admin domain is mounted
(``core.access.ACCESS_GUARD``).  What a route needs is declared beside its handler
(``core.access.requires`` / ``signed_in`` / ``public``); who holds which permission is
``permissions.json``.  The order of checks, and why:

1. Which surface.  ``/api/…`` is authenticated always (a route that declares nothing
   is open to the deprecated bootstrap token only, as before).  Other paths are
   guarded when their handler declares access; the rest — the WeCom callback,
   health, metrics, static files — are not the console's and pass untouched.
2. Who.  API: a named key (``Authorization: Bearer siyu_…``), the bootstrap token,
   or a console session.  Console: the session cookie; an unfinished sign-in (TOTP,
   a forced password change, a required enrolment) reaches only its own step.
3. CSRF on every state-changing request made with a session: the token is in the
   session, the form carries it (``_csrf``) or htmx sends it (``X-CSRF-Token``).
4. The permission, *before* the handler looks anything up: a refusal is the same
   403 whether or not the thing asked for exists.
5. After an API call with a key: its last-used time and an audit entry.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import warnings
from typing import Literal
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from admin import flows, security
from admin import service as admin_service
from admin.errors import api_error, error_page, see_other
from admin.keys import CONSOLE, CSRF_FIELD, CSRF_HEADER, OPERATOR, SESSION, Console
from admin.models import Operator
from admin.render import shell_context
from admin.sessions import Session, operator_hint
from admin.sidebar import auth as sidebar_auth
from core.access import PRINCIPAL, Access, Handler, Principal, access_of
from core.appkit import SETTINGS
from core.audit import Actor

log = logging.getLogger(__name__)

SESSION_COOKIE = "siyu_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BOOTSTRAP_KEY_ID = "bootstrap"

# An unfinished sign-in reaches only the page of its next step (and sign-out).
STAGE_PAGES: dict[str, str] = {
    "totp": "login_totp",
    "password": "account_password",
    "enrol": "account_totp",
}
ALWAYS_REACHABLE = frozenset({"logout"})

# Console pages are framed by nothing, run only our own scripts and styles, and
# send nothing to another origin.  htmx is told not to inject its indicator styles
# (base.html), so no 'unsafe-inline' is needed.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def client_address(request: web.Request) -> str:
    trusted = request.app[CONSOLE].settings.trusted_proxies
    return security.client_address(
        request.remote, request.headers.get("X-Forwarded-For", ""), trusted
    )


def secure_headers(response: web.StreamResponse, *, html: bool) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    if html:
        response.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")


def _is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _safe_next(path: str) -> str:
    # Only a path on this site: "//evil.example" or "https://…" would make the
    # sign-in page an open redirect.
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def login_redirect(request: web.Request) -> web.StreamResponse:
    target = "/login"
    if request.method in ("GET", "HEAD") and request.path not in ("/", "/login"):
        target += "?next=" + quote(_safe_next(request.path_qs), safe="")
    if _is_htmx(request):
        # htmx follows HX-Redirect with a full page load (a 303 would be swapped in).
        return web.Response(status=401, headers={"HX-Redirect": target})
    if request.method in ("GET", "HEAD"):
        return see_other(target)
    return error_page(request, 401)


async def _csrf_ok(request: web.Request, session: Session) -> bool:
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD, "")
        presented = value if isinstance(value, str) else ""
    return bool(presented) and hmac.compare_digest(presented.encode(), session.csrf.encode())


async def current_session(request: web.Request) -> tuple[Session, Operator] | None:
    """The caller's session and operator, if both are alive and still agree."""
    console = request.app[CONSOLE]
    sid = request.cookies.get(SESSION_COOKIE, "")
    hint = operator_hint(sid)
    if hint is None:
        session = await console.sessions.load(sid)
        if session is None:
            return None
        op = await admin_service.operator_by_id(operator_id=session.operator_id)
    else:
        # The cookie names its operator: Redis finds the session while the database
        # reads the operator, and nothing counts until the two agree.
        session, op = await asyncio.gather(
            console.sessions.load(sid), admin_service.operator_by_id(operator_id=hint)
        )
        if session is None:
            return None
        if session.operator_id != hint:
            op = None
    if op is None or op.status != "active" or op.session_epoch != session.epoch:
        await console.sessions.destroy(session)
        return None
    return session, op


def operator_principal(op: Operator, console: Console) -> Principal:
    return Principal(
        kind="operator",
        id=str(op.id),
        name=op.name,
        role=op.role,
        permissions=console.table.granted(op.role),
    )


def _allowed(principal: Principal, access: Access | None, *, bootstrap: bool) -> bool:
    if access is None:
        # An API route that declares nothing: only the bootstrap token, which could
        # call every route before keys existed, keeps that reach.
        return bootstrap
    if access.kind in ("public", "signed_in"):
        return True
    return access.permission in principal.permissions


async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    access = access_of(route.handler)
    if request.path.startswith("/api/"):
        response = await _api(request, handler, access)
        secure_headers(response, html=False)
        return response
    if access is None:
        if isinstance(request.match_info.http_exception, web.HTTPNotFound):
            response = error_page(request, 404)
            secure_headers(response, html=True)
            return response
        return await handler(request)
    if request.path.startswith(sidebar_auth.PREFIX):
        # The WeCom chat sidebar: its own session from WeCom sign-in, never the console's.
        response = await sidebar_auth.guard(request, handler, access)
        secure_headers(response, html=True)
        return response
    response = await _console(request, handler, access)
    secure_headers(response, html=True)
    return response


# ------------------------------------------------------------------ console


async def _console(request: web.Request, handler: Handler, access: Access) -> web.StreamResponse:
    console = request.app[CONSOLE]
    if access.kind == "public":
        return await _run_page(request, handler)
    found = await current_session(request)
    if found is None:
        return login_redirect(request)
    session, op = found
    request[SESSION] = session
    request[OPERATOR] = op
    route_name = request.match_info.route.name or ""
    if session.stage != "full" and route_name not in ALWAYS_REACHABLE:
        step = STAGE_PAGES[session.stage]
        if route_name != step:
            target = str(request.app.router[step].url_for())
            if _is_htmx(request):
                return web.Response(status=401, headers={"HX-Redirect": target})
            return see_other(target)
    try:
        csrf_refused = request.method in UNSAFE_METHODS and not await _csrf_ok(request, session)
    except web.HTTPRequestEntityTooLarge:
        # Reading the form for its token hit the size limit: the shell's page, not aiohttp's.
        return error_page(request, 413)
    if csrf_refused:
        log.warning("csrf refused", extra={"operator_id": op.id, "route": route_name})
        return error_page(request, 403, detail="页面已过期或请求来源不明，请刷新页面后重试。")
    principal = operator_principal(op, console)
    if not _allowed(principal, access, bootstrap=False):
        return error_page(request, 403)
    request[PRINCIPAL] = principal
    # Another domain's page extends base.html without importing admin: the shell's
    # context (operator, CSRF token, sidebar) reaches its template this way.
    with warnings.catch_warnings():
        # aiohttp-jinja2's key is a plain string (aiohttp ignores this warning itself).
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request[aiohttp_jinja2.REQUEST_CONTEXT_KEY] = shell_context(request)
    return await _run_page(request, handler)


async def _run_page(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_page(request, 404)
    except web.HTTPRequestEntityTooLarge:
        return error_page(request, 413)
    except web.HTTPBadRequest as exc:
        return error_page(request, 400, detail=exc.text or "")
    except (web.HTTPRedirection, web.HTTPSuccessful):
        raise
    except web.HTTPException as exc:
        return error_page(request, exc.status)
    except Exception:
        log.exception("console page failed", extra={"path": request.path})
        return error_page(request, 500)


# ------------------------------------------------------------------ API

ApiAuth = Literal["key", "bootstrap", "session"]


async def _api(request: web.Request, handler: Handler, access: Access | None) -> web.StreamResponse:
    console = request.app[CONSOLE]
    address = client_address(request)
    header = request.headers.get("Authorization", "")
    key_pk: int | None = None
    how: ApiAuth
    if header:
        if not header.startswith("Bearer "):
            return api_error(401, "expected Authorization: Bearer <API key>")
        presented = header[7:].strip()
        try:
            presented.encode()
        except UnicodeEncodeError:  # non-UTF-8 header bytes (kept as surrogate escapes)
            return api_error(401, "missing or wrong API key")
        bootstrap = request.app[SETTINGS].api.token.get_secret_value()
        if bootstrap and hmac.compare_digest(presented.encode(), bootstrap.encode()):
            how = "bootstrap"
            principal = Principal(
                kind="api_key",
                id=BOOTSTRAP_KEY_ID,
                name="SIYU_API__TOKEN",
                role="",
                permissions=frozenset(console.table.scopes),
            )
        else:
            found = await flows.check_api_key(presented=presented, address=address)
            if isinstance(found, str):
                return await _refuse_key(request, found, presented, address)
            how = "key"
            key_pk = found.id
            principal = Principal(
                kind="api_key",
                id=found.key_id,
                name=found.name,
                role="",
                permissions=frozenset(found.scopes or []),
            )
    else:
        session_found = await current_session(request)
        sidebar = None
        if session_found is None or session_found[0].stage != "full":
            # The advisor's sidebar session reaches the few routes the sidebar calls,
            # as an advisor whatever the account's role (admin.sidebar.auth).
            sidebar = await sidebar_auth.api_caller(request)
            if sidebar is None:
                return api_error(401, "sign in, or send Authorization: Bearer <API key>")
            session_found = (sidebar.session, sidebar.operator)
        session, op = session_found
        try:
            csrf_refused = request.method in UNSAFE_METHODS and not await _csrf_ok(request, session)
        except web.HTTPRequestEntityTooLarge:
            return api_error(413, "request body too large")
        if csrf_refused:
            return api_error(403, "missing or wrong CSRF token", code="csrf")
        how = "session"
        request[SESSION] = session
        request[OPERATOR] = op
        principal = sidebar.principal if sidebar else operator_principal(op, console)
    if request.match_info.http_exception is not None:
        exc = request.match_info.http_exception
        return api_error(exc.status, "no such API route" if exc.status == 404 else exc.reason)
    response: web.StreamResponse
    if not _allowed(principal, access, bootstrap=how == "bootstrap"):
        # The same answer whether or not the resource exists.
        response = api_error(403, "this key or role may not call this route")
    else:
        request[PRINCIPAL] = principal
        response = await _run_api(request, handler)
    if how != "session":
        try:
            await flows.do_record_key_use(
                actor=Actor("api_key", principal.id, principal.name),
                api_key_id=key_pk,
                source=address,
                method=request.method,
                path=request.path,
                status=response.status,
            )
        except Exception:
            # The call itself has been answered; losing its use record must not turn
            # a done ingest into an error the caller would retry.
            log.exception("api key use not recorded", extra={"key_id": principal.id})
    return response


async def _refuse_key(
    request: web.Request, reason: str, presented: str, address: str
) -> web.Response:
    if reason == "unknown":
        log.info("api key refused", extra={"reason": reason, "path": request.path})
        return api_error(401, "missing or wrong API key")
    parts = security.split_api_key(presented)
    await flows.do_record_key_refusal(
        reason=reason, key_ref=parts[0] if parts else "", source=address, path=request.path
    )
    if reason == "address":
        return api_error(
            403, "this API key may not be used from this address", code="ip_not_allowed"
        )
    return api_error(401, f"this API key is {reason}", code=f"key_{reason}")


async def _run_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return api_error(exc.status, message or exc.reason)
    except Exception:
        log.exception("api route failed", extra={"path": request.path})
        return api_error(500, "internal error")
