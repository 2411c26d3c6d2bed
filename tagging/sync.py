"""Two-way sync of the tag library with WeCom's corp tags (企业客户标签).

Ways in:

- a **pull** (``externalcontact/get_corp_tag_list``, one call for the whole library)
  when the scheduler starts, on every ``change_external_tag`` callback (the hook only
  records a request; the job pulls — no network inside the storing transaction), and
  as the periodic **reconcile**, because WeCom does not guarantee callbacks and changes
  made through the API produce none;
- an advisor's tags on a customer (``edit_external_contact`` → ``externalcontact/get``,
  ``follow_user[].tags`` of type 1), per advisor relation.

Ways out are outbox rows (``tagging.flows``): ``add_corp_tag``, ``edit_corp_tag``,
``del_corp_tag``, ``mark_tag``; their on-settled callback links the ids WeCom assigned.

Conflict rule (see also ``tagging.flows``): WeCom wins for WeCom-origin groups and tags
and for tags advisors set in WeCom; siyu wins for siyu-origin groups marked
``sync_to_wecom`` (the reconcile pushes them back); siyu-only groups are never pushed.
A group or tag whose local change is still queued (``push_pending``) is left alone
by a pull until the write has settled.

Every run writes a ``SyncRun`` with the list of changes it made (the reconcile report),
and one audit entry.  WeCom's errors (45009 rate limit, -1 busy, 40014 token) end the
run as failed with the errcode recorded; requests stay pending for the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import outbox
from bot import service as bot_service
from bot.wecom.client import WeComClient, WeComError
from core import audit
from core.audit import Actor
from tagging import flows, service
from tagging.models import CustomerTag, Origin, Tag, TagGroup, TagSource

log = logging.getLogger(__name__)

SYNC_ACTOR = Actor.system("tagging.sync")
#: Customers whose advisor tags one tick fetches (one ``externalcontact/get`` each).
CONTACT_BATCH = 50


@dataclass
class Report:
    """What a run changed, as plain rows for the run record and the console."""

    changes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, what: str, **ids: Any) -> None:
        self.changes.append({"change": what, **ids})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c["change"]] = out.get(c["change"], 0) + 1
        return out


# ---------------------------------------------------------------- the library


def _repair_key() -> str:
    """A repair's own outbox key: one per reconcile run and object (milliseconds)."""
    return f"r{int(service.now().timestamp() * 1000)}"


async def apply_library(
    *,
    conn: BaseDBAsyncClient,
    tag_groups: Sequence[Mapping[str, Any]],
    repair: bool,
    report: Report,
) -> None:
    """Make the local library agree with WeCom's full ``tag_group`` list (see module doc)."""
    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    for g in tag_groups:
        gid = str(g.get("group_id") or "")
        if not gid:
            continue
        seen_groups.add(gid)
        group = await _match_group(conn=conn, g=g, report=report)
        for t in g.get("tag") or []:
            tid = str(t.get("id") or "")
            if not tid:
                continue
            seen_tags.add(tid)
            await _match_tag(conn=conn, group=group, t=t, repair=repair, report=report)
    # Linked rows WeCom no longer has were deleted there.
    for group in await service.live_groups(conn=conn):
        if (
            group.wecom_group_id
            and group.wecom_group_id not in seen_groups
            and not group.push_pending
        ):
            await _wecom_deleted_group(conn=conn, group=group, report=report)
    for tag in await service.live_tags(conn=conn):
        if tag.wecom_tag_id and tag.wecom_tag_id not in seen_tags and not tag.push_pending:
            if tag.group.origin == Origin.SIYU:
                # siyu wins for its own synced groups: WeCom lost the tag; it is pushed
                # again now (reconcile) or by the next reconcile (a callback's pull).
                await service.update_tag(conn=conn, tag=tag, wecom_tag_id=None)
                report.add("tag_unlinked", tag_id=tag.id)
                if repair and await flows.push_new_tag(
                    conn=conn, tag=tag, group=tag.group, repair=_repair_key()
                ):
                    report.add("tag_pushed_again", tag_id=tag.id)
            else:
                removed = await flows._drop_tag(
                    conn=conn, tag=tag, actor_ref="wecom", source=TagSource.WECOM
                )
                report.add("tag_deleted", tag_id=tag.id, customers=removed)
    if repair:
        # Tags of synced groups WeCom has never seen (a push that failed or was lost).
        for tag in await service.live_tags(conn=conn):
            if not tag.wecom_tag_id and not tag.push_pending and flows._group_syncs(tag.group):
                if await flows.push_new_tag(
                    conn=conn, tag=tag, group=tag.group, repair=_repair_key()
                ):
                    report.add("tag_pushed", tag_id=tag.id)


