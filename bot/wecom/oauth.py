"""WeCom identity for H5 pages: the OAuth redirect, ``auth/getuserinfo`` and the app's
jsapi_ticket with the ``agentConfig`` signature it makes.

The chat sidebar is an H5 page WeCom opens beside a conversation.  It learns *who* the
member is through WeCom's OAuth (``snsapi_base``: no prompt inside the WeCom client) and
*which conversation* through the JS-SDK, whose ``agentConfig`` must be signed with the
app's jsapi_ticket.  These are the edge's calls for both; the session and page that use
them are admin's (``admin.sidebar``).

WeCom facts kept here:

* The authorize URL lives on ``open.weixin.qq.com`` (not the API host) and ends in
  ``#wechat_redirect``; the redirect host must be one of the app's 可信域名.
* A code is good for one ``auth/getuserinfo`` within 5 minutes (40029 after, 41008
  without one).  Members come back as ``userid`` — ``UserId`` in older WeCom — and
  people outside the corp as ``openid`` only.
* ``ticket/get?type=agent_config`` gives a ticket valid ``expires_in`` (7,200) s; each
  app may fetch at most 100 an hour (400 for the corp), 45009 past that.  So the ticket
  is cached per agent in Redis (sealed with the field key, as access tokens are), fetched
  single-flight, and the fetches of an hour are counted so a bug or a flushed Redis
  cannot spend WeCom's quota: past the budget the call is refused here, never sent.
* The signature is ``sha1("jsapi_ticket=…&noncestr=…&timestamp=…&url=…")`` over the
  page URL without its fragment, the parameters in that order and not URL-encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

import redis.asyncio as aioredis

from bot.wecom.client import WeComClient, WeComRateLimited, WeComTransportError
from core.crypto import DecryptionError, Keyring
from core.redis import Keyspace

__all__ = [
    "AUTHORIZE_PATH",
    "AgentTicketCache",
    "OAuthIdentity",
    "agent_config_signature",
    "authorize_url",
    "oauth_identity",
]

AUTHORIZE_PATH: Final = "/connect/oauth2/authorize"
#: WeCom: 「单个应用不能超过100次」 ticket fetches an hour.
TICKET_FETCHES_PER_HOUR: Final = 100


def authorize_url(
    *, base_url: str, corp_id: str, agent_id: int, redirect_uri: str, state: str
) -> str:
    """Where to send the browser to learn who the member is (snsapi_base: no prompt)."""
    query = urlencode(
        {
            "appid": corp_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "snsapi_base",
            "state": state,
            "agentid": str(agent_id),
        }
    )
    return f"{base_url.rstrip('/')}{AUTHORIZE_PATH}?{query}#wechat_redirect"


@dataclass(frozen=True)
class OAuthIdentity:
    """Who a code belongs to: a member (``userid``) or someone outside the corp."""

    userid: str | None
    openid: str | None = None


async def oauth_identity(client: WeComClient, code: str) -> OAuthIdentity:
    """``auth/getuserinfo``: the member behind a code (raises ``WeComError``, e.g. 40029)."""
    body = await client.call("auth/getuserinfo", method="GET", params={"code": code})
    # Older WeCom answered UserId/DeviceId/OpenId; newer userid/openid.
    userid = body.get("userid") or body.get("UserId")
    openid = body.get("openid") or body.get("OpenId")
    return OAuthIdentity(
        userid=str(userid) if userid else None, openid=str(openid) if openid else None
    )


def agent_config_signature(*, ticket: str, nonce: str, timestamp: int, url: str) -> str:
    """The ``agentConfig`` signature WeCom's client checks (JS-SDK 签名算法)."""
    page = url.split("#", 1)[0]
    plain = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={page}"
    return hashlib.sha1(plain.encode()).hexdigest()  # noqa: S324 - WeCom's algorithm is SHA-1


