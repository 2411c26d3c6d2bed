"""The public way to write to WeCom: a durable outbox row, sent after commit.

Any domain enqueues inside its own transaction::

    await outbox.enqueue(conn, idem_key=f"sop.touch:{touch.id}",
                         write=outbox.app_text(agent_id=…, touser=…, content=…),
                         origin=f"sop.touch:{touch.id}")

and the dispatcher (``bot.jobs.OutboxDispatcher``) sends it later, with WeCom's
rate limits, retries and token refresh.  Two extension points per ``origin``
prefix, registered in the domain record:

- a **before-send check** (``async (PendingWrite) -> str | SendAs | None``) runs when
  the row is claimed, right before the call: it re-reads whatever the write depends on
  (the customer still follows the advisor, the campaign is still running, the
  content still approved) and returns a reason to cancel, or None to send — the
  pattern of Zulip's scheduled messages, which re-check permission at send time.  It
  may also answer ``SendAs(payload)``: send, with a body made at the last moment
  (temporary media uploaded just now).
- an **on-settled callback** (``async (Settled, conn) -> None``) learns how the row
  ended — sent (with WeCom's answer, e.g. the ``msgid`` of a mass-send task),
  failed, or cancelled — in the transaction that records the row's outcome (``conn``
  sees the row settled).  It runs at least once: a callback that fails rolls that
  transaction back, the outcome is recorded alone and the callback retried by the
  dispatcher (``notify_pending``), so it must be idempotent by outbox id.

``idem_key`` is the business key under a unique constraint: enqueueing twice is
a no-op, so a redelivered message never sends its alert twice.

Sent once, even with several schedulers: a row is claimed with a token, and every
later write of the dispatcher (lease renewal, "the request leaves now", the
outcome) is ``WHERE id = ? AND claim = ?`` — a dispatcher whose lease ran out and
whose row was taken over changes nothing.  When a request may have reached WeCom
and no answer came back (a timeout, a cut connection), only a write that WeCom
applies once however often it arrives (:func:`resend_is_safe`) is sent again; any
other is left in state ``unknown`` for an operator (``siyu outbox --state unknown``,
then ``siyu outbox retry`` or ``siyu outbox discard``), never resent blindly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import models
from bot import service as bot_service
from bot.models import OutboxState
from core import audit
from core.audit import Actor
from core.domain import Domain

log = logging.getLogger(__name__)

# Whose access token calls the API: the self-built app, or the legacy 客户联系 secret
# (used for externalcontact/* only when configured; see bot.wecom.client).
Via = Literal["app", "contact"]
Outcome = Literal["sent", "failed", "cancelled"]
ORIGIN_MAX = 96


@dataclass(frozen=True)
class Write:
    """One WeCom API call: path under ``/cgi-bin/``, JSON body, whose token calls it."""

    api: str
    payload: Mapping[str, Any]
    via: Via = "app"


# ---------------------------------------------------------------- builders


def app_text(*, agent_id: int, touser: str, content: str, dedup_window_s: int = 1800) -> Write:
    """``message/send`` text from the app to one member (at most 30/min, 1,000/h each).

    ``enable_duplicate_check`` makes a resend of the same row (after a crash between
    WeCom's answer and our commit) a no-op on WeCom's side; the text must therefore
    differ between two different alerts (see ``bot.flows``).
    """
    return Write(
        "message/send",
        {
            "touser": touser,
            "msgtype": "text",
            "agentid": agent_id,
            "text": {"content": content},
            "enable_duplicate_check": 1,
            "duplicate_check_interval": dedup_window_s,
        },
    )


def mark_tag(
    *,
    userid: str,
    external_userid: str,
    add_tag: Sequence[str] = (),
    remove_tag: Sequence[str] = (),
) -> Write:
    """``externalcontact/mark_tag``: API changes produce no ``change_external_tag`` callback."""
    if not add_tag and not remove_tag:
        raise ValueError("mark_tag needs add_tag or remove_tag")
    return Write(
        "externalcontact/mark_tag",
        {
            "userid": userid,
            "external_userid": external_userid,
            "add_tag": list(add_tag),
            "remove_tag": list(remove_tag),
        },
        via="contact",
    )


def add_msg_template(
    *,
    sender: str,
    text: str | None = None,
    external_userid: Sequence[str] = (),
    chat_type: Literal["single", "group"] = "single",
    chat_id_list: Sequence[str] = (),
    attachments: Sequence[Mapping[str, Any]] = (),
    allow_select: bool = False,
) -> Write:
    """``externalcontact/add_msg_template``: creates a mass-send *task* the advisor confirms.

    WeCom answers with the task's ``msgid`` (read it in the on-settled callback to
    poll ``get_groupmsg_send_result``); each customer receives at most one mass send
    a day.  Media ids in ``attachments`` live 3 days: upload close to send time.
    """
    if text is None and not attachments:
        raise ValueError("add_msg_template needs text or attachments")
    body: dict[str, Any] = {"chat_type": chat_type, "sender": sender, "allow_select": allow_select}
    if external_userid:
        body["external_userid"] = list(external_userid)
    if chat_id_list:
        body["chat_id_list"] = list(chat_id_list)
    if text is not None:
        body["text"] = {"content": text}
    if attachments:
        body["attachments"] = [dict(a) for a in attachments]
    return Write("externalcontact/add_msg_template", body, via="contact")


def send_welcome_msg(
    *, welcome_code: str, text: str | None = None, attachments: Sequence[Mapping[str, Any]] = ()
) -> Write:
    """``externalcontact/send_welcome_msg``: the WelcomeCode is valid 20 s, once (41051 after)."""
    body: dict[str, Any] = {"welcome_code": welcome_code}
    if text is not None:
        body["text"] = {"content": text}
    if attachments:
        body["attachments"] = [dict(a) for a in attachments]
    return Write("externalcontact/send_welcome_msg", body, via="contact")


def add_corp_tag(
    *,
    tags: Sequence[Mapping[str, Any]],
    group_id: str | None = None,
    group_name: str | None = None,
    order: int | None = None,
) -> Write:
    """``externalcontact/add_corp_tag``: tags into a group (by id) or a new group (by name)."""
    if not tags:
        raise ValueError("add_corp_tag needs at least one tag")
    body: dict[str, Any] = {"tag": [dict(t) for t in tags]}
    if group_id is not None:
        body["group_id"] = group_id
    if group_name is not None:
        body["group_name"] = group_name
    if order is not None:
        body["order"] = order
    return Write("externalcontact/add_corp_tag", body, via="contact")


def edit_corp_tag(*, id: str, name: str | None = None, order: int | None = None) -> Write:
    """``externalcontact/edit_corp_tag``: rename or reorder a tag or a group."""
    body: dict[str, Any] = {"id": id}
    if name is not None:
        body["name"] = name
    if order is not None:
        body["order"] = order
    return Write("externalcontact/edit_corp_tag", body, via="contact")


def del_corp_tag(*, tag_id: Sequence[str] = (), group_id: Sequence[str] = ()) -> Write:
    """``externalcontact/del_corp_tag``: deleting a group deletes its tags."""
    if not tag_id and not group_id:
        raise ValueError("del_corp_tag needs tag_id or group_id")
    return Write(
        "externalcontact/del_corp_tag",
        {"tag_id": list(tag_id), "group_id": list(group_id)},
        via="contact",
    )


def remind_groupmsg_send(*, msgid: str) -> Write:
    """``externalcontact/remind_groupmsg_send``: at most 3 reminders per task per 24 h."""
    return Write("externalcontact/remind_groupmsg_send", {"msgid": msgid}, via="contact")


# ---------------------------------------------------------------- resending

#: Keep this far inside WeCom's duplicate-check window: the clocks of siyu and
#: WeCom differ a little, and a resend must land while WeCom still remembers.
DUPLICATE_CHECK_MARGIN_S = 60


def resend_is_safe(
    api: str, payload: Mapping[str, Any], *, in_doubt_since: datetime, at: datetime
) -> bool:
    """May a request that possibly reached WeCom (at ``in_doubt_since``) be sent again?

    Only ``message/send`` with ``enable_duplicate_check`` is: WeCom drops an identical
    message to the same member within ``duplicate_check_interval`` (default 1,800 s,
    at most 4 h), so a resend inside that window cannot deliver twice.  Every other
    write can happen twice and someone would notice:

    - ``add_msg_template`` creates a second mass-send task the advisor must confirm,
      and each customer receives at most one mass send a day, so the duplicate also
      crowds out the next campaign;
    - ``send_welcome_msg`` answers 41051 to a second try (the WelcomeCode works once),
      which would mark as failed a welcome that was delivered;
    - ``mark_tag`` (like the corp-tag edits) sets state that a later write or the
      advisor in WeCom may have changed since: a late repeat reverts it;
    - ``remind_groupmsg_send`` is limited to 3 per task per 24 h, each one a push.

    So for those the row waits in ``unknown`` until an operator has looked in WeCom.
    """
    if api == "message/send" and payload.get("enable_duplicate_check"):
        window_s = int(payload.get("duplicate_check_interval") or 1800)
        return at < in_doubt_since + timedelta(seconds=window_s - DUPLICATE_CHECK_MARGIN_S)
    return False


# ---------------------------------------------------------------- recipients


def mask_external_userid(external_userid: str) -> str:
    """A customer's id as an operator may see it: enough to match, not to copy."""
    if len(external_userid) <= 10:
        return "…"
    return f"{external_userid[:4]}…{external_userid[-4:]}"