async def _match_group(
    *, conn: BaseDBAsyncClient, g: Mapping[str, Any], report: Report
) -> TagGroup:
    gid = str(g["group_id"])
    name = str(g.get("group_name") or "")[:64]
    order = int(g.get("order") or 0)
    group = await service.group_by_wecom_id(conn=conn, wecom_group_id=gid)
    if group is None:
        group = await service.group_named(conn=conn, name=name)
        if group is not None and group.wecom_group_id is None:
            await service.update_group(
                conn=conn, group=group, wecom_group_id=gid, synced_at=service.now()
            )
            report.add("group_linked", group_id=group.id)
        else:
            strategy = g.get("strategy_id")
            group = await service.create_group(
                conn=conn,
                name=name,
                order=order,
                origin=Origin.WECOM,
                wecom_group_id=gid,
                strategy_id=None if strategy is None else int(strategy),
            )
            report.add("group_created", group_id=group.id)
            return group
    if group.deleted_at is not None:
        await service.update_group(conn=conn, group=group, deleted_at=None)
        report.add("group_restored", group_id=group.id)
    if group.push_pending:
        return group
    changes: dict[str, Any] = {}
    if group.name != name:
        changes["name"] = name
    if group.order != order:
        changes["order"] = order
    strategy = g.get("strategy_id")
    if strategy is not None and group.strategy_id != int(strategy):
        # A rule group (规则组) belongs to a strategy in WeCom: recorded, never pushed.
        await service.update_group(conn=conn, group=group, strategy_id=int(strategy))
    if changes:
        if group.origin == Origin.SIYU:
            await flows.push_edit(
                conn=conn,
                wecom_id=gid,
                name=group.name if "name" in changes else None,
                order=group.order if "order" in changes else None,
                key=f"tagging.group:{group.id}:{_repair_key()}",
            )
            await service.update_group(conn=conn, group=group, push_pending=True)
            report.add("group_pushed", group_id=group.id, fields=sorted(changes))
        else:
            await service.update_group(conn=conn, group=group, synced_at=service.now(), **changes)
            report.add("group_updated", group_id=group.id, fields=sorted(changes))
    return group


async def _match_tag(
    *,
    conn: BaseDBAsyncClient,
    group: TagGroup,
    t: Mapping[str, Any],
    repair: bool,
    report: Report,
) -> None:
    tid = str(t["id"])
    name = str(t.get("name") or "")[:64]
    order = int(t.get("order") or 0)
    tag = await service.tag_by_wecom_id(conn=conn, wecom_tag_id=tid)
    if tag is None:
        tag = await service.tag_named(conn=conn, group_id=group.id, name=name)
        if tag is not None and tag.wecom_tag_id is None:
            # Our own add landed (its answer was lost) or the same name exists on both sides.
            await service.update_tag(
                conn=conn, tag=tag, wecom_tag_id=tid, push_pending=False, synced_at=service.now()
            )
            report.add("tag_linked", tag_id=tag.id)
        else:
            tag = await service.create_tag(
                conn=conn,
                group=group,
                name=name,
                order=order,
                origin=Origin.WECOM,
                wecom_tag_id=tid,
            )
            report.add("tag_created", tag_id=tag.id)
            return
    if tag.deleted_at is not None or tag.push_pending:
        return
    changes: dict[str, Any] = {}
    if tag.group_id != group.id:  # type: ignore[attr-defined]
        changes["group_id"] = group.id
    if tag.name != name:
        changes["name"] = name
    if tag.order != order:
        changes["order"] = order
    if not changes:
        return
    if group.origin == Origin.SIYU and repair and "group_id" not in changes:
        await flows.push_edit(
            conn=conn,
            wecom_id=tid,
            name=tag.name if "name" in changes else None,
            order=tag.order if "order" in changes else None,
            key=f"tagging.tag:{tag.id}:{_repair_key()}",
        )
        await service.update_tag(conn=conn, tag=tag, push_pending=True)
        report.add("tag_pushed", tag_id=tag.id, fields=sorted(changes))
    elif group.origin == Origin.WECOM or "group_id" in changes:
        await service.update_tag(conn=conn, tag=tag, synced_at=service.now(), **changes)
        report.add("tag_updated", tag_id=tag.id, fields=sorted(changes))


