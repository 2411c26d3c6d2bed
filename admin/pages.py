"""Console pages: parse the form, call one flow, render a template (zh-CN).

What each page needs is declared on its handler (``core.access``); ``admin.auth``
enforces it before the handler runs.  Sidebar entries are declared the same way
(``@menu``), so a page is listed exactly when it exists and the operator may open it.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from admin import flows, security
from admin import service as admin_service
from admin.auth import SESSION_COOKIE, client_address, current_session
from admin.errors import see_other
from admin.keys import CONSOLE, OPERATOR, SESSION
from admin.models import Operator
from admin.permissions import ROLES
from admin.render import render
from admin.sessions import Session, Stage
from core import audit
from core.access import menu, public, requires, signed_in
from core.appkit import KEYRING, SETTINGS
from core.audit import Actor, AuditFilter

SHANGHAI = ZoneInfo("Asia/Shanghai")
LOGIN_CSRF_COOKIE = "siyu_login_csrf"
AUDIT_PAGE_SIZE = 50


def _cookie_secure(request: web.Request) -> bool:
    return request.app[CONSOLE].settings.cookie_secure


def _set_session_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    # No Max-Age: the cookie dies with the browser; the server enforces idle and
    # absolute limits whatever the browser keeps.
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="Lax",
        secure=_cookie_secure(request),
        path="/",
    )


def _actor(request: web.Request) -> Actor:
    return flows.operator_actor(request[OPERATOR])


def _form_str(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def next_stage(op: Operator, request: web.Request, *, totp_done: bool) -> Stage:
    """What the operator still has to do before the console opens, in order."""
    if op.totp_sealed and not totp_done:
        return "totp"
    if op.must_change_password:
        return "password"
    if op.role in request.app[CONSOLE].settings.totp_required_roles and not op.totp_sealed:
        return "enrol"
    return "full"


def _stage_target(request: web.Request, stage: Stage, next_path: str) -> str:
    from admin.auth import STAGE_PAGES, _safe_next

    if stage == "full":
        return _safe_next(next_path)
    return str(request.app.router[STAGE_PAGES[stage]].url_for())


async def _enter_stage(
    request: web.Request, session: Session, op: Operator, *, totp_done: bool
) -> web.StreamResponse:
    """Move the session to the operator's next stage (a new id each time)."""
    console = request.app[CONSOLE]
    stage = next_stage(op, request, totp_done=totp_done)
    sid, _moved = await console.sessions.advance(session, stage=stage)
    if stage == "full" and session.stage != "full":
        await flows.do_complete_sign_in(
            operator=op, source=client_address(request), throttle=console.throttle
        )
    response = see_other(_stage_target(request, stage, request.query.get("next", "/")))
    _set_session_cookie(request, response, sid)
    return response


# ------------------------------------------------------------------ sign-in


def _login_page(
    request: web.Request, *, error: str = "", name: str = "", status: int = 200
) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(
        "login.html",
        request,
        {"error": error, "name": name, "login_csrf": token, "next": request.query.get("next", "")},
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=_cookie_secure(request),
        path="/login",
    )
    return response


@public
async def login_form(request: web.Request) -> web.StreamResponse:
    found = await current_session(request)
    if found is not None and found[0].stage == "full":
        from admin.auth import _safe_next

        return see_other(_safe_next(request.query.get("next", "/")))
    return _login_page(request)