def recipient_of(api: str, payload: Mapping[str, Any]) -> str:
    """Who a write reaches, for an operator's listing: members by userid, customers masked."""
    parts: list[str] = []
    if api == "message/send":
        parts.append(f"member:{payload.get('touser', '')}")
    elif api == "externalcontact/mark_tag":
        parts.append(f"member:{payload.get('userid', '')}")
        parts.append(f"customer:{mask_external_userid(str(payload.get('external_userid', '')))}")
    elif api == "externalcontact/add_msg_template":
        if payload.get("sender"):
            parts.append(f"member:{payload['sender']}")
        customers = [str(e) for e in payload.get("external_userid") or []]
        if customers:
            shown = ",".join(mask_external_userid(e) for e in customers[:3])
            more = f",+{len(customers) - 3}" if len(customers) > 3 else ""
            parts.append(f"customers:{shown}{more}")
        chats = payload.get("chat_id_list") or []
        if chats:
            parts.append(f"chats:{len(chats)}")
    elif api == "externalcontact/send_welcome_msg":
        parts.append("new contact (by welcome code)")
    elif api == "externalcontact/remind_groupmsg_send":
        parts.append(f"mass-send task:{payload.get('msgid', '')}")
    elif api.startswith("externalcontact/") and api.endswith("_corp_tag"):
        parts.append("corp tag library")
    return " ".join(parts)


