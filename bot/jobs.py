"""Periodic work of the edge: the outbox dispatcher and the contact reconciler."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tortoise.transactions import in_transaction

from bot import service as bot_service
from bot.models import OutboxItem, OutboxState
from bot.outbox import NO_POLICIES, OutboxPolicies, Outcome, PendingWrite, Settled
from bot.wecom.client import WeComClient, WeComError, WeComRateLimited
from core.metrics import Metrics
from core.settings import OutboxSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 15 * 60


@dataclass
class OutboxDispatcher:
    """Drains the outbox: each row is claimed by one dispatcher, checked, sent, settled.

    A row is idempotent on WeCom's side where WeCom allows it (app messages use
    ``enable_duplicate_check``), and on ours by its unique business key.  Run by
    ``core.jobs.PeriodicJob``: a tick that sent something runs again at once.
    """

    client: WeComClient
    settings: OutboxSettings
    metrics: Metrics
    policies: OutboxPolicies = NO_POLICIES

    async def tick(self) -> int:
        return await self.dispatch_due() + await self.notify_settled()

    async def dispatch_due(self, *, limit: int = 50) -> int:
        at = bot_service.now()
        sent = 0
        for item_id in await bot_service.due_outbox_ids(at=at, limit=limit):
            item = await bot_service.claim_outbox(
                item_id=item_id, at=at, lease=timedelta(seconds=self.settings.lease_s)
            )
            if item is None:
                continue  # another dispatcher took it
            await self.send(item)
            sent += 1
        return sent

    async def send(self, item: OutboxItem) -> None:
        if await self._cancelled_by_check(item):
            return
        try:
            result = await self.client.call(item.api, json=item.payload, secret=item.secret_kind)
        except WeComRateLimited as exc:
            # 45009/45033: WeCom asks for at least a minute; not counted as a failure.
            await bot_service.finish_outbox(
                item=item,
                state=OutboxState.PENDING,
                errcode=exc.errcode,
                error=str(exc),
                retry_at=bot_service.now() + timedelta(seconds=max(exc.retry_after_s, 60)),
            )
            self.metrics.outbox_calls.labels(item.api, "rate_limited").inc()
            return
        except WeComError as exc:
            if exc.retryable and item.attempts < self.settings.max_attempts:
                delay = min(2**item.attempts, MAX_BACKOFF_S)
                await bot_service.finish_outbox(
                    item=item,
                    state=OutboxState.PENDING,
                    errcode=exc.errcode,
                    error=str(exc),
                    retry_at=bot_service.now() + timedelta(seconds=delay),
                )
                self.metrics.outbox_calls.labels(item.api, "retry").inc()
            else:
                await self._settle(item, OutboxState.FAILED, errcode=exc.errcode, error=str(exc))
                self.metrics.outbox_calls.labels(item.api, "failed").inc()
                log.error(
                    "outbox item failed",
                    extra={"outbox_id": item.id, "api": item.api, "errcode": exc.errcode},
                )
            return
        await self._settle(item, OutboxState.DONE, result=result)
        self.metrics.outbox_calls.labels(item.api, "done").inc()

    async def _cancelled_by_check(self, item: OutboxItem) -> bool:
        """Re-check at send time; True when the row was cancelled (or put back)."""
        check = self.policies.check_for(item.origin)
        if check is None:
            return False
        try:
            reason = await check(
                PendingWrite(
                    id=item.id,
                    idem_key=item.idem_key,
                    origin=item.origin,
                    api=item.api,
                    payload=item.payload,
                    attempts=item.attempts,
                )
            )
        except Exception as exc:
            log.exception(
                "before-send check failed", extra={"outbox_id": item.id, "origin": item.origin}
            )
            delay = min(2**item.attempts, MAX_BACKOFF_S)
            await bot_service.finish_outbox(
                item=item,
                state=OutboxState.PENDING,
                error=f"before-send check: {exc!r}",
                retry_at=bot_service.now() + timedelta(seconds=delay),
            )
            return True
        if reason is None:
            return False
        await self._settle(item, OutboxState.CANCELLED, error=reason)
        self.metrics.outbox_calls.labels(item.api, "cancelled").inc()
        log.info("outbox item cancelled", extra={"outbox_id": item.id, "origin": item.origin})
        return True

    async def _settle(
        self,
        item: OutboxItem,
        state: OutboxState,
        *,
        result: dict[str, Any] | None = None,
        errcode: int | None = None,
        error: str = "",
    ) -> None:
        # The state commits first; the callback follows in its own transaction and is
        # retried until it succeeds, so an outcome is never lost to a failing callback.
        callback = self.policies.settled_for(item.origin)
        await bot_service.finish_outbox(
            item=item,
            state=state,
            result=result,
            errcode=errcode,
            error=error,
            notify=callback is not None,
        )
        if callback is not None:
            await self._notify(item)

    async def notify_settled(self, *, limit: int = 50) -> int:
        """Retry on-settled callbacks that have not succeeded yet."""
        n = 0
        for item in await bot_service.outbox_needing_notify(limit=limit):
            n += int(await self._notify(item))
        return n

    async def _notify(self, item: OutboxItem) -> bool:
        callback = self.policies.settled_for(item.origin)
        if callback is None:
            return False
        outcome: Outcome = _OUTCOMES[OutboxState(item.state)]
        settled = Settled(
            id=item.id,
            idem_key=item.idem_key,
            origin=item.origin,
            api=item.api,
            outcome=outcome,
            result=item.result,
            errcode=item.last_errcode,
            reason=item.last_error,
        )
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


_OUTCOMES: dict[OutboxState, Outcome] = {
    OutboxState.DONE: "sent",
    OutboxState.FAILED: "failed",
    OutboxState.CANCELLED: "cancelled",
}


async def reconcile_contacts(client: WeComClient, *, limit: int = 100) -> int:
    """Fetch customers whose externalcontact/get failed at intake.

    WeCom does not guarantee callback delivery and a fetch can fail, so the
    customer row is completed later rather than blocking intake.
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
            await bot_service.upsert_customer(
                conn=conn,
                external_userid=external_userid,
                contact=contact.get("external_contact"),
            )
        fixed += 1
    return fixed
