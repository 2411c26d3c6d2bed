"""Identity for H5 pages opened inside WeCom: the OAuth redirect, ``auth/getuserinfo`` and
the app's jsapi_ticket (``ticket/get?type=agent_config``).

What WeCom does, and so what this stand-in does:

* ``open.weixin.qq.com/connect/oauth2/authorize?appid=CORPID&redirect_uri=…&response_type=code
  &scope=snsapi_base&state=…&agentid=…#wechat_redirect`` — inside the WeCom client the
  signed-in member is sent straight back to ``redirect_uri`` with ``code`` and ``state``
  (snsapi_base asks nothing).  A redirect host the app does not trust gets WeCom's error
  page (50001, 「redirect_url未登记可信域名」); a wrong ``appid`` 40013.  Here
  ``SandboxState.oauth_member`` says who is signed in; unset, the page asks which member
  (the demo's way of being someone).
* ``auth/getuserinfo?code=`` — the code is good once and for 5 minutes: a second use, an
  old code or an unknown one answer 40029 (「不合法的oauth_code」); none at all 41008.
  A member comes back as ``userid`` (older WeCom: ``UserId``, with ``DeviceId``); someone
  outside the corp as ``openid`` (and no userid).
* ``ticket/get?type=agent_config`` — called with the app's own access_token; the ticket
  lives ``expires_in`` = 7,200 s; each app may fetch at most 100 an hour and WeCom
  answers 45009 past that, so callers must cache it.

Levers: ``POST /sandbox/oauth/member`` ``{"userid": … | null}``, ``POST
/sandbox/oauth/legacy`` ``{"legacy": bool}``, ``GET /sandbox/jsapi_tickets`` (what a
WeCom client would verify an ``agentConfig`` signature against).
"""

from __future__ import annotations

import html
from collections import deque
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, answer
from bot.sandbox.fake_api.records import IssuedTicket
from bot.sandbox.fake_api.state import STATE_KEY, SandboxState

__all__ = ["AUTHORIZE_PATH", "ROUTES", "add_routes"]

#: The authorize page's path on open.weixin.qq.com (its stand-in serves the same path).
AUTHORIZE_PATH: Final = "/connect/oauth2/authorize"

_HOUR: Final = 3600.0


def _ticket_get(state: SandboxState, call: Call) -> dict[str, Any]:
    if call.query.get("type") != "agent_config":
        # type=agent_config is the app's ticket; the corp's is get_jsapi_ticket.
        raise WeComApiError(40058, "type must be agent_config")
    if call.token is None or call.token.kind != "app":
        # Only the app's own token: the ticket signs agentConfig for *that* app.
        raise WeComApiError(48002)
    now = state.clock()
    fetches = state._ticket_fetches.setdefault(state.agent_id, deque())
    while fetches and fetches[0] <= now - _HOUR:
        fetches.popleft()
    if len(fetches) >= state.agent_ticket_hour_limit:
        raise WeComApiError(45009)
    fetches.append(now)
    issued = IssuedTicket(state.new_id("", 86), state.agent_id, now, state.jsapi_ticket_expires_in)
    state.jsapi_tickets[issued.ticket] = issued
    return {"ticket": issued.ticket, "expires_in": issued.expires_in}


def _getuserinfo(state: SandboxState, call: Call) -> dict[str, Any]:
    code = call.query.get("code", "")
    if not code:
        raise WeComApiError(41008)
    if call.token is None or call.token.kind != "app":
        raise WeComApiError(48002)
    found = state.oauth_codes.get(code)
    now = state.clock()
    if (
        found is None
        or found.used_at is not None
        or now - found.issued_at > state.oauth_code_ttl_s
        or found.agent_id != state.agent_id
    ):
        raise WeComApiError(40029)
    found.used_at = now
    if not found.userid:
        return {"openid": "o" + state.new_id("", 27)}
    if state.oauth_legacy_casing:
        return {"UserId": found.userid, "DeviceId": state.new_id("", 16)}
    return {"userid": found.userid}


ROUTES: Final[dict[str, Handler]] = {
    "ticket/get": _ticket_get,
    "auth/getuserinfo": _getuserinfo,
}


# ------------------------------------------------------------------ the authorize page


def _with_code(redirect_uri: str, code: str, state_param: str) -> str:
    parts = urlsplit(redirect_uri)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("code", code)]
    query.append(("state", state_param))
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def _error_page(errcode: int, text: str) -> web.Response:
    body = (
        '<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>企业微信</title>'
        f"<p>{html.escape(text)}</p><p>errcode: {errcode}</p></html>"
    )
    return web.Response(text=body, content_type="text/html", status=200)


async def _authorize(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    q = request.query
    redirect_uri = q.get("redirect_uri", "")
    if q.get("appid") != state.corp_id:
        return _error_page(40013, "参数错误：appid 不是本企业的 CorpID")
    if q.get("response_type") != "code" or q.get("scope") not in (
        "snsapi_base",
        "snsapi_privateinfo",
    ):
        return _error_page(40058, "参数错误")
    target = urlsplit(redirect_uri)
    if target.scheme not in ("http", "https") or not target.hostname:
        return _error_page(40058, "参数错误：redirect_uri")
    if state.oauth_trusted_hosts and target.hostname not in state.oauth_trusted_hosts:
        return _error_page(50001, "redirect_url未登记可信域名")
    if str(q.get("agentid", state.agent_id)) != str(state.agent_id):
        return _error_page(40056, "参数错误：agentid")
    chosen = q.get("as_member")
    userid = chosen if chosen is not None else state.oauth_member
    if userid is not None:
        if userid and userid not in state.members:
            return _error_page(60111, "成员不存在")
        code = state.issue_oauth_code(userid)
        raise web.HTTPFound(_with_code(redirect_uri, code, q.get("state", "")))
    # No member signed in to this simulated client: ask who (the demo's way in).
    links = []
    for member in state.members.values():
        params = urlencode([*q.items(), ("as_member", member.userid)])
        links.append(
            f'<li><a href="{AUTHORIZE_PATH}?{html.escape(params)}">'
            f"{html.escape(member.name)}（{html.escape(member.userid)}）</a></li>"
        )
    body = (
        '<!doctype html><html lang="zh-CN"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<title>企业微信授权（沙箱）</title><h1>以哪位成员身份打开？</h1>"
        f"<ul>{''.join(links)}</ul></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def _control_member(request: web.Request) -> web.Response:
    data = await request.json()
    userid = data.get("userid")
    request.app[STATE_KEY].oauth_member = None if userid is None else str(userid)
    return web.json_response({"ok": True})


async def _control_legacy(request: web.Request) -> web.Response:
    data = await request.json()
    request.app[STATE_KEY].oauth_legacy_casing = bool(data.get("legacy"))
    return web.json_response({"ok": True})


async def _control_tickets(request: web.Request) -> web.Response:
    tickets = request.app[STATE_KEY].valid_jsapi_tickets()
    return answer({"tickets": [{"ticket": t.ticket, "agent_id": t.agent_id} for t in tickets]})


def add_routes(app: web.Application) -> None:
    app.router.add_get(AUTHORIZE_PATH, _authorize)
    app.router.add_post("/sandbox/oauth/member", _control_member)
    app.router.add_post("/sandbox/oauth/legacy", _control_legacy)
    app.router.add_get("/sandbox/jsapi_tickets", _control_tickets)