async def _wecom_deleted_group(*, conn: BaseDBAsyncClient, group: TagGroup, report: Report) -> None:
    if group.origin == Origin.SIYU:
        # siyu's own synced group: keep it and push its tags again.
        await service.update_group(conn=conn, group=group, wecom_group_id=None)
        for tag in await service.live_tags(conn=conn, group_id=group.id):
            await service.update_tag(conn=conn, tag=tag, wecom_tag_id=None)
        report.add("group_unlinked", group_id=group.id)
        return
    removed = 0
    for tag in await service.live_tags(conn=conn, group_id=group.id):
        removed += await flows._drop_tag(
            conn=conn, tag=tag, actor_ref="wecom", source=TagSource.WECOM
        )
    await service.update_group(
        conn=conn, group=group, deleted_at=service.now(), wecom_group_id=None
    )
    report.add("group_deleted", group_id=group.id, customers=removed)


async def sync_library(*, client: WeComClient, kind: str = "pull", repair: bool = True) -> Report:
    """One pull (or reconcile) of the whole library; returns what it changed.

    Raises nothing for WeCom's errors: the run is recorded failed with the errcode.
    """
    run = await service.start_run(kind=kind)
    report = Report()
    try:
        answer = await client.get_corp_tag_list()
    except WeComError as exc:
        await service.finish_run(
            run=run, ok=False, changes=[], error=f"errcode {exc.errcode}: {exc.errmsg}"
        )
        log.warning("corp tag pull failed", extra={"errcode": exc.errcode, "run": run.id})
        raise
    async with in_transaction() as conn:
        await apply_library(
            conn=conn, tag_groups=answer.get("tag_group") or [], repair=repair, report=report
        )
        await audit.append(
            conn=conn,
            actor=SYNC_ACTOR,
            action=f"tagging.sync.{kind}",
            target=f"sync_run:{run.id}",
            detail={k: str(v) for k, v in report.counts().items()},
        )
    await service.finish_run(run=run, ok=True, changes=report.changes)
    log.info(
        "corp tags synced", extra={"run": run.id, "kind": kind, "changes": len(report.changes)}
    )
    return report


# ---------------------------------------------------------------- advisors' tags on customers


async def apply_contact_tags(
    *,
    conn: BaseDBAsyncClient,
    external_userid: str,
    follow_users: Sequence[Mapping[str, Any]],
    advisor_userid: str | None,
    report: Report,
    repair_key: str = "",
) -> list[str]:
    """Make the ``wecom``-source tags of each relation match ``follow_user[].tags``.

    With ``repair_key``, tags siyu applied (manual, rule, import) that a relation lacks
    in WeCom are marked again (siyu wins for its own applications; a lost or failed
    ``mark_tag`` is repaired here).  Returns WeCom tag ids no local tag has (the
    library needs a pull first).
    """
    customer = await bot_service.upsert_customer(conn=conn, external_userid=external_userid)
    unknown: list[str] = []
    for follow in follow_users:
        userid = str(follow.get("userid") or "")
        if not userid or (advisor_userid and userid != advisor_userid):
            continue
        ids = [
            str(t["tag_id"])
            for t in follow.get("tags") or []
            if t.get("tag_id") and int(t.get("type") or 1) == 1  # 1 = corp tag
        ]
        known = await service.tags_by_wecom_ids(conn=conn, wecom_tag_ids=ids)
        unknown += [i for i in ids if i not in known]
        current = await service.wecom_tags_of_relation(
            conn=conn, customer_id=customer.id, advisor_userid=userid
        )
        have = {ct.tag_id for ct in current}  # type: ignore[attr-defined]
        want = {t.id: t for t in known.values()}
        for tag_id, tag in want.items():
            if tag_id in have:
                continue
            change = await flows.tag_customer(
                conn=conn,
                external_userid=external_userid,
                tag=tag,
                source=TagSource.WECOM,
                applied_by=f"wecom:{userid}",
                reason={"advisor": userid},
                advisor_userid=userid,
                push=False,
            )
            if change.changed:
                report.add("customer_tag_added", tag_id=tag_id, advisor=userid)
        for ct in current:
            if ct.tag_id not in want:  # type: ignore[attr-defined]
                await flows.untag_customer(
                    conn=conn,
                    external_userid=external_userid,
                    tag=ct.tag,
                    source=TagSource.WECOM,
                    actor_ref=f"wecom:{userid}",
                    reason={"advisor": userid},
                    push=False,
                )
                report.add("customer_tag_removed", tag_id=ct.tag_id, advisor=userid)  # type: ignore[attr-defined]
        if repair_key:
            await _repair_marks(
                conn=conn,
                customer_id=customer.id,
                external_userid=external_userid,
                userid=userid,
                present=set(ids),
                repair_key=repair_key,
                report=report,
            )
    return unknown


