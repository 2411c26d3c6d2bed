"""A fake WeCom server API on loopback, for ``siyu demo`` and the tests.

It serves WeCom's real paths (``/cgi-bin/gettoken``, ``/cgi-bin/user/get``,
``/cgi-bin/message/send``, ``/cgi-bin/externalcontact/...``) with WeCom's JSON shapes and
its real errcodes and errmsgs, so code that works here works against WeCom:

* tokens: ``gettoken`` answers the same token while it is valid (7,200 s), as WeCom
  does; 41001 without a token, 40014 for an unknown/invalidated one, 42001 once expired;
* limits WeCom enforces silently or loudly: app messages past 30 a minute / 1,000 an
  hour per member are *dropped* with errcode 0 (recorded as dropped here); a
  WelcomeCode works once within 20 s, then 41051; each customer receives at most one
  mass send a day (status 3 in ``get_groupmsg_send_result``); per-API frequency limits
  answer 45009;
* faults on demand: ``state.inject("message/send", -1, times=2)``.

Time comes from ``SandboxState.clock`` so tests drive it without sleeping.  Control
endpoints under ``/sandbox/...`` expose the same levers over HTTP.  They are
unauthenticated: the server binds to loopback and exists only for demos and tests.
API changes produce no callbacks here, exactly as on WeCom.

Modules, grouped like wechatpy's ``work/client/api`` areas:

* ``state`` — ``SandboxState``: the corp's records, limits and quotas, faults, tokens;
* ``records`` — the records (``Member``, ``ExternalContact``, ``FollowInfo``, ...);
* ``seed`` — the demo corp, and the one source of demo names;
* ``server`` — ``build_fake_wecom_app``: token check, errcode answers, JSON parsing,
  rate limits, faults, route registration, the ``/sandbox/...`` levers;
* ``base`` — what handlers share: ``Call``, ``Handler``, ``WeComApiError``, parameter checks;
* areas, each with its routes: ``contacts`` (``user/*``, ``externalcontact/get``,
  ``list``, ``batch/get_by_user``), ``tags`` (corp tags, ``mark_tag``), ``messages``
  (``message/send``, ``send_welcome_msg``), ``mass_send`` (``add_msg_template``,
  ``get_groupmsg_send_result``), ``group_chats`` (``groupchat/*``), ``oauth`` (the
  OAuth authorize page, ``auth/getuserinfo``, ``ticket/get?type=agent_config``).
"""

from bot.sandbox.fake_api.base import Call, Handler, WeComApiError
from bot.sandbox.fake_api.records import (
    AppMessage,
    CorpTag,
    ExternalContact,
    FollowInfo,
    GroupChat,
    IssuedToken,
    MassSendTask,
    Member,
    TagGroup,
    WelcomeCode,
)
from bot.sandbox.fake_api.server import ERRMSGS, ROUTES, build_fake_wecom_app, start_fake_wecom
from bot.sandbox.fake_api.state import STATE_KEY, SandboxState

__all__ = [
    "ERRMSGS",
    "ROUTES",
    "STATE_KEY",
    "AppMessage",
    "Call",
    "CorpTag",
    "ExternalContact",
    "FollowInfo",
    "GroupChat",
    "Handler",
    "IssuedToken",
    "MassSendTask",
    "Member",
    "SandboxState",
    "TagGroup",
    "WeComApiError",
    "WelcomeCode",
    "build_fake_wecom_app",
    "start_fake_wecom",
]
