"""Periodic work of the edge: the outbox dispatcher and the contact reconciler."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from bot import service as bot_service
from bot.models import OutboxItem, OutboxState
from bot.wecom.client import WeComClient, WeComError, WeComRateLimited
from core.metrics import Metrics
from core.settings import OutboxSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 15 * 60


@dataclass
class OutboxDispatcher:
    """Drains the outbox: each row is claimed by one dispatcher, sent, settled.

    A row is idempotent on WeCom's side where WeCom allows it (app messages use
    ``enable_duplicate_check``), and on ours by its unique business key.
    """

    client: WeComClient
    settings: OutboxSettings
    metrics: Metrics

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.dispatch_due()
            except Exception:  # noqa: BLE001 - the loop must outlive a DB hiccup
                log.exception("outbox dispatch failed")
                n = 0
            if n == 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_interval_s)
                except TimeoutError:
                    pass

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
        try:
            result = await self.client.call(item.api, json=item.payload, secret=item.secret_kind)
        except WeComRateLimited as exc:
            # 45009/45033: WeCom asks for at least a minute; not counted as a failure.
            await bot_service.finish_outbox(
                item=item, state=OutboxState.PENDING, errcode=exc.errcode, error=str(exc),
                retry_at=bot_service.now() + timedelta(seconds=max(exc.retry_after_s, 60)),
            )  # fmt: skip
            self.metrics.outbox_calls.labels(item.api, "rate_limited").inc()
            return
        except WeComError as exc:
            if exc.retryable and item.attempts < self.settings.max_attempts:
                delay = min(2 ** item.attempts, MAX_BACKOFF_S)
                await bot_service.finish_outbox(
                    item=item, state=OutboxState.PENDING, errcode=exc.errcode, error=str(exc),
                    retry_at=bot_service.now() + timedelta(seconds=delay),
                )  # fmt: skip
                self.metrics.outbox_calls.labels(item.api, "retry").inc()
            else:
                await bot_service.finish_outbox(
                    item=item, state=OutboxState.FAILED, errcode=exc.errcode, error=str(exc)
                )
                self.metrics.outbox_calls.labels(item.api, "failed").inc()
                log.error("outbox item failed", extra={"outbox_id": item.id, "api": item.api,
                                                       "errcode": exc.errcode})
            return
        await bot_service.finish_outbox(item=item, state=OutboxState.DONE, result=result)
        self.metrics.outbox_calls.labels(item.api, "done").inc()


async def reconcile_contacts(client: WeComClient, *, limit: int = 100) -> int:
    """Fetch customers whose externalcontact/get failed at intake.

    WeCom does not guarantee callback delivery and a fetch can fail, so the
    customer row is completed later rather than blocking intake.
    """
    from tortoise.transactions import in_transaction

    fixed = 0
    for external_userid in await bot_service.customers_needing_sync(limit=limit):
        try:
            contact = await client.get_external_contact(external_userid)
        except WeComError as exc:
            log.info("reconcile fetch failed", extra={"external_userid": external_userid,
                                                      "errcode": exc.errcode})
            continue
        async with in_transaction() as conn:
            await bot_service.upsert_customer(
                conn=conn, external_userid=external_userid,
                contact=contact.get("external_contact"),
            )  # fmt: skip
        fixed += 1
    return fixed