async def _repair_marks(
    *,
    conn: BaseDBAsyncClient,
    customer_id: int,
    external_userid: str,
    userid: str,
    present: set[str],
    repair_key: str,
    report: Report,
) -> None:
    for ct in await service.siyu_tags_of_customer(conn=conn, customer_id=customer_id):
        tag = ct.tag
        if not tag.wecom_tag_id or tag.wecom_tag_id in present or tag.push_pending:
            continue
        if not flows._group_syncs(tag.group):
            continue
        queued = await flows.push_mark(
            conn=conn,
            history_key=f"add:{ct.id}",
            external_userid=external_userid,
            tag=tag,
            add=True,
            advisors=[userid],
            key_suffix=repair_key,
        )
        if queued:
            report.add("customer_tag_marked_again", tag_id=tag.id, advisor=userid)


async def sync_contacts(*, client: WeComClient, limit: int = CONTACT_BATCH) -> Report:
    """Pull the advisors' tags of customers named by callbacks (``edit_external_contact``)."""
    report = Report()
    pending = await service.pending_sync_requests(kind="contact", limit=limit)
    if not pending:
        return report
    run = await service.start_run(kind="contact")
    pulled_library = False
    done: list[int] = []
    error = ""
    for req in pending:
        try:
            answer = await client.get_external_contact(req.wecom_id)
        except WeComError as exc:
            if exc.errcode == 84061 or exc.errcode == 40096:
                # Not a contact (any more): nothing to pull; bot's events remove the relation.
                done.append(req.id)
                continue
            error = f"errcode {exc.errcode}: {exc.errmsg}"
            await service.finish_sync_requests(ids=[req.id], error=error)
            if exc.retryable:
                break  # rate limited or busy: the rest waits for the next tick
            continue
        follow = answer.get("follow_user") or []
        async with in_transaction() as conn:
            unknown = await apply_contact_tags(
                conn=conn,
                external_userid=req.wecom_id,
                follow_users=follow,
                advisor_userid=req.advisor_userid or None,
                report=report,
                repair_key=f"q{req.id}",
            )
        if unknown and not pulled_library:
            pulled_library = True
            try:
                await sync_library(client=client, kind="pull")
            except WeComError as exc:
                error = f"errcode {exc.errcode}: {exc.errmsg}"
                await service.finish_sync_requests(ids=[req.id], error=error)
                break
            async with in_transaction() as conn:
                await apply_contact_tags(
                    conn=conn,
                    external_userid=req.wecom_id,
                    follow_users=follow,
                    advisor_userid=req.advisor_userid or None,
                    report=report,
                )
        done.append(req.id)
    await service.finish_sync_requests(ids=done)
    await service.finish_run(run=run, ok=not error, changes=report.changes, error=error)
    return report


async def contact_requests_pending() -> bool:
    return bool(await service.pending_sync_requests(kind="contact", limit=1))


