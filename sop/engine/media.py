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

Fetching an address marketing typed is a request from inside the institution's network,
so it is fenced (:class:`MediaPolicy`, ``SIYU_SOP__MEDIA_HOSTS``): only the listed hosts
are fetched (refused at save, :func:`source_problem`, and again at each fetch and each
redirect); a host matched by a suffix entry (``.cdn.bank.example``) must resolve to
public addresses — private, loopback, link-local (cloud metadata), shared and reserved
ones are refused when the connection is made, so a name that changes its answer between
the check and the connection gains nothing — while a host listed by its exact name is
the administrator's own and may be internal.  The body is read in chunks and dropped
past WeCom's limit, and the whole fetch has a timeout.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import unquote, urlparse

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bot import media as bot_media
from bot.wecom.client import WeComError
from core.redis import Keyspace
from sop.engine.specs import render

log = logging.getLogger(__name__)

__all__ = [
    "MediaCache",
    "MediaInvalid",
    "MediaPolicy",
    "MediaRef",
    "MediaRefused",
    "MediaUnavailable",
    "attachments",
    "has_uploads",
    "configure",
    "policy",
    "probe",
    "refs_of",
    "source_problem",
]

#: WeCom's upload errcodes that say the file itself is wrong (type, size, format).
_BAD_FILE: Final = frozenset({40004, 40005, 40006, 40009, 40011, 44001})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 64 * 1024


class MediaInvalid(ValueError):
    """WeCom would refuse this file (too large, wrong format), or its address is gone."""


class MediaUnavailable(RuntimeError):
    """The file could not be fetched or uploaded just now: try again later."""


class MediaRefused(MediaInvalid):
    """The address is not an allowed media source (host not listed, an internal
    address, a redirect elsewhere): never fetched."""


@dataclass(frozen=True)
class MediaPolicy:
    """Where step media may be fetched from (``SIYU_SOP__MEDIA_HOSTS`` and its timeout).

    ``hosts``: ``files.bank.example`` allows that host alone (and it may resolve to an
    internal address: the administrator named it); ``.bank.example`` allows it and every
    name under it, as long as they resolve to public addresses.  Empty: no address is
    fetched.  An IP address is allowed by its exact entry only.
    """

    hosts: tuple[str, ...] = ()
    timeout_s: float = 30.0
    max_redirects: int = 3

    @staticmethod
    def _norm(host: str) -> str:
        return host.strip().lower().rstrip(".").strip("[]")

    def trusted(self, host: str) -> bool:
        """Listed by its exact name: may be internal."""
        h = self._norm(host)
        return any(self._norm(e) == h for e in self.hosts if not e.startswith("."))

    def allows(self, host: str) -> bool:
        h = self._norm(host)
        if not h:
            return False
        if self.trusted(h):
            return True
        if _ip(h) is not None:
            return False
        for entry in self.hosts:
            e = self._norm(entry).lstrip(".")
            if entry.strip().startswith(".") and e and (h == e or h.endswith("." + e)):
                return True
        return False


_policy: list[MediaPolicy] = [MediaPolicy()]


def configure(value: MediaPolicy) -> None:
    """The process's media policy (set from settings by the engine's context)."""
    _policy[0] = value


def policy() -> MediaPolicy:
    return _policy[0]


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def internal_address(address: str) -> bool:
    """Private, loopback, link-local (169.254.169.254: cloud metadata), shared
    (100.64/10: some clouds' metadata), multicast, reserved or unspecified — anything
    not on the public internet.  An IPv4 address mapped into IPv6 is judged as IPv4."""
    ip = _ip(address)
    if ip is None:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def source_problem(url: str, value: MediaPolicy | None = None) -> str | None:
    """Why this address may not be fetched (a sentence for the builder), or None."""
    rule = value or policy()
    try:
        parsed = URL(url)
    except ValueError:
        return "素材地址无效"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "素材地址须以 http:// 或 https:// 开头"
    if parsed.user or parsed.password:
        return "素材地址不能包含用户名或密码"
    host = MediaPolicy._norm(parsed.host)
    if not rule.allows(host):
        if not rule.hosts:
            return (
                "未配置允许的素材来源：请管理员在 SIYU_SOP__MEDIA_HOSTS 中列出素材服务器，"
                f"主机 {host} 不可用"
            )
        return f"素材地址的主机 {host} 不在允许的素材来源中（SIYU_SOP__MEDIA_HOSTS）"
    if not rule.trusted(host) and _ip(host) is not None and internal_address(host):
        return f"素材地址 {host} 是内网地址"
    return None


