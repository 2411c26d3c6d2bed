"""The fake corp's in-memory state: records, limits and quotas, faults, tokens."""

from __future__ import annotations

import random
import secrets as pysecrets
import string
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from aiohttp import web

from bot.sandbox.fake_api.base import WeComApiError, api_name
from bot.sandbox.fake_api.records import (
    AppMessage,
    CorpTag,
    ExternalContact,
    FollowInfo,
    GroupChat,
    IssuedTicket,
    IssuedToken,
    MassSendTask,
    Member,
    OAuthCode,
    TagGroup,
    WelcomeCode,
)
from bot.sandbox.fake_api.seed import seed_demo_corp

__all__ = ["STATE_KEY", "SandboxState"]

_CHINA = timezone(timedelta(hours=8))  # no DST in China; "a day" for WeCom is Beijing time
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_APP_MESSAGE_MINUTE_LIMIT: Final = 30
_APP_MESSAGE_HOUR_LIMIT: Final = 1000


@dataclass
class SandboxState:
    """Everything the fake corp knows; mutate it directly or through ``/sandbox/...``."""

    corp_id: str = "wwsandbox0000000001"
    secrets: dict[str, str] = field(
        repr=False,
        default_factory=lambda: {
            "app": "sandbox-app-secret-" + pysecrets.token_urlsafe(16),
            "contact": "sandbox-contact-secret-" + pysecrets.token_urlsafe(16),
        },
    )
    agent_id: int = 1000002
    clock: Callable[[], float] = time.time
    token_expires_in: int = 7200
    welcome_code_ttl_s: float = 20.0
    #: WeCom's per-member app-message limits; the excess is dropped silently.
    member_minute_limit: int = _APP_MESSAGE_MINUTE_LIMIT
    member_hour_limit: int = _APP_MESSAGE_HOUR_LIMIT
    #: Per-API (max calls, window seconds) → 45009 past it.  ``default_rate_limit``
    #: applies to APIs not listed (WeCom: ~10,000 a minute per API); ``None`` = none.
    rate_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    default_rate_limit: tuple[int, float] | None = (10_000, 60.0)
    #: Members confirm mass sends at once (as if they tapped 发送 in WeCom).
    auto_confirm_mass_send: bool = True
    #: While set, every ``/cgi-bin`` call (``gettoken`` too) answers this HTTP status with
    #: no JSON, as a gateway in front of an unreachable WeCom does (502/503/504).
    outage_status: int | None = None
    #: The app's jsapi_ticket lives 7,200 s; WeCom allows each app at most 100 fetches an
    #: hour (400 for the corp) and answers 45009 past that.
    jsapi_ticket_expires_in: int = 7200
    agent_ticket_hour_limit: int = 100
    #: An OAuth code is good for one ``auth/getuserinfo`` within 5 minutes (40029 after).
    oauth_code_ttl_s: float = 300.0
    #: Who the simulated WeCom client is signed in as: the authorize page sends them
    #: straight back with a code, as WeCom does; None = it asks which member.
    oauth_member: str | None = None
    #: Answer ``auth/getuserinfo`` with the old casing (``UserId``/``DeviceId``).
    oauth_legacy_casing: bool = False
    #: Hosts the app trusts for OAuth redirects (可信域名); empty = any (50001 otherwise).
    oauth_trusted_hosts: list[str] = field(default_factory=list)

    departments: dict[int, str] = field(default_factory=lambda: {1: "总部"})
    members: dict[str, Member] = field(default_factory=dict)
    contacts: dict[str, ExternalContact] = field(default_factory=dict)
    follows: dict[str, dict[str, FollowInfo]] = field(default_factory=dict)
    tag_groups: dict[str, TagGroup] = field(default_factory=dict)
    group_chats: dict[str, GroupChat] = field(default_factory=dict)
    welcome_codes: dict[str, WelcomeCode] = field(default_factory=dict)
    welcome_messages: list[dict[str, Any]] = field(default_factory=list)
    app_messages: list[AppMessage] = field(default_factory=list)
    mass_sends: dict[str, MassSendTask] = field(default_factory=dict)
    #: remind_groupmsg_send calls per task (times), for the 3-in-24-h limit.
    groupmsg_reminders: dict[str, list[float]] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict, repr=False)
    jsapi_tickets: dict[str, IssuedTicket] = field(default_factory=dict, repr=False)
    oauth_codes: dict[str, OAuthCode] = field(default_factory=dict, repr=False)
    #: Uploaded temporary media (``media.py``): WeCom forgets each after 3 days.
    media: dict[str, Any] = field(default_factory=dict, repr=False)
    calls: Counter[str] = field(default_factory=Counter)

    _faults: dict[str, deque[int]] = field(default_factory=dict, repr=False)
    _call_times: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _mass_received: dict[str, str] = field(default_factory=dict, repr=False)
    _ids: random.Random = field(default_factory=random.Random, repr=False)
    _ticket_fetches: dict[int, deque[float]] = field(default_factory=dict, repr=False)

    # -- levers -----------------------------------------------------------

    def inject(self, api: str, errcode: int, times: int = 1) -> None:
        """The next ``times`` calls of ``api`` (e.g. ``"message/send"``) fail with ``errcode``."""
        self._faults.setdefault(api_name(api), deque()).extend([errcode] * times)

    def start_outage(self, status: int = 503) -> None:
        """WeCom unreachable: every API answers HTTP ``status`` until :meth:`end_outage`."""
        self.outage_status = status

    def end_outage(self) -> None:
        self.outage_status = None

    def expire_tokens(self) -> None:
        """Every issued token now answers 42001, as after its 7,200 s."""
        for issued in self.tokens.values():
            issued.force_expired = True

    def invalidate_tokens(self) -> None:
        """Every issued token now answers 40014 (e.g. the secret was reset)."""
        for issued in self.tokens.values():
            issued.invalidated = True

    def issue_welcome_code(self, *, userid: str, external_userid: str) -> str:
        """A WelcomeCode as carried by an add_external_contact event, issued now."""
        code = self.new_id("", 43)
        self.welcome_codes[code] = WelcomeCode(code, userid, external_userid, self.clock())
        return code

    def issue_oauth_code(self, userid: str) -> str:
        """The code the authorize redirect hands the page for ``userid`` ("" = a non-member)."""
        code = self.new_id("", 32)
        self.oauth_codes[code] = OAuthCode(code, userid, self.agent_id, self.clock())
        return code

    def valid_jsapi_tickets(self) -> list[IssuedTicket]:
        """Tickets WeCom's client would accept a signature made with, right now."""
        now = self.clock()
        return [t for t in self.jsapi_tickets.values() if not t.expired(now)]

    def delivered_app_messages(self, touser: str | None = None) -> list[AppMessage]:
        return [
            m for m in self.app_messages if not m.dropped and (touser is None or m.touser == touser)
        ]

    def dropped_app_messages(self, touser: str | None = None) -> list[AppMessage]:
        return [
            m for m in self.app_messages if m.dropped and (touser is None or m.touser == touser)
        ]

    def confirm_mass_send(self, msgid: str, userid: str | None = None) -> None:
        """The member(s) tapped 发送: results become 1 sent, 2 not a contact, 3 already sent.

        A customer receives at most one mass send per (Beijing) day; later ones get
        status 3, as WeCom reports them.
        """
        task = self.mass_sends[msgid]
        now = self.clock()
        today = datetime.fromtimestamp(now, _CHINA).date().isoformat()
        for result in task.results:
            if result["status"] != 0 or (userid is not None and result["userid"] != userid):
                continue
            ext = result.get("external_userid")
            if ext is None:  # group chat task
                result.update(status=1, send_time=int(now))
            elif ext not in self.follows.get(result["userid"], {}):
                result["status"] = 2
            elif self._mass_received.get(ext) == today:
                result["status"] = 3
            else:
                self._mass_received[ext] = today
                result.update(status=1, send_time=int(now))

    # -- building the corp --------------------------------------------------

    def new_id(self, prefix: str, length: int = 30) -> str:
        return prefix + "".join(self._ids.choice(_ID_ALPHABET) for _ in range(length))

    def add_member(self, member: Member) -> Member:
        self.members[member.userid] = member
        self.follows.setdefault(member.userid, {})
        return member

    def add_contact(
        self, contact: ExternalContact, followers: Mapping[str, FollowInfo] | None = None
    ) -> ExternalContact:
        self.contacts[contact.external_userid] = contact
        for userid, info in (followers or {}).items():
            self.follows.setdefault(userid, {})[contact.external_userid] = info
        return contact

    def add_tag_group(self, name: str, tag_names: list[str], *, order: int = 0) -> TagGroup:
        now = int(self.clock())
        group = TagGroup(
            self.new_id("et", 22),
            name,
            now,
            order,
            [CorpTag(self.new_id("et", 22), n, now, i) for i, n in enumerate(tag_names)],
        )
        self.tag_groups[group.group_id] = group
        return group

    def find_tag(self, tag_id: str) -> tuple[TagGroup, CorpTag] | None:
        for group in self.tag_groups.values():
            for tag in group.tags:
                if tag.id == tag_id:
                    return group, tag
        return None

    def seed_demo(self, rng: random.Random) -> None:
        """A believable wealth-management corp: 5 advisors, a manager, ~30 customers."""
        self._ids = random.Random(rng.random())
        seed_demo_corp(self, rng)

    # -- request plumbing ------------------------------------------------------

    def _issue_token(self, kind: str) -> IssuedToken:
        now = self.clock()
        for issued in self.tokens.values():
            # WeCom answers the same token while it is valid.
            if issued.kind == kind and not issued.invalidated and not issued.expired(now):
                return issued
        issued = IssuedToken(pysecrets.token_urlsafe(96), kind, now, self.token_expires_in)
        self.tokens[issued.token] = issued
        return issued

    def _check_rate(self, api: str) -> None:
        limit = self.rate_limits.get(api, self.default_rate_limit)
        if limit is None:
            return
        max_calls, window_s = limit
        now = self.clock()
        times = self._call_times.setdefault(api, deque())
        while times and times[0] <= now - window_s:
            times.popleft()
        if len(times) >= max_calls:
            raise WeComApiError(45009)
        times.append(now)

    def _take_fault(self, api: str) -> int | None:
        queue = self._faults.get(api)
        if queue:
            return queue.popleft()
        return None


STATE_KEY: Final = web.AppKey("sandbox_state", SandboxState)