# ---------------------------------------------------------------- enqueue


async def enqueue(
    conn: BaseDBAsyncClient,
    *,
    idem_key: str,
    write: Write,
    origin: str,
    not_before: datetime | None = None,
) -> models.OutboxItem | None:
    """Add ``write`` once per ``idem_key``, in the caller's transaction.

    ``origin`` names who asked and for what (``bot.alert:…``, ``sop.touch:42``): it
    selects the before-send check and the on-settled callback, and shows an
    operator where a row came from.  Returns None when the key was already queued.
    """
    if not origin or len(origin) > ORIGIN_MAX:
        raise ValueError(f"origin must be 1..{ORIGIN_MAX} characters")
    if not idem_key or len(idem_key) > 160:
        raise ValueError("idem_key must be 1..160 characters")
    return await bot_service.enqueue_outbox(
        conn=conn,
        idem_key=idem_key,
        api=write.api,
        payload=dict(write.payload),
        secret_kind=write.via,
        not_before=not_before,
        origin=origin,
    )


# ---------------------------------------------------------------- policies


@dataclass(frozen=True)
class PendingWrite:
    """What a before-send check sees: the row as claimed, read-only."""

    id: int
    idem_key: str
    origin: str
    api: str
    payload: Mapping[str, Any]
    attempts: int


@dataclass(frozen=True)
class Settled:
    """How an outbox row ended."""

    id: int
    idem_key: str
    origin: str
    api: str
    outcome: Outcome
    result: Mapping[str, Any] | None  # WeCom's answer when sent (e.g. {"msgid": …})
    errcode: int | None
    reason: str  # WeCom's errmsg, or the check's reason to cancel


@dataclass(frozen=True)
class SendAs:
    """A before-send check's answer: send now, with this body instead of the stored one.

    For what can only be made right before the call — a temporary media id (it lives
    three days, ``bot.media``) uploaded for a mass send queued with the file's address.
    The stored row keeps what was queued; a resend is prepared again.
    """

    payload: Mapping[str, Any]


BeforeSend = Callable[[PendingWrite], Awaitable[str | SendAs | None]]
OnSettled = Callable[[Settled, BaseDBAsyncClient], Awaitable[None]]


def _matches(origin: str, prefix: str) -> bool:
    return origin == prefix or origin.startswith((f"{prefix}:", f"{prefix}."))


def _longest(origin: str, table: Sequence[tuple[str, Any]]) -> Any:
    best: tuple[str, Any] | None = None
    for prefix, fn in table:
        if _matches(origin, prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, fn)
    return best[1] if best else None


@dataclass(frozen=True)
class OutboxPolicies:
    """Before-send checks and on-settled callbacks by origin prefix (longest wins)."""

    checks: tuple[tuple[str, BeforeSend], ...] = ()
    settled: tuple[tuple[str, OnSettled], ...] = ()

    @classmethod
    def from_domains(cls, domains: Iterable[Domain]) -> OutboxPolicies:
        checks: list[tuple[str, BeforeSend]] = []
        settled: list[tuple[str, OnSettled]] = []
        for d in domains:
            checks += list(d.outbox_checks.items())
            settled += list(d.outbox_settled.items())
        prefixes = [p for p, _ in checks]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two before-send checks for one origin prefix")
        return cls(tuple(checks), tuple(settled))

    def check_for(self, origin: str) -> BeforeSend | None:
        fn: BeforeSend | None = _longest(origin, self.checks)
        return fn

    def settled_for(self, origin: str) -> OnSettled | None:
        fn: OnSettled | None = _longest(origin, self.settled)
        return fn