class AgentTicketCache:
    """The app's jsapi_ticket, shared by every process through Redis.

    Keys::

        {namespace}:wecom:{corp_id}:agent-ticket:{agent_id}        sealed {ticket, expires_at}
        {namespace}:wecom:{corp_id}:agent-ticket-lock:{agent_id}   single-flight fetch
        {namespace}:wecom:{corp_id}:agent-ticket-fetches:{agent_id}:{hour}  fetch count
    """

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        client: WeComClient,
        keyring: Keyring | None,
        namespace: str = "siyu",
        margin_s: int = 300,
        fetches_per_hour: int = TICKET_FETCHES_PER_HOUR,
        clock: Callable[[], float] = time.time,
        wait_s: float = 10.0,
    ) -> None:
        self._redis = redis
        self._client = client
        self._keyring = keyring
        self._prefix = Keyspace(namespace).key("wecom", client.corp_id)
        self._margin_s = margin_s
        self._fetches_per_hour = fetches_per_hour
        self._clock = clock
        self._wait_s = wait_s
        self._local = asyncio.Lock()

    def _key(self, agent_id: int) -> str:
        return f"{self._prefix}:agent-ticket:{agent_id}"

    def _aad(self, agent_id: int) -> str:
        return f"wecom-agent-ticket:{self._client.corp_id}:{agent_id}"

    async def ticket(self) -> str:
        """The app's valid ticket, fetched from WeCom only when none is cached."""
        agent_id = self._client.agent_id
        cached = await self._cached(agent_id)
        if cached is not None:
            return cached
        async with self._local:  # one poller per process
            return await self._refresh(agent_id)

    async def _cached(self, agent_id: int) -> str | None:
        raw = await self._redis.get(self._key(agent_id))
        if raw is None:
            return None
        stored = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            text = (
                self._keyring.open_text(stored, aad=self._aad(agent_id))
                if self._keyring
                else stored
            )
            value = json.loads(text)
            ticket, expires_at = str(value["ticket"]), float(value["expires_at"])
        except (DecryptionError, ValueError, KeyError, TypeError):
            return None  # sealed by another key, or damaged: fetch a new one
        # Judged by our clock too (tests freeze it; Redis's TTL only collects garbage).
        return ticket if self._clock() < expires_at - self._margin_s else None

    async def _refresh(self, agent_id: int) -> str:
        lock_key = f"{self._prefix}:agent-ticket-lock:{agent_id}"
        deadline = time.monotonic() + self._wait_s
        poll_s = 0.02
        while True:
            cached = await self._cached(agent_id)
            if cached is not None:
                return cached
            owner = secrets.token_hex(8)
            if await self._redis.set(lock_key, owner, nx=True, px=int(self._wait_s * 1000)):
                try:
                    cached = await self._cached(agent_id)
                    if cached is not None:
                        return cached
                    return await self._fetch(agent_id)
                finally:
                    with contextlib.suppress(aioredis.RedisError):
                        if await self._redis.get(lock_key) in (owner, owner.encode()):
                            await self._redis.delete(lock_key)
            if time.monotonic() > deadline:
                raise WeComTransportError(
                    api="ticket/get", errmsg="timed out waiting for another process's fetch"
                )
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 2, 0.2)

    async def _fetch(self, agent_id: int) -> str:
        hour = int(self._clock() // 3600)
        counter = f"{self._prefix}:agent-ticket-fetches:{agent_id}:{hour}"
        count = int(await self._redis.incr(counter))
        await self._redis.expire(counter, 7200)
        if count > self._fetches_per_hour:
            # Never spend WeCom's quota past its limit: 45009 would lock the app's
            # sidebar out for the rest of the hour.
            raise WeComRateLimited(
                api="ticket/get",
                errcode=45009,
                errmsg="local limit: this app's ticket fetches for the hour are spent",
                retry_after_s=3600 - self._clock() % 3600,
            )
        body = await self._client.call("ticket/get", method="GET", params={"type": "agent_config"})
        ticket = body.get("ticket")
        if not isinstance(ticket, str) or not ticket:
            raise WeComTransportError(api="ticket/get", errmsg="answer has no ticket")
        expires_in = int(body.get("expires_in", 7200))
        value = json.dumps({"ticket": ticket, "expires_at": self._clock() + expires_in})
        stored = self._keyring.seal_text(value, aad=self._aad(agent_id)) if self._keyring else value
        await self._redis.set(self._key(agent_id), stored, ex=max(1, expires_in))
        return ticket
