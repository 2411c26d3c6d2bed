"""The sidebar's routes: parse → one flow → render (a page, a fragment or JSON).

``/sidebar/`` is what WeCom's chat toolbar opens.  The page signs itself into the WeCom
client with the JS-SDK (``agentConfig``, signed here), asks the client which customer
or group the conversation is with, and loads that customer's fragment; the pre-send
check and the reply library are API calls the page makes with the sidebar session.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin.auth import client_address
from admin.errors import api_error
from admin.flows import FieldError, NotFound
from admin.sidebar import flows
from admin.sidebar.auth import (
    CALLER,
    COOKIE,
    PREFIX,
    SIDEBAR,
    STATE_COOKIE,
    Caller,
    Sidebar,
    session_store,
)
from bot import service as bot_service
from bot.flows import CATEGORY_LABELS
from bot.keys import KEYRING, REDIS, SETTINGS, WECOM_CLIENT
from bot.precheck import CHECK_GATE, CheckBusy
from bot.wecom.client import WeComError
from bot.wecom.oauth import AgentTicketCache, authorize_url, oauth_identity
from compliance_nlp.pool import AnalyzerUnavailable
from core.access import public, requires
from core.redis import Keyspace

log = logging.getLogger(__name__)

PERMISSION = "sidebar:use"
# The JS-SDK calls the page makes; agentConfig asks the client for these.
JS_API_LIST = ("getContext", "getCurExternalContact", "getCurExternalChat", "sendChatMessage")


async def sidebar_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sidebar's sessions and the app's jsapi_ticket cache, once Redis and WeCom are up."""
    settings = app[SETTINGS]
    client = app.get(WECOM_CLIENT)
    tickets = None
    if client is not None:
        tickets = AgentTicketCache(redis=app[REDIS], client=client, keyring=app[KEYRING])
    app[SIDEBAR] = Sidebar(
        settings=settings.sidebar,
        sessions=session_store(app[REDIS], settings.sidebar, Keyspace("siyu:sidebar")),
        corp_id=settings.wecom.corp_id,
        agent_id=settings.wecom.agent_id,
        client=client,
        tickets=tickets,
        cookie_secure=settings.admin.cookie_secure,
    )
    yield