@public
async def login_submit(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    name = _form_str(form, "name")
    # Login CSRF (double submit): without it a page elsewhere could sign the
    # victim in to the attacker's account.
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    presented = _form_str(form, "_csrf")
    if not cookie or not secrets.compare_digest(cookie.encode(), presented.encode()):
        return _login_page(request, error="页面已过期，请重新登录。", name=name, status=403)
    result = await flows.do_sign_in(
        name=name,
        password=_form_str(form, "password"),
        source=client_address(request),
        throttle=console.throttle,
    )
    if result.outcome == "locked":
        minutes = max(1, int(result.retry_after_s // 60) + 1)
        return _login_page(
            request,
            error=f"登录失败次数过多，已临时锁定。请约 {minutes} 分钟后再试，或联系管理员。",
            name=name,
            status=429,
        )
    if result.outcome != "ok" or result.operator is None:
        # The same words for an unknown name, a wrong password and a disabled
        # account: the page must not tell which names exist.
        return _login_page(request, error="登录名或密码不正确。", name=name, status=401)
    op = result.operator
    stage = next_stage(op, request, totp_done=False)
    sid, _session = await console.sessions.create(
        operator_id=op.id, epoch=op.session_epoch, stage=stage
    )
    if stage == "full":
        await flows.do_complete_sign_in(
            operator=op, source=client_address(request), throttle=console.throttle
        )
    response = see_other(_stage_target(request, stage, _form_str(form, "next") or "/"))
    _set_session_cookie(request, response, sid)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@signed_in
async def login_totp(request: web.Request) -> web.StreamResponse:
    session, op = request[SESSION], request[OPERATOR]
    if session.stage != "totp":
        return see_other("/")
    error = ""
    status = 200
    if request.method == "POST":
        console = request.app[CONSOLE]
        form = await request.post()
        result = await flows.do_check_totp(
            operator=op,
            code=_form_str(form, "code"),
            source=client_address(request),
            keyring=request.app[KEYRING],
            throttle=console.throttle,
            replay=console.replay,
        )
        if result.outcome == "ok":
            return await _enter_stage(request, session, op, totp_done=True)
        if result.outcome == "locked":
            await console.sessions.destroy(session)
            return _login_page(
                request, error="验证失败次数过多，已临时锁定。请稍后再试。", status=429
            )
        error, status = "验证码不正确，请输入验证器中最新的 6 位数字。", 422
    return render("login_totp.html", request, {"error": error}, status=status)


@signed_in
async def logout(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    await console.sessions.destroy(request[SESSION])
    await flows.do_sign_out(operator=request[OPERATOR], source=client_address(request))
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# ------------------------------------------------------------------ own account


@signed_in
async def account_password(request: web.Request) -> web.StreamResponse:
    session, op = request[SESSION], request[OPERATOR]
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = await request.post()
        try:
            changed = await flows.do_change_own_password(
                operator=op,
                source=client_address(request),
                current=_form_str(form, "current"),
                new=_form_str(form, "new"),
                confirm=_form_str(form, "confirm"),
            )
        except flows.FieldError as exc:
            errors[exc.field] = exc.message
        else:
            # The epoch moved (other sessions end); this one continues under a new id.
            session = await request.app[CONSOLE].sessions.update(
                session, epoch=changed.session_epoch
            )
            return await _enter_stage(request, session, changed, totp_done=True)
    return render(
        "account_password.html",
        request,
        {"errors": errors, "forced": session.stage == "password"},
        status=422 if errors else 200,
    )


@signed_in
async def account_totp(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    keyring = request.app[KEYRING]
    session, op = request[SESSION], request[OPERATOR]
    errors: dict[str, str] = {}
    if request.method == "POST" and session.pending_totp:
        form = await request.post()
        try:
            enabled = await flows.do_enable_totp(
                operator=op,
                sealed=session.pending_totp,
                code=_form_str(form, "code"),
                source=client_address(request),
                keyring=keyring,
                replay=console.replay,
            )
        except flows.FieldError as exc:
            errors[exc.field] = exc.message
        else:
            return await _enter_stage(request, session, enabled, totp_done=True)
    if not session.pending_totp:
        sealed, _secret = flows.new_totp_enrolment(operator=op, keyring=keyring)
        session = await console.sessions.update(session, pending_totp=sealed)
    assert session.pending_totp is not None
    secret = flows.open_totp_enrolment(operator=op, sealed=session.pending_totp, keyring=keyring)
    uri = security.totp_uri(secret, account=op.name)
    return render(
        "account_totp.html",
        request,
        {
            "errors": errors,
            "qr_svg": security.totp_qr_svg(uri),
            # Grouped in fours, as authenticator apps show and ask for it.
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "forced": session.stage == "enrol",
            "enrolled": op.totp_sealed is not None,
        },
        status=422 if errors else 200,
    )


# ------------------------------------------------------------------ home

# A count links to the page that lists it, once a domain provides that page.
_COUNT_LINKS = {
    "messages": "messages",
    "violations": "review_queue",
    "open_cases": "review_queue",
    "dead_letters": "dead_letters",
}


@requires("console:home")
@menu("首页", group="", order=0)
async def home(request: web.Request) -> web.StreamResponse:
    counts = await admin_service.console_counts()
    links = {
        key: str(request.app.router[name].url_for())
        for key, name in _COUNT_LINKS.items()
        if name in request.app.router
    }
    principal_perms = request.app[CONSOLE].table.granted(request[OPERATOR].role)
    recent = []
    if "audit:read" in principal_perms:
        recent = await audit.entries(where=AuditFilter(), limit=8)
    return render("home.html", request, {"counts": counts, "links": links, "recent": recent})


# ------------------------------------------------------------------ users


async def _users_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str = "",
    one_time: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        "users.html",
        request,
        {
            "operators": await admin_service.operators(),
            "roles": ROLES,
            "errors": errors or {},
            "form": form or {},
            "notice": notice,
            "one_time": one_time,
            "totp_roles": request.app[CONSOLE].settings.totp_required_roles,
        },
        status=status,
    )


def _operator_id(request: web.Request) -> int:
    raw = request.match_info["operator_id"]
    if not raw.isdigit():
        raise web.HTTPNotFound()
    return int(raw)


@requires("operators:manage")
@menu("用户", group="系统", order=80)
async def users(request: web.Request) -> web.StreamResponse:
    return await _users_page(request)


@requires("operators:manage")
async def users_create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {k: _form_str(form, k) for k in ("name", "display_name", "role")}
    password = security.generated_password()
    try:
        op = await flows.do_create_operator(
            actor=_actor(request),
            source=client_address(request),
            name=values["name"],
            display_name=values["display_name"],
            role=values["role"],
            password=password,
            must_change_password=True,
        )
    except flows.FieldError as exc:
        return await _users_page(request, errors={exc.field: exc.message}, form=values, status=422)
    return await _users_page(
        request,
        notice=f"已创建用户 {op.name}。",
        one_time={"name": op.name, "password": password},
    )


@requires("operators:manage")
async def users_status(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        op = await flows.do_set_operator_status(
            actor=_actor(request),
            source=client_address(request),
            operator_id=_operator_id(request),
            active=_form_str(form, "active") == "1",
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except flows.FieldError as exc:
        return await _users_page(request, errors={"row": exc.message}, status=422)
    state = "启用" if op.status == "active" else "停用"
    return await _users_page(request, notice=f"已{state}用户 {op.name}。")


@requires("operators:manage")
async def users_role(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        op = await flows.do_change_role(
            actor=_actor(request),
            source=client_address(request),
            operator_id=_operator_id(request),
            role=_form_str(form, "role"),
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except flows.FieldError as exc:
        return await _users_page(request, errors={"row": exc.message}, status=422)
    label = request.app[CONSOLE].table.role_label(op.role)
    return await _users_page(request, notice=f"已将 {op.name} 的角色改为{label}。")


@requires("operators:manage")
async def users_password(request: web.Request) -> web.StreamResponse:
    password = security.generated_password()
    try:
        op = await flows.do_reset_password(
            actor=_actor(request),
            source=client_address(request),
            operator_id=_operator_id(request),
            password=password,
            must_change_password=True,
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    return await _users_page(
        request,
        notice=f"已重置 {op.name} 的密码，其所有会话已结束。",
        one_time={"name": op.name, "password": password},
    )


@requires("operators:manage")
async def users_totp(request: web.Request) -> web.StreamResponse:
    try:
        op = await flows.do_reset_totp(
            actor=_actor(request),
            source=client_address(request),
            operator_id=_operator_id(request),
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    return await _users_page(request, notice=f"已重置 {op.name} 的两步验证，下次登录时需重新绑定。")


# ------------------------------------------------------------------ API keys


async def _keys_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    created: flows.CreatedKey | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    table = request.app[CONSOLE].table
    return render(
        "api_keys.html",
        request,
        {
            "keys": await admin_service.api_keys(),
            "scopes": [(s, table.label(s)) for s in table.scopes],
            "errors": errors or {},
            "form": form or {"scopes": []},
            "created": created,
            "notice": notice,
            "bootstrap_set": bool(request.app[SETTINGS].api.token.get_secret_value()),
        },
        status=status,
    )


@requires("api_keys:manage")
@menu("API 密钥", group="系统", order=85)
async def api_keys(request: web.Request) -> web.StreamResponse:
    return await _keys_page(request)


def parse_local_date_end(text: str, *, field: str) -> datetime | None:
    """A YYYY-MM-DD date in Asia/Shanghai → the end of that day as an aware datetime."""
    text = text.strip()
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise flows.FieldError(field, "日期格式应为 YYYY-MM-DD") from None
    return day + timedelta(days=1)


@requires("api_keys:manage")
async def api_keys_create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values: dict[str, Any] = {
        "name": _form_str(form, "name"),
        "scopes": [v for v in form.getall("scopes", []) if isinstance(v, str)],
        "expires_on": _form_str(form, "expires_on"),
        "allowed_ips": _form_str(form, "allowed_ips"),
    }
    try:
        expires_at = parse_local_date_end(values["expires_on"], field="expires_on")
        created = await flows.do_create_api_key(
            actor=_actor(request),
            source=client_address(request),
            name=values["name"],
            scopes=values["scopes"],
            table=request.app[CONSOLE].table,
            expires_at=expires_at,
            allowed_ips=values["allowed_ips"].replace(",", "\n").splitlines(),
        )
    except flows.FieldError as exc:
        field = "expires_on" if exc.field == "expires_at" else exc.field
        return await _keys_page(request, errors={field: exc.message}, form=values, status=422)
    return await _keys_page(request, created=created)


@requires("api_keys:manage")
async def api_keys_revoke(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["key_id"]
    if not raw.isdigit():
        raise web.HTTPNotFound()
    try:
        key = await flows.do_revoke_api_key(
            actor=_actor(request), source=client_address(request), api_key_id=int(raw)
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    return await _keys_page(request, notice=f"已吊销密钥「{key.name}」，使用它的调用将被拒绝。")


# ------------------------------------------------------------------ audit log


def _parse_local_date(text: str, *, field: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise flows.FieldError(field, "日期格式应为 YYYY-MM-DD") from None


@requires("audit:read")
@menu("审计日志", group="合规", order=60)
async def audit_log(request: web.Request) -> web.StreamResponse:
    q = request.query
    values = {
        k: q.get(k, "").strip()
        for k in ("actor_kind", "actor", "action", "target", "result", "since", "until")
    }
    errors: dict[str, str] = {}
    since = until = None
    try:
        since = _parse_local_date(values["since"], field="since")
    except flows.FieldError as exc:
        errors[exc.field] = exc.message
    try:
        until = parse_local_date_end(values["until"], field="until")
    except flows.FieldError as exc:
        errors[exc.field] = exc.message
    if values["actor_kind"] not in ("", "operator", "api_key", "system"):
        errors["actor_kind"] = "请选择有效的操作者类型"
    before_raw = q.get("before", "")
    before = int(before_raw) if before_raw.isdigit() else None
    rows: list[audit.AuditRecord] = []
    if not errors:
        rows = await audit.entries(
            where=AuditFilter(
                actor_kind=values["actor_kind"],
                actor=values["actor"],
                action=values["action"],
                target=values["target"],
                result=values["result"],
                since=since,
                until=until,
            ),
            before_seq=before,
            limit=AUDIT_PAGE_SIZE + 1,
        )
    more = len(rows) > AUDIT_PAGE_SIZE
    rows = rows[:AUDIT_PAGE_SIZE]
    next_query = None
    if more:
        params = {k: v for k, v in values.items() if v}
        params["before"] = str(rows[-1].seq)
        next_query = params
    return render(
        "audit.html",
        request,
        {
            "rows": rows,
            "values": values,
            "errors": errors,
            "actions": await audit.distinct_actions(),
            "next_query": next_query,
            "head": await audit.chain_head(),
            "report": None,
            "can_verify": request.app[CONSOLE].table.allows(request[OPERATOR].role, "audit:verify"),
        },
        status=422 if errors else 200,
    )


@requires("audit:verify")
async def audit_verify(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    import asyncio

    heads = await asyncio.to_thread(audit.read_heads, settings.data_dir)
    report = await audit.verify(recorded_heads=heads)
    await audit.append_alone(
        actor=_actor(request),
        action="audit.verify",
        target=f"seq:{report.last_seq}",
        result="ok" if report.ok else f"broken:{report.problem.kind if report.problem else ''}",
        source=client_address(request),
    )
    return render("audit_verify.html", request, {"report": report, "heads_checked": len(heads)})


# ------------------------------------------------------------------ API reference


@signed_in
@menu("API 文档", group="系统", order=90)
async def api_docs(request: web.Request) -> web.StreamResponse:
    """The OpenAPI reference rendered by the vendored Swagger UI (no CDN, read only)."""
    return render(
        "api_docs.html", request, {"spec_url": str(request.app.router["api_openapi"].url_for())}
    )


# ------------------------------------------------------------------ mounting


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_form, name="login")
    r.add_post("/login", login_submit, name="login_submit")
    r.add_route("*", "/login/totp", login_totp, name="login_totp")
    r.add_post("/logout", logout, name="logout")
    r.add_route("*", "/account/password", account_password, name="account_password")
    r.add_route("*", "/account/totp", account_totp, name="account_totp")
    r.add_get("/", home, name="home")
    r.add_get("/users", users, name="users")
    r.add_post("/users", users_create, name="users_create")
    r.add_post("/users/{operator_id}/status", users_status, name="users_status")
    r.add_post("/users/{operator_id}/role", users_role, name="users_role")
    r.add_post("/users/{operator_id}/password", users_password, name="users_password")
    r.add_post("/users/{operator_id}/totp", users_totp, name="users_totp")
    r.add_get("/api-keys", api_keys, name="api_keys")
    r.add_post("/api-keys", api_keys_create, name="api_keys_create")
    r.add_post("/api-keys/{key_id}/revoke", api_keys_revoke, name="api_keys_revoke")
    r.add_get("/audit", audit_log, name="audit")
    r.add_post("/audit/verify", audit_verify, name="audit_verify")
    r.add_get("/api/docs", api_docs, name="api_docs")
