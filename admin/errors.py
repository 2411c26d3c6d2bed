"""One error shape for the API, one error page for the console.

API: ``{"error": {"code", "message", "field"}}`` with the HTTP status — 400/422 name
the field at fault, 403 never says whether the thing asked for exists.
Console: a zh-CN page with the status, rendered inside the shell when signed in.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin.render import render

_API_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

_PAGE_TEXT = {
    400: ("请求有误", "提交的内容无法处理，请检查后重试。"),
    401: ("请先登录", "登录已失效，请重新登录。"),
    403: ("无权访问", "你的账号没有访问此页面或执行此操作的权限。如需开通，请联系管理员。"),
    404: ("页面不存在", "你访问的页面不存在，或已被移除。"),
    405: ("请求方式不支持", "此页面不支持这种请求方式。"),
    413: ("内容过大", "提交的内容超过了允许的大小。"),
    422: ("内容未通过校验", "请根据提示修改后重试。"),
    500: ("系统出错", "服务器处理请求时出错，已记录。请稍后重试。"),
}


def see_other(location: str) -> web.Response:
    """303 to ``location``: after a form post, the browser GETs the next page."""
    return web.Response(status=303, headers={"Location": location})


def api_error(
    status: int, message: str, *, code: str = "", field: str | None = None
) -> web.Response:
    return web.json_response(
        {
            "error": {
                "code": code or _API_CODES.get(status, "error"),
                "message": message,
                "field": field,
            }
        },
        status=status,
        headers={"Cache-Control": "no-store"},
    )


def error_page(request: web.Request, status: int, *, detail: str = "") -> web.Response:
    title, text = _PAGE_TEXT.get(status, ("出错了", "请求未能完成。"))
    context: dict[str, Any] = {"status": status, "title": title, "text": detail or text}
    return render("error.html", request, context, status=status)
