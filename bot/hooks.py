"""Extension points the pipeline calls inside the storing transaction.

Tagging (auto-tag rules) and SOP (triggers, exit conditions) register here at
start-up; the pipeline does not import them, so ``bot`` stays below those
domains in the dependency order.  A hook runs in the same transaction as the
stored row: if it fails, the message is not acknowledged and is redelivered,
and because the row insert rolls back too, the redelivery runs the hook again
exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tortoise.backends.base.client import BaseDBAsyncClient

from bot import models

MessageHook = Callable[[models.Message, BaseDBAsyncClient], Awaitable[None]]
EventHook = Callable[[models.Event, BaseDBAsyncClient], Awaitable[None]]


@dataclass
class HookRegistry:
    tagging_message: list[MessageHook] = field(default_factory=list)
    tagging_event: list[EventHook] = field(default_factory=list)
    sop_message: list[MessageHook] = field(default_factory=list)
    sop_event: list[EventHook] = field(default_factory=list)
