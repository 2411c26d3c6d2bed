"""What every area module shares: the handler signature, the error, parameter checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.sandbox.fake_api.records import IssuedToken

if TYPE_CHECKING:
    from bot.sandbox.fake_api.state import SandboxState

__all__ = [
    "Call",
    "Handler",
    "WeComApiError",
    "answer",
    "api_name",
    "parse_page",
    "required",
    "str_list",
]


class WeComApiError(Exception):
    """Raised by a handler to answer ``{"errcode": ..., "errmsg": ...}``."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail


def api_name(path: str) -> str:
    return path.strip("/").removeprefix("cgi-bin/")


def answer(payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, dumps=lambda o: json.dumps(o, ensure_ascii=False))


@dataclass(frozen=True)
class Call:
    """One API request as the handlers see it."""

    query: Mapping[str, str]
    body: dict[str, Any]
    token: IssuedToken | None


Handler = Callable[["SandboxState", Call], dict[str, Any]]


def required(value: Any) -> Any:
    if value in (None, "", [], {}):
        raise WeComApiError(40058, "missing parameter")
    return value


def str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WeComApiError(40058, "expected a list of strings")
    return value


def parse_page(call: Call, *, default_limit: int, max_limit: int) -> tuple[int, int]:
    try:
        offset = int(call.body.get("cursor") or 0)
        limit = int(call.body.get("limit") or default_limit)
    except (TypeError, ValueError):
        raise WeComApiError(40058, "bad cursor or limit") from None
    if not 0 < limit <= max_limit or offset < 0:
        raise WeComApiError(40058, "limit out of range")
    return offset, limit