NO_POLICIES = OutboxPolicies()


# ---------------------------------------------------------------- operators

#: How long an operator's reason to discard may be (it is kept in ``last_error``).
REASON_MAX = 400


@dataclass(frozen=True)
class OperatorOutcome:
    """What an operator's retry or discard did to one row, in words for the console/CLI."""

    id: int
    ok: bool  # False: refused, the row is as it was
    state: str  # the row's state afterwards
    result: str


async def check_outbox_ids(*, ids: Sequence[int]) -> list[int]:
    """The ids among ``ids`` that name no outbox row (no side effects)."""
    found = await bot_service.outbox_items(ids=list(ids))
    return [i for i in dict.fromkeys(ids) if i not in found]


def check_discard_reason(reason: str) -> str:
    """The reason as it will be kept: required, bounded, personal numbers masked.

    Operators paste what they saw in WeCom; a phone or ID number in it must not be
    stored in clear (PIPL art. 51), so it is masked like stored message text.
    """
    from compliance_nlp.pii import find_pii, mask_pii

    text = " ".join(reason.split())
    if not text:
        raise ValueError("--reason must say why (it is kept with the row)")
    if len(text) > REASON_MAX:
        raise ValueError(f"--reason must be at most {REASON_MAX} characters")
    return mask_pii(text, find_pii(text))


_REFUSED = {
    OutboxState.SENDING: "in flight: its dispatcher settles it; look again in a minute",
    OutboxState.DONE: "already sent; never sent again from here",
}


def _refused(state: OutboxState) -> str:
    # Any other state: the row changed between our update and this read.
    return _REFUSED.get(state, f"{state.value} just now; look again and repeat if needed")


async def do_retry_outbox(*, ids: Sequence[int], actor: Actor) -> list[OperatorOutcome]:
    """Queue failed or in-doubt rows again (an operator has checked WeCom).

    Each row is queued at most once however often this runs: the update is
    conditional on the row still being failed or in doubt.  Each change is audited
    in its own transaction.
    """
    out: list[OperatorOutcome] = []
    for item_id in dict.fromkeys(ids):
        async with in_transaction() as conn:
            if await bot_service.retry_outbox(item_id=item_id, conn=conn):
                await audit.append(
                    conn=conn, actor=actor, action="outbox.retry", target=f"outbox:{item_id}"
                )
                out.append(OperatorOutcome(item_id, True, OutboxState.PENDING.value, "queued"))
                log.info("outbox row retried", extra={"outbox_id": item_id, "actor": actor.ref})
                continue
        item = (await bot_service.outbox_items(ids=[item_id]))[item_id]
        state = OutboxState(item.state)
        if state == OutboxState.PENDING:
            out.append(OperatorOutcome(item_id, True, state.value, "already queued"))
        elif state == OutboxState.CANCELLED:
            out.append(
                OperatorOutcome(
                    item_id, False, state.value, "cancelled; enqueue it anew if it must go"
                )
            )
        else:
            out.append(OperatorOutcome(item_id, False, state.value, _refused(state)))
    return out


async def do_discard_outbox(
    *, ids: Sequence[int], reason: str, actor: Actor
) -> list[OperatorOutcome]:
    """Cancel rows that are queued, failed or in doubt; they stay, with who and why."""
    why = check_discard_reason(reason)
    kept = f"discarded by {actor.name or actor.ref}: {why}"
    out: list[OperatorOutcome] = []
    for item_id in dict.fromkeys(ids):
        async with in_transaction() as conn:
            if await bot_service.discard_outbox(item_id=item_id, reason=kept, conn=conn):
                await audit.append(
                    conn=conn,
                    actor=actor,
                    action="outbox.discard",
                    target=f"outbox:{item_id}",
                    detail={"reason": why},
                )
                out.append(OperatorOutcome(item_id, True, OutboxState.CANCELLED.value, "discarded"))
                log.info("outbox row discarded", extra={"outbox_id": item_id, "actor": actor.ref})
                continue
        item = (await bot_service.outbox_items(ids=[item_id]))[item_id]
        state = OutboxState(item.state)
        if state == OutboxState.CANCELLED:
            out.append(OperatorOutcome(item_id, True, state.value, "already cancelled"))
        else:
            out.append(OperatorOutcome(item_id, False, state.value, _refused(state)))
    return out
