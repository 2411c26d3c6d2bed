"""Periodic work of the edge: the outbox dispatcher and the contact reconciler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from bot import customers as bot_customers
from bot import service as bot_service
from bot.flows import open_outbox_payload
from bot.models import OutboxItem, OutboxState
from bot.outbox import (
    NO_POLICIES,
    OutboxPolicies,
    Outcome,
    PendingWrite,
    SendAs,
    Settled,
    resend_is_safe,
)
from bot.wecom.client import WeComClient, WeComError, WeComRateLimited, WeComTransportError
from core.crypto import Keyring
from core.metrics import Metrics
from core.settings import OutboxSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 15 * 60


def _api_path(api: str) -> str:
    return api.strip("/").removeprefix("cgi-bin/")


@dataclass
class OutboxDispatcher:
    """Drains the outbox: each row is claimed by one dispatcher, checked, sent, settled.

    Several dispatchers (one per scheduler process) may drain one outbox; each row
    is sent once:

    - a claim is a conditional UPDATE that writes a fresh claim token and a lease
      counted from that claim (never from the start of the round);
    - while a row is being checked and sent, its lease is renewed every third of
      ``lease_s``, so a call slower than the lease (the client's busy retries, a
      token refresh, a slow before-send check) keeps its row.  Renewal rather than
      one lease longer than any call: the longest call is not bounded by anything
      we own (a before-send check belongs to another domain), and a short lease
      lets a dead scheduler's rows go on within ``lease_s``;
    - every write after the claim is fenced by the token; the last one before the
      network records that a request may now reach WeCom (``request_at``), so a row
      whose lease lapsed is known to be "maybe sent" or "surely not sent";
    - a request that may have reached WeCom without an answer (timeout, cut
      connection) is sent again only when WeCom would ignore a repeat
      (``bot.outbox.resend_is_safe``); otherwise the row waits in ``unknown`` for an
      operator.

    On our side a row is unique by its business key.  Run by ``core.jobs.PeriodicJob``:
    a tick that sent something runs again at once.
    """

    client: WeComClient
    settings: OutboxSettings
    metrics: Metrics
    policies: OutboxPolicies = NO_POLICIES
    # Opens payloads sealed at rest (an alert naming a customer) right before sending.
    keyring: Keyring | None = None
    # How the lease keeper waits between renewals (a test steps it instead of sleeping).
    lease_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_s)

    async def tick(self) -> int:
        return await self.dispatch_due() + await self.notify_settled()

    async def dispatch_due(self, *, limit: int = 50) -> int:
        sent = 0
        for item_id in await bot_service.due_outbox_ids(at=bot_service.now(), limit=limit):
            item = await self._claim(item_id)
            if item is None:
                continue  # another dispatcher took it, or it waits for an operator
            await self.send(item)
            sent += 1
        return sent

    async def _claim(self, item_id: int) -> OutboxItem | None:
        # Now, not the round's start: rows claimed late in a long round get a whole lease.
        at = bot_service.now()
        item = await bot_service.claim_outbox(item_id=item_id, at=at, lease=self.lease)
        if item is not None:
            return item
        stale = await bot_service.stale_outbox_in_doubt(item_id=item_id, at=at)
        if stale is None or stale.request_at is None:
            return None
        # Its dispatcher stopped renewing after its request may have left: dead, or
        # stalled longer than a lease.
        if resend_is_safe(stale.api, stale.payload, in_doubt_since=stale.request_at, at=at):
            return await bot_service.take_over_outbox(stale=stale, lease=self.lease, at=at)
        if await bot_service.mark_outbox_in_doubt(stale=stale, at=at):
            self.metrics.outbox_calls.labels(stale.api, "unknown").inc()
            log.error(
                "outbox outcome unknown",
                extra={"outbox_id": stale.id, "api": stale.api, "cause": "lease lapsed"},
            )
        return None

    async def send(self, item: OutboxItem) -> None:
        keeper = asyncio.create_task(self._keep_lease(item), name=f"outbox-lease-{item.id}")
        try:
            await self._check_and_send(item)
        finally:
            keeper.cancel()
            try:
                await keeper
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled ourselves: pass it on

    async def _keep_lease(self, item: OutboxItem) -> None:
        while True:
            await self.lease_sleep(self.settings.lease_s / 3)
            try:
                kept = await bot_service.renew_outbox_lease(item=item, lease=self.lease)
            except Exception:
                # The database may be back before the lease runs out; if not, the row
                # is taken over (or left for an operator), never sent twice blindly.
                log.warning(
                    "outbox lease renewal failed", extra={"outbox_id": item.id}, exc_info=True
                )
                continue
            if not kept:
                # Taken over or left for an operator; our answer, if it comes, is
                # recorded only if the claim is still ours (bot.service.finish_outbox).
                log.warning("outbox lease lost", extra={"outbox_id": item.id, "api": item.api})
                return

    async def _check_and_send(self, item: OutboxItem) -> None:
        payload = await self._checked_payload(item)
        if payload is None:
            return
        in_doubt_before = item.request_at  # a previous attempt that may have been delivered
        if not await bot_service.mark_outbox_request(item=item, lease=self.lease):
            log.warning(
                "outbox row lost before sending", extra={"outbox_id": item.id, "api": item.api}
            )
            return
        try:
            result = await self.client.call(item.api, json=payload, secret=item.secret_kind)
        except WeComRateLimited as exc:
            # 45009/45033 (or refused before sending): WeCom asks for at least a
            # minute; not counted as a failure, and this request did nothing.
            await self._finish(
                item,
                OutboxState.PENDING,
                errcode=exc.errcode,
                error=str(exc),
                retry_at=bot_service.now() + timedelta(seconds=max(exc.retry_after_s, 60)),
                request_at=in_doubt_before,
            )
            self.metrics.outbox_calls.labels(item.api, "rate_limited").inc()
            return
        except WeComTransportError as exc:
            if exc.request_sent and _api_path(exc.api) == _api_path(item.api):
                await self._answer_lost(item, exc)
                return
            await self._failed_attempt(item, exc, request_at=in_doubt_before)
            return
        except WeComError as exc:
            # WeCom answered: this request did nothing (an earlier one may have).
            await self._failed_attempt(item, exc, request_at=in_doubt_before)
            return
        await self._settle(item, OutboxState.DONE, result=result)
        self.metrics.outbox_calls.labels(item.api, "done").inc()

    async def _failed_attempt(
        self, item: OutboxItem, exc: WeComError, *, request_at: datetime | None
    ) -> None:
        if exc.retryable and item.attempts < self.settings.max_attempts:
            delay = min(2**item.attempts, MAX_BACKOFF_S)
            await self._finish(
                item,
                OutboxState.PENDING,
                errcode=exc.errcode,
                error=str(exc),
                retry_at=bot_service.now() + timedelta(seconds=delay),
                request_at=request_at,
            )
            self.metrics.outbox_calls.labels(item.api, "retry").inc()
            return
        if request_at is not None:
            # Failing now says nothing about the earlier request that may have landed.
            await self._left_in_doubt(item, exc)
            return
        await self._settle(item, OutboxState.FAILED, errcode=exc.errcode, error=str(exc))
        self.metrics.outbox_calls.labels(item.api, "failed").inc()
        log.error(
            "outbox item failed",
            extra={"outbox_id": item.id, "api": item.api, "errcode": exc.errcode},
        )

    async def _answer_lost(self, item: OutboxItem, exc: WeComTransportError) -> None:
        """The request may have reached WeCom and no answer came back."""
        since = item.request_at or bot_service.now()
        delay = min(2**item.attempts, MAX_BACKOFF_S)
        retry_at = bot_service.now() + timedelta(seconds=delay)
        if item.attempts < self.settings.max_attempts and resend_is_safe(
            item.api, item.payload, in_doubt_since=since, at=retry_at
        ):
            await self._finish(
                item,
                OutboxState.PENDING,
                errcode=exc.errcode,
                error=str(exc),
                retry_at=retry_at,
                request_at=since,
            )
            self.metrics.outbox_calls.labels(item.api, "retry").inc()
            return
        await self._left_in_doubt(item, exc)

    async def _left_in_doubt(self, item: OutboxItem, exc: WeComError) -> None:
        if await self._finish(
            item,
            OutboxState.UNKNOWN,
            errcode=exc.errcode,
            error=f"outcome unknown (check WeCom, then retry or discard): {exc}",
            request_at=item.request_at,
        ):
            self.metrics.outbox_calls.labels(item.api, "unknown").inc()
            log.error(
                "outbox outcome unknown",
                extra={"outbox_id": item.id, "api": item.api, "errcode": exc.errcode},
            )

    async def _finish(
        self,
        item: OutboxItem,
        state: OutboxState,
        *,
        result: dict[str, Any] | None = None,
        errcode: int | None = None,
        error: str = "",
        retry_at: datetime | None = None,
        notify: bool = False,
        request_at: datetime | None = None,
    ) -> bool:
        done = await bot_service.finish_outbox(
            item=item,
            state=state,
            result=result,
            errcode=errcode,
            error=error,
            retry_at=retry_at,
            notify=notify,
            request_at=request_at,
        )
        if not done:
            # Another dispatcher took the row over after our lease lapsed, or an
            # operator retried or discarded it: what we learnt is not recorded.
            log.warning(
                "outbox finish lost its claim",
                extra={"outbox_id": item.id, "api": item.api, "outcome": state.value},
            )
        return done

    async def _checked_payload(self, item: OutboxItem) -> dict[str, Any] | None:
        """Re-check at send time: the body to send, or None when the row was cancelled
        (or put back)."""
        payload = open_outbox_payload(item, keyring=self.keyring)
        check = self.policies.check_for(item.origin)
        if check is None:
            return payload
        try:
            reason = await check(
                PendingWrite(
                    id=item.id,
                    idem_key=item.idem_key,
                    origin=item.origin,
                    api=item.api,
                    payload=payload,
                    attempts=item.attempts,
                )
            )
        except Exception as exc:
            log.exception(
                "before-send check failed", extra={"outbox_id": item.id, "origin": item.origin}
            )
            delay = min(2**item.attempts, MAX_BACKOFF_S)
            await self._finish(
                item,
                OutboxState.PENDING,
                error=f"before-send check: {exc!r}",
                retry_at=bot_service.now() + timedelta(seconds=delay),
                request_at=item.request_at,
            )
            return None
        if reason is None:
            return payload
        if isinstance(reason, SendAs):
            return dict(reason.payload)  # made at the last moment (fresh media ids)
        await self._settle(item, OutboxState.CANCELLED, error=reason)
        self.metrics.outbox_calls.labels(item.api, "cancelled").inc()
        log.info("outbox item cancelled", extra={"outbox_id": item.id, "origin": item.origin})
        return None

    async def _settle(
        self,
        item: OutboxItem,
        state: OutboxState,
        *,
        result: dict[str, Any] | None = None,
        errcode: int | None = None,
        error: str = "",
    ) -> None:
        # The outcome and its callback commit together — one transaction a row, which
        # on SQLite (one writer, a sync per commit) is most of a row's cost.  A callback
        # that fails rolls that back: the outcome then commits alone, flagged, and the
        # callback is retried until it succeeds, so an outcome is never lost to it.
        # A dispatcher that lost its claim records nothing and calls back nothing: the
        # row's owner settles it and its callback runs once.
        callback = self.policies.settled_for(item.origin)
        if callback is not None and await self._settle_together(
            item, state, callback, result=result, errcode=errcode, error=error
        ):
            return
        settled = await self._finish(
            item,
            state,
            result=result,
            errcode=errcode,
            error=error,
            notify=callback is not None,
            request_at=None if state == OutboxState.DONE else item.request_at,
        )
        if settled and callback is not None:
            await self._notify(item)

    async def _settle_together(
        self,
        item: OutboxItem,
        state: OutboxState,
        callback: Any,
        *,
        result: dict[str, Any] | None,
        errcode: int | None,
        error: str,
    ) -> bool:
        """Outcome and callback in one transaction; False (nothing written) when the
        callback failed, for the caller to record the outcome on its own."""
        outcome = _OUTCOMES.get(state)
        if outcome is None:
            return False
        before = {f: getattr(item, f) for f in _FINISHED_FIELDS}
        try:
            async with in_transaction() as conn:
                done = await bot_service.finish_outbox(
                    item=item,
                    state=state,
                    result=result,
                    errcode=errcode,
                    error=error,
                    request_at=None if state == OutboxState.DONE else item.request_at,
                    conn=conn,
                )
                if not done:
                    log.warning(
                        "outbox finish lost its claim",
                        extra={"outbox_id": item.id, "api": item.api, "outcome": state.value},
                    )
                    return True
                await callback(_settled(item, outcome), conn)
        except Exception:
            log.exception(
                "on-settled callback failed", extra={"outbox_id": item.id, "origin": item.origin}
            )
            for f, v in before.items():  # rolled back: the row is as it was
                setattr(item, f, v)
            return False
        return True

    async def notify_settled(self, *, limit: int = 50) -> int:
        """Retry on-settled callbacks that have not succeeded yet."""
        n = 0
        for item in await bot_service.outbox_needing_notify(limit=limit):
            n += int(await self._notify(item))
        return n

    async def _notify(self, item: OutboxItem) -> bool:
        callback = self.policies.settled_for(item.origin)
        outcome = _OUTCOMES.get(OutboxState(item.state))
        if callback is None or outcome is None:
            # Flagged without a callback to run (an operator's discard flags every
            # row): clear the flag, or such rows would fill every notify round.
            async with in_transaction() as conn:
                await bot_service.mark_outbox_notified(conn=conn, item_id=item.id)
            return False
        settled = _settled(item, outcome)
        try:
            async with in_transaction() as conn:
                if not await bot_service.mark_outbox_notified(conn=conn, item_id=item.id):
                    return False  # another dispatcher delivered it
                await callback(settled, conn)
        except Exception:
            log.exception(
                "on-settled callback failed", extra={"outbox_id": item.id, "origin": item.origin}
            )
            return False
        return True


def _settled(item: OutboxItem, outcome: Outcome) -> Settled:
    """What an origin's on-settled callback is told of its row."""
    return Settled(
        id=item.id,
        idem_key=item.idem_key,
        origin=item.origin,
        api=item.api,
        outcome=outcome,
        result=item.result,
        errcode=item.last_errcode,
        reason=item.last_error,
    )


