"""A step's image, file and mini-program cover: fetched from their address and uploaded
through ``media/upload`` right before the send.

WeCom takes media in a mass send, a welcome message or an app message by a temporary
media id, which lives three days (``bot.media``).  A campaign runs for weeks, so the
step keeps the file's address (``content.media.url``, ``miniprogram.pic_url``) and the
outbox row is queued with a stand-in where the id goes::

    {"msgtype": "image", "image": {"media_id": {"upload": {"type": "image", "url": …}}}}

The before-send check (``Engine.before_send``) replaces every stand-in with an id that
is alive — the one kept in Redis for that file, or a fresh upload — and hands the
dispatcher the body to send (``bot.outbox.SendAs``).  Ids are kept in Redis, shared by
every process, until ``bot.media.MEDIA_FRESH_FOR`` after their upload (12 hours before
WeCom forgets them), then uploaded again.  The clock is ours, not Redis's expiry, so a
test that walks days with time-machine sees the re-upload.

A file WeCom would refuse (too large, not a JPG/PNG for an image) is refused when the
campaign is saved (``probe``) and again at the send (:class:`MediaInvalid`: the touch
is skipped as ``media_invalid``); a download that fails for a while (timeout, 5xx)
raises :class:`MediaUnavailable`, and the outbox retries the row with back-off.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import unquote, urlparse

import aiohttp

from bot import media as bot_media
from bot.wecom.client import WeComError
from core.redis import Keyspace
from sop.engine.specs import render

log = logging.getLogger(__name__)

__all__ = [
    "MediaCache",
    "MediaInvalid",
    "MediaRef",
    "MediaUnavailable",
    "attachments",
    "has_uploads",
    "probe",
    "refs_of",
]

#: WeCom's upload errcodes that say the file itself is wrong (type, size, format).
_BAD_FILE: Final = frozenset({40004, 40005, 40006, 40009, 40011, 44001})
_FETCH_TIMEOUT: Final = aiohttp.ClientTimeout(total=60, sock_connect=10)


class MediaInvalid(ValueError):
    """WeCom would refuse this file (too large, wrong format), or its address is gone."""


class MediaUnavailable(RuntimeError):
    """The file could not be fetched or uploaded just now: try again later."""


@dataclass(frozen=True)
class MediaRef:
    """A file a step sends: where to fetch it and what WeCom takes it as."""

    type: Literal["image", "file"]
    url: str
    name: str = ""

    @property
    def filename(self) -> str:
        if self.name:
            return self.name
        tail = PurePosixPath(unquote(urlparse(self.url).path)).name
        return tail or ("image.png" if self.type == "image" else "file")

    def stand_in(self) -> dict[str, Any]:
        return {"upload": {"type": self.type, "url": self.url, "name": self.name}}


def refs_of(content: Mapping[str, Any]) -> list[MediaRef]:
    """The files a step's content uploads when sent (an image, a file, a cover)."""
    kind = content.get("kind")
    media = content.get("media")
    if kind in ("image", "file") and isinstance(media, Mapping) and media.get("url"):
        return [MediaRef(kind, str(media["url"]), str(media.get("name") or ""))]
    mini = content.get("miniprogram")
    if kind == "miniprogram" and isinstance(mini, Mapping) and mini.get("pic_url"):
        return [MediaRef("image", str(mini["pic_url"]))]
    return []


def attachments(content: Mapping[str, Any], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """``add_msg_template`` / ``send_welcome_msg`` attachments of a step, for one customer.

    Texts the customer reads (a link's title and description, a mini-program's title)
    are filled like the message; media ids are stand-ins until the send.
    """
    kind = content.get("kind")
    link = content.get("link")
    if kind == "link" and isinstance(link, Mapping):
        return [
            {
                "msgtype": "link",
                "link": {
                    "title": render(str(link.get("title") or ""), values),
                    "picurl": str(link.get("picurl") or ""),
                    "desc": render(str(link.get("desc") or ""), values),
                    "url": str(link.get("url") or ""),
                },
            }
        ]
    refs = refs_of(content)
    if kind in ("image", "file") and refs:
        return [{"msgtype": kind, kind: {"media_id": refs[0].stand_in()}}]
    mini = content.get("miniprogram")
    if kind == "miniprogram" and isinstance(mini, Mapping) and refs:
        return [
            {
                "msgtype": "miniprogram",
                "miniprogram": {
                    "title": render(str(mini.get("title") or ""), values),
                    "pic_media_id": refs[0].stand_in(),
                    "appid": str(mini.get("appid") or ""),
                    "page": str(mini.get("page") or ""),
                },
            }
        ]
    return []


def _stand_ins(node: Any) -> list[tuple[Any, Any, MediaRef]]:
    """(container, key, ref) of every stand-in in a payload."""
    found: list[tuple[Any, Any, MediaRef]] = []
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, dict) and set(value) == {"upload"}:
            up = value["upload"]
            found.append(
                (node, key, MediaRef(up["type"], str(up["url"]), str(up.get("name") or "")))
            )
        elif isinstance(value, dict | list):
            found += _stand_ins(value)
    return found


