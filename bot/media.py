"""WeCom temporary media (``media/upload``): how long an id lives, what WeCom takes, the upload.

A temporary media id lives three days; WeCom refuses it afterwards (40007 invalid
media_id) wherever it is used — an app message, a welcome message, a mass-send
attachment, the chat toolbar.  Content sent later is therefore uploaded close to the
send, and an id kept for reuse is uploaded again once older than ``MEDIA_FRESH_FOR``,
so an id handed on stays valid for at least the 12 hours after.  The reply library
(``admin.snippets``) and the SOP engine (``sop.engine.media``) both keep ids this way.

Upload limits as WeCom documents them (素材管理 · 上传临时素材): every file larger than
5 bytes; image ≤ 10 MB (JPG/PNG), voice ≤ 2 MB (AMR), video ≤ 10 MB (MP4), file ≤ 20 MB.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any, Final, Literal

__all__ = [
    "APPID",
    "IMAGE_TYPES",
    "MAX_BYTES",
    "MEDIA_FRESH_FOR",
    "MEDIA_LIFETIME",
    "MediaKind",
    "image_type",
    "is_fresh",
    "media_problem",
    "upload",
]

log = logging.getLogger(__name__)

MediaKind = Literal["image", "voice", "video", "file"]

MEDIA_LIFETIME: Final = timedelta(days=3)
MEDIA_FRESH_FOR: Final = MEDIA_LIFETIME - timedelta(hours=12)
_MB: Final = 1024 * 1024
MAX_BYTES: Final[dict[str, int]] = {
    "image": 10 * _MB,
    "voice": 2 * _MB,
    "video": 10 * _MB,
    "file": 20 * _MB,
}
_MIN_BYTES: Final = 5
#: The image formats WeCom takes, by their leading bytes.
IMAGE_TYPES: Final[dict[str, bytes]] = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
}
#: A mini-program's AppID (微信小程序 AppID: "wx" and 16 hex digits).
APPID: Final = re.compile(r"^wx[0-9a-f]{16}$")


def is_fresh(uploaded_at: datetime | None, at: datetime) -> bool:
    """An id uploaded at ``uploaded_at`` may still be handed on at ``at``."""
    return uploaded_at is not None and at - uploaded_at < MEDIA_FRESH_FOR


def media_problem(kind: str, content: bytes) -> str | None:
    """Why WeCom would refuse ``content`` as ``kind`` (a sentence), or None."""
    limit = MAX_BYTES.get(kind)
    if limit is None:
        return f"不支持的素材类型 {kind}"
    if len(content) <= _MIN_BYTES:
        return "文件为空或过小（企业微信要求大于 5 字节）"
    if len(content) > limit:
        return (
            f"文件 {len(content) / _MB:.1f} MB，超过企业微信的上限 {limit // _MB} MB"
            f"（{'图片' if kind == 'image' else '文件'}）"
        )
    if kind == "image" and not content.startswith(tuple(IMAGE_TYPES.values())):
        return "图片须为 JPG 或 PNG"
    return None


def image_type(content: bytes) -> str:
    """The content type of a JPG/PNG by its leading bytes (PNG when unsure)."""
    for ctype, magic in IMAGE_TYPES.items():
        if content.startswith(magic):
            return ctype
    return "image/png"


async def upload(
    client: Any, kind: MediaKind, *, filename: str, content: bytes, content_type: str
) -> str:
    """``media/upload`` through the WeCom client; the new media id (valid three days).

    Raises what the client raises (``bot.wecom.client.WeComError``): the caller decides
    whether a failed upload withholds one item or the whole answer.
    """
    answer = await client.upload_media(
        kind, filename=filename, content=content, content_type=content_type
    )
    media_id = str(answer["media_id"])
    log.info("media uploaded", extra={"media_type": kind, "bytes": len(content)})
    return media_id