async def request_contact_reconcile(*, after: int, limit: int = CONTACT_BATCH) -> int:
    """Queue a tag check for the next ``limit`` followed customers after id ``after``.

    Callbacks are not guaranteed, so customers are also checked in rotation, at most
    once a day each (the request key holds the date) and a batch per tick, which keeps
    the ``externalcontact/get`` calls far inside WeCom's per-API limits.  Returns the
    last customer id looked at (0 when the rotation starts over).
    """
    rows = await service.followed_customers(after=after, limit=limit)
    if not rows:
        return 0
    day = service.now().date().isoformat()
    async with in_transaction() as conn:
        for _, ext in rows:
            await service.request_sync(
                conn=conn, key=f"reconcile:{ext}:{day}", kind="contact", wecom_id=ext
            )
    return rows[-1][0]


async def sync_requested_library(*, client: WeComClient) -> Report | None:
    """Callbacks said the library changed: one pull answers every pending request."""
    pending = await service.pending_sync_requests(kind="library", limit=1000)
    if not pending:
        return None
    ids = [r.id for r in pending]
    try:
        report = await sync_library(client=client, kind="pull", repair=False)
    except WeComError as exc:
        await service.finish_sync_requests(ids=ids, error=f"errcode {exc.errcode}")
        return None
    await service.finish_sync_requests(ids=ids)
    return report


# ---------------------------------------------------------------- outbox callbacks


async def before_tag_write(pending: outbox.PendingWrite) -> str | None:
    """A tag deleted (or its group unmarked) since the write was queued is not created."""
    parts = pending.origin.split(":")
    if len(parts) < 3 or parts[2] != "add":
        return None
    tag = await service.get_tag(tag_id=int(parts[1]))
    if tag is None:
        return "标签已删除，不再同步到企业微信"
    if not flows._group_syncs(tag.group):
        return "标签组已取消同步"
    return None


async def before_mark(pending: outbox.PendingWrite) -> str | None:
    """Re-check a queued ``mark_tag``: the customer tag may have changed since.

    A late add after a removal (or the reverse) would leave WeCom disagreeing with
    siyu, and a mark_tag is not undone by anyone else — so it is cancelled.
    """
    parts = pending.origin.split(":")  # tagging.mark:add|del:<customer tag id>
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    still_there = await CustomerTag.filter(id=int(parts[2])).exists()
    if parts[1] == "add" and not still_there:
        return "客户标签已移除，不再推送"
    if parts[1] == "del":
        wecom_ids = [str(t) for t in pending.payload.get("remove_tag") or []]
        ext = str(pending.payload.get("external_userid") or "")
        customer_id = await service.customer_id_of(external_userid=ext)
        if customer_id is not None and wecom_ids:
            again = await CustomerTag.filter(
                customer_id=customer_id, tag__wecom_tag_id__in=wecom_ids
            ).exists()
            if again:
                return "客户已重新打上此标签，不再移除"
    return None


async def on_tag_settled(settled: outbox.Settled, conn: BaseDBAsyncClient) -> None:
    """Link the ids WeCom gave a new tag (and its new group); clear ``push_pending``.

    Idempotent: linking the same ids twice changes nothing.
    """
    parts = settled.origin.split(":")
    kind, obj_id = parts[0], int(parts[1])
    if kind == "tagging.group":
        group = await TagGroup.get_or_none(id=obj_id, using_db=conn)
        if group is not None and group.push_pending:
            await service.update_group(conn=conn, group=group, push_pending=False)
        return
    tag = await Tag.get_or_none(id=obj_id, using_db=conn)
    if tag is None:
        return
    changes: dict[str, Any] = {"push_pending": False}
    if settled.outcome == "sent" and parts[2] == "add" and settled.result:
        g = settled.result.get("tag_group") or {}
        created = {str(t.get("name")): str(t.get("id")) for t in g.get("tag") or []}
        if tag.name in created and not tag.wecom_tag_id:
            changes["wecom_tag_id"] = created[tag.name]
            changes["synced_at"] = service.now()
        group = await TagGroup.get(id=tag.group_id, using_db=conn)  # type: ignore[attr-defined]
        if g.get("group_id") and not group.wecom_group_id:
            await service.update_group(
                conn=conn, group=group, wecom_group_id=str(g["group_id"]), synced_at=service.now()
            )
    elif settled.outcome != "sent":
        log.warning(
            "corp tag write not applied",
            extra={"tag_id": tag.id, "errcode": settled.errcode, "outcome": settled.outcome},
        )
    await service.update_tag(conn=conn, tag=tag, **changes)