def has_uploads(payload: Mapping[str, Any]) -> bool:
    return bool(_stand_ins(dict(payload)))


def _too_large(kind: str, size: int) -> str:
    limit = bot_media.MAX_BYTES[kind]
    what = "图片" if kind == "image" else "文件"
    return f"{what} {size / 2**20:.1f} MB，超过企业微信的上限 {limit // 2**20} MB"


async def _fetch(session: aiohttp.ClientSession, ref: MediaRef) -> tuple[bytes, str]:
    """The file's bytes and content type, read no further than WeCom's limit."""
    limit = bot_media.MAX_BYTES[ref.type]
    try:
        async with session.get(ref.url, timeout=_FETCH_TIMEOUT) as resp:
            if resp.status >= 500:
                raise MediaUnavailable(f"HTTP {resp.status}")
            if resp.status != 200:
                raise MediaInvalid(f"素材地址无法下载（HTTP {resp.status}）")
            declared = resp.content_length
            if declared is not None and declared > limit:
                raise MediaInvalid(_too_large(ref.type, declared))
            content = await resp.content.read(limit + 1)
            ctype = resp.content_type or "application/octet-stream"
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MediaUnavailable(type(exc).__name__) from None
    if (problem := bot_media.media_problem(ref.type, content)) is not None:
        raise MediaInvalid(problem)
    if ref.type == "image":
        ctype = bot_media.image_type(content)
    return content, ctype


async def probe(ref: MediaRef, *, session: aiohttp.ClientSession | None = None) -> str | None:
    """Why this file cannot be sent (a sentence for the builder), or None — at save time."""
    own = session is None
    s = session or aiohttp.ClientSession()
    try:
        await _fetch(s, ref)
    except MediaInvalid as exc:
        return str(exc)
    except MediaUnavailable as exc:
        return f"素材地址暂时无法下载（{exc}），请确认地址可访问"
    finally:
        if own:
            await s.close()
    return None


class MediaCache:
    """Temporary media ids of the files steps send, kept in Redis across processes.

    ``client_of`` gives the WeCom client when one is configured (None: nothing can be
    uploaded, and a send that needs media waits, retried by the outbox).
    """

    def __init__(
        self,
        redis: Any,
        *,
        client_of: Callable[[], Any],
        keys: Keyspace | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.redis = redis
        self.client_of = client_of
        self.keys = keys or Keyspace()
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _key(self, ref: MediaRef) -> str:
        digest = hashlib.sha256(f"{ref.type}\n{ref.url}".encode()).hexdigest()[:32]
        return self.keys.key("sop", "media", digest)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def media_id(self, ref: MediaRef) -> str:
        """An id WeCom still takes for the next 12 hours: the kept one, or a new upload."""
        at = self.clock()
        key = self._key(ref)
        raw = await self.redis.get(key)
        if raw:
            kept = json.loads(raw)
            if bot_media.is_fresh(datetime.fromisoformat(kept["uploaded_at"]), at):
                return str(kept["media_id"])
        client = self.client_of()
        if client is None:
            raise MediaUnavailable("no WeCom client")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        content, ctype = await _fetch(self._session, ref)
        try:
            media_id = await bot_media.upload(
                client, ref.type, filename=ref.filename, content=content, content_type=ctype
            )
        except WeComError as exc:
            if exc.errcode in _BAD_FILE:
                raise MediaInvalid(f"企业微信拒收素材（errcode {exc.errcode}）") from None
            raise MediaUnavailable(f"media/upload errcode {exc.errcode}") from None
        await self.redis.set(
            key,
            json.dumps({"media_id": media_id, "uploaded_at": at.isoformat()}),
            ex=int(bot_media.MEDIA_LIFETIME.total_seconds()),
        )
        log.info("sop media uploaded", extra={"media_type": ref.type, "bytes": len(content)})
        return media_id

    async def resolve(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload`` with every stand-in replaced by a live media id."""
        body = copy.deepcopy(dict(payload))
        for container, key, ref in _stand_ins(body):
            container[key] = await self.media_id(ref)
        return body
