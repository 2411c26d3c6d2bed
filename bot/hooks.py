"""Extension points the pipeline calls around the storing transaction.

Other domains (tagging's auto-tag rules, SOP's triggers and exit conditions)
register hooks in their domain record; the root (``siyu.domains``) orders them.
The pipeline does not import those domains, so ``bot`` stays below them.

Three points, each an ordered, named list:

- ``on_message(record, conn)`` / ``on_event(record, conn)`` run **inside** the
  transaction that stored the row, with that transaction's connection.  If a hook
  raises, the row rolls back, the stream entry is not acknowledged and its
  redelivery runs every hook again — so each hook's effect happens exactly once.
  The messages of one read share a transaction (``bot.flows.do_store_messages``):
  when a hook fails, the others of the read are stored again, each alone, so a
  hook may be called twice for a message whose effect still happens once, and it
  may see the rows of the messages read with its own, later ones included.
  **No network calls inside a hook**: a WeCom write is an outbox row
  (``bot.outbox.enqueue(conn, …)``), sent after commit by the dispatcher.
- ``on_messages(records, conn)`` is ``on_message`` for a whole read: called once per
  storing transaction with the messages it stored, in the order read (duplicates
  left out), after every ``on_message`` hook has seen them, with the same
  exactly-once rules (a read stored again message by message calls it again, one
  message at a time).  A read is up to ``pipeline.batch_size`` messages in one
  transaction: a hook that reads or writes a few rows per message costs the worker a
  few round trips per message, more than the whole read's own statements, while
  per read it can group them into a statement or two (one upsert of a read's
  counters, one query for the customers it names).
- ``after_commit(record)`` runs once the row is durable, outside the transaction.
  It is best effort (a crash between commit and the hook skips it, and a
  redelivery of a stored row runs nothing), so durable work belongs in
  ``on_*`` + the outbox; use it for wake-ups and caches.

Hooks receive a frozen record of what was stored, never the ORM row: a hook can
not change the message behind the pipeline's back, and the record's fields are
the contract other domains build on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.schemas import Direction
from core.domain import Domain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored: masked text only (the original stays sealed)."""

    id: int
    source: str
    msgid: str
    direction: Direction
    sender_role: str
    customer: str | None  # external_userid
    advisor: str | None  # userid of the member in the conversation
    roomid: str | None
    msgtime: datetime
    msgtype: str
    text_masked: str
    intent: str | None
    intent_score: float | None
    sentiment: str | None
    violation_categories: tuple[str, ...]
    has_violation: bool


@dataclass(frozen=True)
class StoredEvent:
    """A 客户联系 or other event as stored; ``fields`` is read-only.

    ``fields`` holds every field as received, in memory only: the row keeps the fields
    of ``bot.flows.CLEAR_EVENT_FIELDS`` in clear and seals the rest (a member's Mobile,
    Email, Address; Latitude/Longitude — PIPL art. 28).  A hook that stores a field
    outside that list must seal or mask it too, never copy it into a clear column.
    """

    id: int
    event_key: str
    kind: str
    event: str
    change_type: str
    occurred_at: datetime
    fields: Mapping[str, Any]
    customer: str | None  # ExternalUserID
    advisor: str | None  # UserID
    state: str | None  # 渠道活码 State of add_external_contact
    welcome_code: str | None  # valid 20 s, once (send_welcome_msg)


MessageHook = Callable[[StoredMessage, BaseDBAsyncClient], Awaitable[None]]
MessagesHook = Callable[[Sequence[StoredMessage], BaseDBAsyncClient], Awaitable[None]]
EventHook = Callable[[StoredEvent, BaseDBAsyncClient], Awaitable[None]]
AfterCommitHook = Callable[[StoredMessage | StoredEvent], Awaitable[None]]

F = TypeVar("F")


@dataclass(frozen=True)
class NamedHook(Generic[F]):
    name: str  # "<domain>.<point>", in logs and errors
    fn: F


@dataclass(frozen=True)
class Hooks:
    on_message: tuple[NamedHook[MessageHook], ...] = ()
    on_event: tuple[NamedHook[EventHook], ...] = ()
    after_commit: tuple[NamedHook[AfterCommitHook], ...] = ()
    on_messages: tuple[NamedHook[MessagesHook], ...] = ()

    @classmethod
    def from_domains(cls, domains: Iterable[Domain]) -> Hooks:
        """The hooks of ``domains``, in the order given (the root's list)."""
        on_message: list[NamedHook[MessageHook]] = []
        on_messages: list[NamedHook[MessagesHook]] = []
        on_event: list[NamedHook[EventHook]] = []
        after_commit: list[NamedHook[AfterCommitHook]] = []
        for d in domains:
            if fn := d.hooks.get("on_message"):
                on_message.append(NamedHook(f"{d.name}.on_message", fn))
            if fn := d.hooks.get("on_messages"):
                on_messages.append(NamedHook(f"{d.name}.on_messages", fn))
            if fn := d.hooks.get("on_event"):
                on_event.append(NamedHook(f"{d.name}.on_event", fn))
            if fn := d.hooks.get("after_commit"):
                after_commit.append(NamedHook(f"{d.name}.after_commit", fn))
        return cls(tuple(on_message), tuple(on_event), tuple(after_commit), tuple(on_messages))

    @property
    def names(self) -> dict[str, list[str]]:
        return {
            "on_message": [h.name for h in self.on_message],
            "on_messages": [h.name for h in self.on_messages],
            "on_event": [h.name for h in self.on_event],
            "after_commit": [h.name for h in self.after_commit],
        }

    async def run_after_commit(self, record: StoredMessage | StoredEvent) -> None:
        for hook in self.after_commit:
            try:
                await hook.fn(record)
            except Exception:
                # The row is durable; an after-commit hook must not fail the delivery.
                log.exception("after_commit hook failed", extra={"hook": hook.name})


def frozen_fields(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(fields))


NO_HOOKS = Hooks()