#: What ``finish_outbox`` writes on the row object (restored when its transaction rolls back).
_FINISHED_FIELDS = (
    "state",
    "lease_until",
    "claim",
    "request_at",
    "last_errcode",
    "last_error",
    "updated_at",
    "result",
    "done_at",
    "settled_at",
    "notify_pending",
    "next_attempt_at",
)

_OUTCOMES: dict[OutboxState, Outcome] = {
    OutboxState.DONE: "sent",
    OutboxState.FAILED: "failed",
    OutboxState.CANCELLED: "cancelled",
}


async def reconcile_contacts(
    client: WeComClient, *, limit: int = 100, keyring: Keyring | None = None
) -> int:
    """Fetch customers whose externalcontact/get failed at intake.

    WeCom does not guarantee callback delivery and a fetch can fail, so the
    customer row is completed later rather than blocking intake.  With a keyring, the
    answer's follow_user entries also become the follow relations not stored yet (a
    customer first seen in the archive, whose add event never came): the advisors'
    books and the customer search know them.
    """
    fixed = 0
    for external_userid in await bot_service.customers_needing_sync(limit=limit):
        try:
            contact = await client.get_external_contact(external_userid)
        except WeComError as exc:
            log.info(
                "reconcile fetch failed",
                extra={"external_userid": external_userid, "errcode": exc.errcode},
            )
            continue
        async with in_transaction() as conn:
            customer = await bot_service.upsert_customer(
                conn=conn,
                external_userid=external_userid,
                contact=contact.get("external_contact"),
            )
            if keyring is not None:
                await bot_customers.do_store_missing_follows(
                    conn=conn, keyring=keyring, customer=customer, contact=contact
                )
        fixed += 1
    return fixed