class _GuardedResolver(AbstractResolver):
    """The system resolver, refusing internal answers for hosts not trusted by name.

    The connection goes to the addresses checked here, so a name cannot pass the check
    with one answer and be fetched at another."""

    def __init__(self, rule: MediaPolicy) -> None:
        self.rule = rule
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if not self.rule.trusted(host):
            for info in found:
                if internal_address(info["host"]):
                    raise MediaRefused(f"素材地址 {MediaPolicy._norm(host)} 解析到内网地址，已拒绝")
        return found

    async def close(self) -> None:
        await self.inner.close()


def guarded_session(rule: MediaPolicy | None = None) -> aiohttp.ClientSession:
    """A session for media fetches under ``rule``: checked resolver, no DNS cache, no
    proxy from the environment, no cookies kept."""
    rule = rule or policy()
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver(rule), use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    )


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


async def _fetch(
    session: aiohttp.ClientSession, ref: MediaRef, rule: MediaPolicy | None = None
) -> tuple[bytes, str]:
    """The file's bytes and content type, read no further than WeCom's limit.

    Every address (the step's and each redirect's) is checked against ``rule`` before
    it is asked; the session's resolver refuses internal answers (:func:`guarded_session`).
    """
    rule = rule or policy()
    limit = bot_media.MAX_BYTES[ref.type]
    timeout = aiohttp.ClientTimeout(total=rule.timeout_s, sock_connect=min(rule.timeout_s, 10))
    url = ref.url
    try:
        async with asyncio.timeout(rule.timeout_s):
            for _ in range(rule.max_redirects + 1):
                if (problem := source_problem(url, rule)) is not None:
                    raise MediaRefused(problem)
                async with session.get(URL(url), timeout=timeout, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and resp.headers.get("Location"):
                        url = str(resp.url.join(URL(resp.headers["Location"])))
                        continue
                    if resp.status >= 500:
                        raise MediaUnavailable(f"HTTP {resp.status}")
                    if resp.status != 200:
                        raise MediaInvalid(f"素材地址无法下载（HTTP {resp.status}）")
                    declared = resp.content_length
                    if declared is not None and declared > limit:
                        raise MediaInvalid(_too_large(ref.type, declared))
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        body += chunk
                        if len(body) > limit:
                            raise MediaInvalid(_too_large(ref.type, len(body)))
                    content = bytes(body)
                    ctype = resp.content_type or "application/octet-stream"
                    break
            else:
                raise MediaRefused(f"素材地址重定向超过 {rule.max_redirects} 次")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MediaUnavailable(type(exc).__name__) from None
    if (problem := bot_media.media_problem(ref.type, content)) is not None:
        raise MediaInvalid(problem)
    if ref.type == "image":
        ctype = bot_media.image_type(content)
    return content, ctype


async def probe(ref: MediaRef, rule: MediaPolicy | None = None) -> tuple[str, str] | None:
    """Why this file cannot be sent, as (code, sentence for the builder), or None — at
    save time: ``media_source_refused`` (not an allowed source; never fetched) or
    ``media_invalid``."""
    rule = rule or policy()
    if (problem := source_problem(ref.url, rule)) is not None:
        return "media_source_refused", problem
    async with guarded_session(rule) as session:
        try:
            await _fetch(session, ref, rule)
        except MediaRefused as exc:
            return "media_source_refused", str(exc)
        except MediaInvalid as exc:
            return "media_invalid", str(exc)
        except MediaUnavailable as exc:
            return "media_invalid", f"素材地址暂时无法下载（{exc}），请确认地址可访问"
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
        rule: MediaPolicy | None = None,
    ) -> None:
        self.redis = redis
        self.rule = rule
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
        rule = self.rule or policy()
        if self._session is None:
            self._session = guarded_session(rule)
        content, ctype = await _fetch(self._session, ref, rule)
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