def _message(request: web.Request, title: str, text: str, *, status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(
        "sidebar/message.html", request, {"title": title, "text": text}, status=status
    )


def _safe_next(raw: str) -> str:
    # Only the sidebar's own pages: the OAuth round trip must not become an open redirect.
    if not raw.startswith(PREFIX) or raw.startswith("//") or "\\" in raw:
        return PREFIX
    return raw


# ------------------------------------------------------------------ OAuth


@public
async def oauth_start(request: web.Request) -> web.StreamResponse:
    """``GET /sidebar/oauth/start``: off to WeCom to learn who the member is."""
    sidebar = request.app[SIDEBAR]
    if sidebar.client is None:
        return _message(request, "侧边栏未启用", "未配置企业微信应用（SIYU_WECOM__APP_SECRET）。")
    state = secrets.token_urlsafe(18)
    target = _safe_next(request.query.get("next", PREFIX))
    redirect_uri = flows.page_origin(request, sidebar) + str(
        request.app.router["sidebar_oauth_callback"].url_for()
    )
    url = authorize_url(
        base_url=sidebar.settings.oauth_base_url,
        corp_id=sidebar.corp_id,
        agent_id=sidebar.agent_id,
        redirect_uri=redirect_uri,
        state=state,
    )
    response = web.Response(status=302, headers={"Location": url})
    response.set_cookie(
        STATE_COOKIE,
        json.dumps({"state": state, "next": target}),
        max_age=600,
        path=PREFIX + "oauth/",
        httponly=True,
        secure=sidebar.cookie_secure,
        samesite="Lax",
    )
    return response


@public
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    """``GET /sidebar/oauth/callback?code&state``: WeCom sent the member back."""
    sidebar = request.app[SIDEBAR]
    if sidebar.client is None:
        return _message(request, "侧边栏未启用", "未配置企业微信应用。")
    try:
        remembered = json.loads(request.cookies.get(STATE_COOKIE, "") or "{}")
    except ValueError:
        remembered = {}
    state = request.query.get("state", "")
    expected = str(remembered.get("state", "")) if isinstance(remembered, dict) else ""
    if not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        return _message(
            request, "请重新打开侧边栏", "登录已过期或来源不明，请关闭后重新打开。", status=400
        )
    code = request.query.get("code", "")
    if not code or len(code) > 512:
        return _message(request, "请重新打开侧边栏", "企业微信未返回登录凭证。", status=400)
    try:
        identity = await oauth_identity(sidebar.client, code)
    except WeComError as exc:
        log.info("sidebar oauth code refused", extra={"errcode": exc.errcode})
        return _message(
            request,
            "请重新打开侧边栏",
            f"企业微信登录凭证无效或已使用（{exc.errcode}）。",
            status=400,
        )
    name = ""
    if identity.userid:
        found = await bot_service.advisors_by_userid(userids=[identity.userid])
        info = found.get(identity.userid)
        name = info.name if info is not None else ""
    try:
        op = await flows.do_sign_in(
            identity=identity,
            source=client_address(request),
            auto_provision=sidebar.settings.auto_provision,
            display_name=name,
        )
    except flows.Refused as refused:
        return _message(request, "无法使用侧边栏", refused.reason, status=403)
    sid, _session = await sidebar.sessions.create(
        operator_id=op.id, epoch=op.session_epoch, stage="full"
    )
    target = _safe_next(str(remembered.get("next", PREFIX)))
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(
        COOKIE,
        sid,
        path="/",
        httponly=True,
        secure=sidebar.cookie_secure,
        samesite="Lax",
    )
    response.del_cookie(STATE_COOKIE, path=PREFIX + "oauth/")
    return response


# ------------------------------------------------------------------ the page


def _caller(request: web.Request) -> Caller:
    return request[CALLER]


@requires(PERMISSION)
async def page(request: web.Request) -> web.StreamResponse:
    """``GET /sidebar/``: the page WeCom's chat toolbar opens."""
    sidebar, caller = request.app[SIDEBAR], _caller(request)
    return aiohttp_jinja2.render_template(
        "sidebar/page.html",
        request,
        {
            "caller": caller,
            "csrf": caller.session.csrf,
            "corp_id": sidebar.corp_id,
            "agent_id": sidebar.agent_id,
            "js_api_list": ",".join(JS_API_LIST),
            "categories_json": json.dumps(CATEGORY_LABELS, ensure_ascii=False),
            "reason_min": flows.REASON_MIN,
            "text_max": flows.TEXT_MAX,
        },
    )


@requires(PERMISSION)
async def signature(request: web.Request) -> web.Response:
    """``POST /sidebar/api/signature`` ``{url}``: agentConfig's signature for that page."""
    sidebar = request.app[SIDEBAR]
    try:
        body = await request.json()
        url = str(body.get("url", "")) if isinstance(body, dict) else ""
        url = flows.check_page_url(url, origin=flows.page_origin(request, sidebar))
        signed = await flows.agent_config(sidebar=sidebar, url=url)
    except ValueError:
        return api_error(400, "body must be JSON {url}", field="url")
    except FieldError as exc:
        return api_error(400, exc.message, field=exc.field)
    except WeComError as exc:
        # 45009 (the hour's ticket fetches spent) or WeCom unreachable: the page can
        # still check text; it cannot read the conversation or send.
        log.warning("sidebar ticket unavailable", extra={"errcode": exc.errcode})
        return api_error(503, "企业微信暂不可用，请稍后重试", code="wecom_unavailable")
    return web.json_response(signed.as_json(), headers={"Cache-Control": "no-store"})


def _script_json(value: object) -> str:
    """JSON safe inside a <script type="application/json"> block (no "</script>" in it)."""
    return (
        json.dumps(value, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _fragment(request: web.Request, template: str, context: dict[str, Any]) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, context)


@requires(PERMISSION)
async def customer(request: web.Request) -> web.Response:
    """``GET /sidebar/customer?external_userid=``: the current customer, as a fragment."""
    caller = _caller(request)
    try:
        view = await flows.customer_context(
            request, caller=caller, external_userid=request.query.get("external_userid", "")
        )
    except FieldError as exc:
        return _fragment(request, "sidebar/unknown.html", {"why": exc.message})
    except NotFound:
        return _fragment(
            request,
            "sidebar/unknown.html",
            {"why": "该客户尚未同步到 siyu，或不是你跟进的客户。发送前检查仍可使用。"},
        )
    return _fragment(
        request,
        "sidebar/customer.html",
        {"c": view, "thread_json": _script_json(view.thread)},
    )


@requires(PERMISSION)
async def group(request: web.Request) -> web.Response:
    """``GET /sidebar/group?chat_id=``: the current customer group, as a fragment."""
    caller = _caller(request)
    try:
        view = await flows.group_context(caller=caller, chat_id=request.query.get("chat_id", ""))
    except FieldError as exc:
        return _fragment(request, "sidebar/unknown.html", {"why": exc.message})
    except NotFound:
        return _fragment(
            request,
            "sidebar/unknown.html",
            {"why": "该客户群尚未同步到 siyu，或你不在群中。发送前检查仍可使用。"},
        )
    return _fragment(
        request,
        "sidebar/group.html",
        {"g": view, "thread_json": _script_json(view.thread)},
    )


@requires(PERMISSION)
async def override(request: web.Request) -> web.Response:
    """``POST /sidebar/override`` ``{text, reason, key, external_userid | chat_id}``."""
    caller = _caller(request)
    try:
        body = await request.json()
    except ValueError:
        return api_error(400, "body must be JSON")
    if not isinstance(body, dict):
        return api_error(400, "body must be a JSON object")
    try:
        done = await flows.do_override(
            caller=caller,
            source=client_address(request),
            text=str(body.get("text") or ""),
            reason=str(body.get("reason") or ""),
            key=str(body.get("key") or ""),
            external_userid=str(body["external_userid"]) if body.get("external_userid") else None,
            chat_id=str(body["chat_id"]) if body.get("chat_id") else None,
            gate=request.app[CHECK_GATE],
            keyring=request.app[KEYRING],
        )
    except FieldError as exc:
        return api_error(422, exc.message, field=exc.field)
    except NotFound:
        return api_error(404, "没有找到该客户或客户群")
    except CheckBusy:
        return api_error(503, "检查繁忙，请稍后重试", code="busy")
    except AnalyzerUnavailable:
        return api_error(503, "合规检查暂不可用，请稍后重试", code="analyzer_unavailable")
    return web.json_response(
        {"case_id": done.case_id, "categories": done.categories, "created": done.created},
        status=201 if done.created else 200,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sidebar/", page, name="sidebar")
    app.router.add_get("/sidebar/oauth/start", oauth_start, name="sidebar_oauth_start")
    app.router.add_get("/sidebar/oauth/callback", oauth_callback, name="sidebar_oauth_callback")
    app.router.add_post("/sidebar/api/signature", signature, name="sidebar_signature")
    app.router.add_get("/sidebar/customer", customer, name="sidebar_customer")
    app.router.add_get("/sidebar/group", group, name="sidebar_group")
    app.router.add_post("/sidebar/override", override, name="sidebar_override")
