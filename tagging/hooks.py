"""What tagging does inside the storing transaction of the pipeline (no network).

``change_external_tag`` (a corp tag or group created, renamed, deleted or reordered
in WeCom) and ``edit_external_contact`` (an advisor changed a customer's tags, among
other things) only record a sync request, keyed by the event's natural key so a
redelivered callback asks once; the sync job calls WeCom after the commit.  A
relation that ends (``del_external_contact`` / ``del_follow_user``) takes the tags
that advisor set in WeCom with it, right here: nothing needs fetching for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from tortoise.backends.base.client import BaseDBAsyncClient

from bot.hooks import StoredEvent, StoredMessage
from tagging import flows, rules, service
from tagging.models import TagSource

_CONTACT_PULL = {"add_external_contact", "add_half_external_contact", "edit_external_contact"}
_RELATION_END = {"del_external_contact", "del_follow_user"}


async def on_messages(records: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
    # Auto-tag rules on a read's analysed messages (intent, sentiment, masked keywords).
    await rules.on_messages(records, conn)


async def on_event(record: StoredEvent, conn: BaseDBAsyncClient) -> None:
    await _sync_requests(record, conn)
    # After the sync bookkeeping: a rule on del_follow_user sees the relation's WeCom
    # tags already gone.
    await rules.on_event(record, conn)


async def _sync_requests(record: StoredEvent, conn: BaseDBAsyncClient) -> None:
    if record.event == "change_external_tag":
        await service.request_sync(
            conn=conn,
            key=f"event:{record.event_key}",
            kind="library",
            wecom_id=str(record.fields.get("Id") or ""),
            change_type=record.change_type,
        )
    elif record.event == "change_external_contact" and record.customer and record.advisor:
        if record.change_type in _CONTACT_PULL:
            await service.request_sync(
                conn=conn,
                key=f"event:{record.event_key}",
                kind="contact",
                wecom_id=record.customer,
                advisor_userid=record.advisor,
                change_type=record.change_type,
            )
        elif record.change_type in _RELATION_END:
            customer_id = await service.customer_id_of(conn=conn, external_userid=record.customer)
            if customer_id is None:
                return
            for ct in await service.wecom_tags_of_relation(
                conn=conn, customer_id=customer_id, advisor_userid=record.advisor
            ):
                await flows.untag_customer(
                    conn=conn,
                    external_userid=record.customer,
                    tag=ct.tag,
                    source=TagSource.WECOM,
                    actor_ref=f"wecom:{record.advisor}",
                    reason={"relation_ended": record.change_type, "event_id": record.id},
                    push=False,
                )
