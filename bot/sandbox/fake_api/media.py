"""Temporary media (素材管理 · 上传临时素材): ``media/upload``, and ids that expire.

WeCom keeps an uploaded temporary media file three days; its ``media_id`` is refused
after that (40007 invalid media_id) wherever it is used — an app message, a welcome
message, a mass-send attachment, a chat-toolbar ``sendChatMessage``. So content sent
later is uploaded again close to send time, and the sandbox enforces the lifetime:
``check_media`` (for the areas that take a media id) and the ``GET /sandbox/media/{id}``
lever (for a test's stand-in of the WeCom client) both refuse an id older than
``MEDIA_TTL_S`` by the sandbox's clock.

Upload rules as WeCom documents them: multipart field ``media`` with a filename; every
file larger than 5 bytes; image ≤ 10 MB (JPG/PNG), voice ≤ 2 MB (AMR), video ≤ 10 MB
(MP4), file ≤ 20 MB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError

if TYPE_CHECKING:
    from bot.sandbox.fake_api.state import SandboxState

__all__ = [
    "ERRMSGS",
    "MAX_ATTACHMENTS",
    "MAX_UPLOAD_BYTES",
    "MEDIA_TTL_S",
    "ROUTES",
    "MediaRecord",
    "add_controls",
    "check_attachments",
    "check_media",
]

MEDIA_TTL_S: Final = 3 * 24 * 3600
_MIN_BYTES: Final = 5
_MB: Final = 1024 * 1024
#: The largest upload WeCom takes (a file), plus room for the multipart framing.
MAX_UPLOAD_BYTES: Final = 20 * _MB + 64 * 1024
# type -> (size limit, the errcode past it, accepted leading bytes or None for any)
_TYPES: Final[dict[str, tuple[int, int, tuple[bytes, ...] | None]]] = {
    "image": (10 * _MB, 40009, (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")),
    "voice": (2 * _MB, 40010, (b"#!AMR",)),
    "video": (10 * _MB, 40011, None),
    "file": (20 * _MB, 40006, None),
}

#: errmsg of the codes this area answers (merged into the server's table).
ERRMSGS: Final[dict[int, str]] = {
    40004: "invalid media type",
    40005: "invalid file type",
    40006: "invalid file size",
    40007: "invalid media_id",
    40009: "invalid image size",
    40010: "invalid voice size",
    40011: "invalid video size",
    41005: "media data missing",
    44001: "empty media data",
}


@dataclass(frozen=True)
class MediaRecord:
    media_id: str
    type: str
    filename: str
    size: int
    sha256: str
    uploaded_at: float

    def expired(self, now: float) -> bool:
        return now - self.uploaded_at >= MEDIA_TTL_S


async def read_upload(request: web.Request) -> dict[str, Any]:
    """The multipart body as the handler's ``Call.body``: ``{"media": (filename, bytes)}``."""
    found: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if getattr(part, "name", None) == "media" and hasattr(part, "read"):
            content = await part.read(decode=False)
            found["media"] = (getattr(part, "filename", None) or "", bytes(content))
    return found


def _upload(state: SandboxState, call: Call) -> dict[str, Any]:
    kind = call.query.get("type", "")
    if kind not in _TYPES:
        raise WeComApiError(40004)
    media = call.body.get("media")
    if not isinstance(media, tuple):
        raise WeComApiError(41005)
    filename, content = media
    if not content:
        raise WeComApiError(44001)
    limit, too_big, magics = _TYPES[kind]
    if len(content) <= _MIN_BYTES:
        raise WeComApiError(40006)
    if len(content) > limit:
        raise WeComApiError(too_big)
    if magics is not None and not content.startswith(magics):
        raise WeComApiError(40005)
    now = state.clock()
    record = MediaRecord(
        media_id=state.new_id("3", 60),
        type=kind,
        filename=filename,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        uploaded_at=now,
    )
    state.media[record.media_id] = record
    return {"type": kind, "media_id": record.media_id, "created_at": str(int(now))}


def check_media(state: SandboxState, media_id: str, *, kind: str | None = None) -> MediaRecord:
    """The record behind a media id still alive (and of ``kind``), else 40007."""
    record: MediaRecord | None = state.media.get(media_id)
    if record is None or record.expired(state.clock()) or (kind and record.type != kind):
        raise WeComApiError(40007)
    return record


#: ``add_msg_template`` and ``send_welcome_msg`` take at most 9 attachments.
MAX_ATTACHMENTS: Final = 9


def check_attachments(state: SandboxState, attachments: Any) -> None:
    """The ``attachments`` of a mass send or a welcome message, as WeCom checks them.

    At most nine; each of a known ``msgtype`` with its body; a link with title and url;
    a mini-program with title, appid, page and a cover (``pic_media_id``); every media
    id uploaded, not expired and of the right type (40007 otherwise).
    """
    if not isinstance(attachments, list):
        raise WeComApiError(40058, "attachments must be a list")
    if len(attachments) > MAX_ATTACHMENTS:
        raise WeComApiError(40058, f"attachments: at most {MAX_ATTACHMENTS}")
    for item in attachments:
        msgtype = item.get("msgtype") if isinstance(item, dict) else None
        body = item.get(msgtype) if isinstance(item, dict) and isinstance(msgtype, str) else None
        if not isinstance(body, dict):
            raise WeComApiError(40058, "attachments: msgtype and its body")
        if msgtype == "image":
            if body.get("media_id"):
                check_media(state, str(body["media_id"]), kind="image")
            elif not body.get("pic_url"):
                raise WeComApiError(40058, "image: media_id or pic_url")
        elif msgtype in ("video", "file"):
            check_media(state, str(body.get("media_id") or ""), kind=msgtype)
        elif msgtype == "link":
            if not body.get("title") or not body.get("url"):
                raise WeComApiError(40058, "link: title and url")
        elif msgtype == "miniprogram":
            if not all(body.get(k) for k in ("title", "appid", "page")):
                raise WeComApiError(40058, "miniprogram: title, appid and page")
            check_media(state, str(body.get("pic_media_id") or ""), kind="image")
        else:
            raise WeComApiError(40058, f"attachments: unknown msgtype {msgtype}")


ROUTES: Final[dict[str, Handler]] = {"media/upload": _upload}


async def _control_media(request: web.Request) -> web.Response:
    from bot.sandbox.fake_api.state import STATE_KEY

    state = request.app[STATE_KEY]
    try:
        record = check_media(state, request.match_info["media_id"])
    except WeComApiError as exc:
        return web.json_response({"errcode": exc.errcode, "valid": False})
    return web.json_response(
        {
            "errcode": 0,
            "valid": True,
            "type": record.type,
            "size": record.size,
            "sha256": record.sha256,
            "expires_at": int(record.uploaded_at + MEDIA_TTL_S),
        }
    )


def add_controls(app: web.Application) -> None:
    """``GET /sandbox/media/{media_id}``: is this id still usable (what the client checks)."""
    app.router.add_get("/sandbox/media/{media_id}", _control_media)
