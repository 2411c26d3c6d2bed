"""The fake WeCom API's aiohttp app: ``/cgi-bin/{api}`` dispatch and the ``/sandbox/...`` levers.

The common plumbing lives here: ``gettoken``, the access_token check (41001, 40014,
42001), JSON body parsing (47001), the per-API frequency limit and injected faults
(``SandboxState``'s bookkeeping), and WeCom's errcode answers.  The area modules
(``contacts``, ``tags``, ``messages``, ``mass_send``, ``group_chats``) bring their routes.
"""

from __future__ import annotations

import json
import secrets as pysecrets
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from bot.sandbox.fake_api import (
    contacts,
    group_chats,
    groupmsg,
    mass_send,
    media,
    messages,
    oauth,
    tags,
)
from bot.sandbox.fake_api.base import Call, Handler, WeComApiError, answer, api_name
from bot.sandbox.fake_api.records import IssuedToken
from bot.sandbox.fake_api.state import STATE_KEY, SandboxState

__all__ = ["ERRMSGS", "ROUTES", "build_fake_wecom_app", "start_fake_wecom"]

#: WeCom's errmsg for each errcode the sandbox answers (全局错误码).
ERRMSGS: Final[dict[int, str]] = {
    -1: "system busy",
    40001: "invalid credential",
    40003: "invalid userid",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40029: "invalid code",
    40050: "chatid not found",
    40056: "invalid agentid",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "UserTag Name Already Exist",
    40096: "invalid external userid",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41008: "missing code",
    41051: "externaluser has started chatting",
    41096: "welcome msg is being distributed",
    42001: "access_token expired",
    42009: "access_token expired",
    44004: "empty content",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    48002: "api forbidden",
    60020: "not allow to access from your ip",
    60111: "userid not found",
    60123: "invalid party id",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
    **media.ERRMSGS,
}


def _gettoken(state: SandboxState, call: Call) -> dict[str, Any]:
    corpid = call.query.get("corpid", "")
    corpsecret = call.query.get("corpsecret", "")
    if not corpid:
        raise WeComApiError(41002)
    if not corpsecret:
        raise WeComApiError(41004)
    if corpid != state.corp_id:
        raise WeComApiError(40013)
    kind = next((k for k, v in state.secrets.items() if v and v == corpsecret), None)
    if kind is None:
        raise WeComApiError(40001)
    issued = state._issue_token(kind)
    remaining = int(issued.issued_at + issued.expires_in - state.clock())
    return {"access_token": issued.token, "expires_in": max(remaining, 1)}


ROUTES: Final[dict[str, Handler]] = {
    "gettoken": _gettoken,
    **contacts.ROUTES,
    **messages.ROUTES,
    **tags.ROUTES,
    **mass_send.ROUTES,
    **groupmsg.ROUTES,
    **group_chats.ROUTES,
    **oauth.ROUTES,
    **media.ROUTES,
}


def _error_body(errcode: int, request: web.Request) -> dict[str, Any]:
    # WeCom appends a hint, the caller's IP and a link to its error-code lookup.
    hint = f"{int(time.time())}_{pysecrets.randbelow(100)}_{pysecrets.token_hex(16)}"
    errmsg = (
        f"{ERRMSGS.get(errcode, 'unknown error')}, hint: [{hint}], "
        f"from ip: {request.remote or '127.0.0.1'}, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )
    return {"errcode": errcode, "errmsg": errmsg}


def _check_token(state: SandboxState, query: Mapping[str, str]) -> IssuedToken:
    token = query.get("access_token")
    if not token:
        raise WeComApiError(41001)
    issued = state.tokens.get(token)
    if issued is None or issued.invalidated:
        raise WeComApiError(40014)
    if issued.expired(state.clock()):
        raise WeComApiError(42001)
    return issued


async def _api(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    api = api_name(request.match_info["api"])
    handler = ROUTES.get(api)
    if handler is None:
        raise web.HTTPNotFound()
    state.calls[api] += 1
    if state.outage_status is not None:
        return web.Response(status=state.outage_status, text="upstream unavailable")
    try:
        body: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            body = await media.read_upload(request)  # media/upload: a file, not JSON
        elif request.can_read_body:
            try:
                parsed = json.loads(await request.read() or b"{}")
            except ValueError:
                raise WeComApiError(47001) from None
            if not isinstance(parsed, dict):
                raise WeComApiError(47001)
            body = parsed
        token = None if api == "gettoken" else _check_token(state, request.query)
        state._check_rate(api)
        fault = state._take_fault(api)
        if fault is not None:
            raise WeComApiError(fault)
        result = handler(state, Call(request.query, body, token))
    except WeComApiError as exc:
        return answer(_error_body(exc.errcode, request))
    return answer({"errcode": 0, "errmsg": "ok", **result})


async def _control_inject(request: web.Request) -> web.Response:
    data = await request.json()
    request.app[STATE_KEY].inject(str(data["api"]), int(data["errcode"]), int(data.get("times", 1)))
    return web.json_response({"ok": True})


async def _control_outage(request: web.Request) -> web.Response:
    data = await request.json()
    status = data.get("status")
    request.app[STATE_KEY].outage_status = None if status is None else int(status)
    return web.json_response({"ok": True})


async def _control_expire(request: web.Request) -> web.Response:
    request.app[STATE_KEY].expire_tokens()
    return web.json_response({"ok": True})


async def _control_invalidate(request: web.Request) -> web.Response:
    request.app[STATE_KEY].invalidate_tokens()
    return web.json_response({"ok": True})


async def _control_calls(request: web.Request) -> web.Response:
    return web.json_response({"calls": dict(request.app[STATE_KEY].calls)})


def build_fake_wecom_app(state: SandboxState) -> web.Application:
    """The fake WeCom API as an aiohttp app: ``/cgi-bin/...`` plus ``/sandbox/...`` levers."""
    # Uploads reach 20 MB (media/upload, type file), past aiohttp's 1 MB default.
    app = web.Application(client_max_size=media.MAX_UPLOAD_BYTES)
    app[STATE_KEY] = state
    app.router.add_route("*", "/cgi-bin/{api:.+}", _api)
    app.router.add_post("/sandbox/inject", _control_inject)
    app.router.add_post("/sandbox/outage", _control_outage)
    app.router.add_post("/sandbox/tokens/expire", _control_expire)
    app.router.add_post("/sandbox/tokens/invalidate", _control_invalidate)
    app.router.add_get("/sandbox/calls", _control_calls)
    messages.add_controls(app)
    media.add_controls(app)
    mass_send.add_controls(app)
    oauth.add_routes(app)
    return app


async def start_fake_wecom(
    state: SandboxState, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the fake API; returns the runner (``await runner.cleanup()``) and base URL.

    The access log is off: its request lines would carry ``corpsecret`` and
    ``access_token`` query parameters.
    """
    runner = web.AppRunner(build_fake_wecom_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"
