"""Use cases of the tag library: ``check_*`` validate, ``do_*`` change state.

Each ``do_*`` owns its transaction and writes its audit entry in it (``core.audit``),
so a change never commits without its record.  A change WeCom must learn is an
outbox row in the same transaction (``bot.outbox``): it reaches WeCom after the
commit, or not at all if the change rolled back.

Conflict rule with WeCom's corp tag library (also in ``tagging.sync``):

- A group created in siyu stays in siyu unless it is marked ``sync_to_wecom``; its
  tags then go to WeCom and siyu's values win a disagreement (the reconcile job
  pushes them back).
- A group or tag that came from WeCom follows WeCom: a pull overwrites local
  values, except while a local edit of it is still on its way (``push_pending``).
- A customer tag an advisor set in WeCom (``source=wecom``) follows WeCom for that
  advisor relation; tags siyu applied (manual, rule, import) are pushed with
  ``mark_tag`` to every active relation of the customer and are not removed by a pull.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import outbox
from bot import service as bot_service
from core import audit
from core.audit import Actor
from tagging import service
from tagging.models import CustomerTag, Origin, Tag, TagGroup, TagSource
from tagging.schemas import GroupEdit, GroupIn, TagEdit, TagIn

log = logging.getLogger(__name__)


class TaggingError(ValueError):
    """Bad input or a state that refuses the change; nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(TaggingError):
    def __init__(self, what: str) -> None:
        super().__init__("not_found", f"{what} not found")


# ---------------------------------------------------------------- push helpers


def _group_syncs(group: TagGroup) -> bool:
    return group.origin == Origin.WECOM or group.sync_to_wecom


async def push_new_tag(
    *, conn: BaseDBAsyncClient, tag: Tag, group: TagGroup, repair: str = ""
) -> bool:
    """Queue ``add_corp_tag`` for a tag of a synced group; False when it stays local.

    WeCom holds no empty group, so a new siyu group reaches WeCom with its first tag
    (``group_name``); later tags go into it by ``group_id`` once that is known.
    """
    if not _group_syncs(group) or tag.wecom_tag_id:
        return False
    write = outbox.add_corp_tag(
        tags=[{"name": tag.name, "order": tag.order}],
        group_id=group.wecom_group_id,
        group_name=None if group.wecom_group_id else group.name,
        order=None if group.wecom_group_id else group.order,
    )
    # A repair (the first push failed or was lost) is a new write with a key of its own.
    key = f"tagging.tag:{tag.id}:add" + (f":{repair}" if repair else "")
    queued = await outbox.enqueue(conn, idem_key=key, write=write, origin=key)
    if queued is not None:
        tag.push_pending = True
        await tag.save(using_db=conn, update_fields=["push_pending", "updated_at"])
    return queued is not None


async def push_edit(
    *, conn: BaseDBAsyncClient, wecom_id: str, name: str | None, order: int | None, key: str
) -> None:
    await outbox.enqueue(
        conn,
        idem_key=f"{key}:edit",
        write=outbox.edit_corp_tag(id=wecom_id, name=name, order=order),
        origin=f"{key}:edit",
    )


async def push_mark(
    *,
    conn: BaseDBAsyncClient,
    history_key: str,
    external_userid: str,
    tag: Tag,
    add: bool,
    advisors: Sequence[str] | None = None,
    key_suffix: str = "",
) -> int:
    """``mark_tag`` for each advisor relation of the customer; the number of rows queued.

    WeCom tags live on a relation (an advisor's view of the customer), so one siyu tag
    is one call per active relation.  A tag WeCom does not know yet (its add is still
    queued) is not marked now: the reconcile job marks it once it is linked.
    """
    if not tag.wecom_tag_id:
        return 0
    if advisors is None:
        advisors = await bot_service.advisors_following(conn=conn, external_userid=external_userid)
    n = 0
    for userid in advisors:
        write = outbox.mark_tag(
            userid=userid,
            external_userid=external_userid,
            add_tag=[tag.wecom_tag_id] if add else (),
            remove_tag=() if add else [tag.wecom_tag_id],
        )
        key = f"tagging.mark:{history_key}:{userid}" + (f":{key_suffix}" if key_suffix else "")
        key = key[:160]
        if await outbox.enqueue(
            conn, idem_key=key, write=write, origin=f"tagging.mark:{history_key}"[:96]
        ):
            n += 1
    return n


# ---------------------------------------------------------------- library


async def do_create_group(*, spec: GroupIn, actor: Actor) -> TagGroup:
    async with in_transaction() as conn:
        if await service.group_named(conn=conn, name=spec.name):
            raise TaggingError("duplicate_name", f"a tag group named {spec.name!r} exists")
        group = await service.create_group(
            conn=conn,
            name=spec.name,
            order=spec.order,
            colour=spec.colour,
            description=spec.description,
            owner=spec.owner or actor.ref,
            sync_to_wecom=spec.sync_to_wecom,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.group.create",
            target=f"tag_group:{group.id}",
            detail={"sync_to_wecom": spec.sync_to_wecom},
        )
    return group


async def do_edit_group(*, group_id: int, edit: GroupEdit, actor: Actor) -> TagGroup:
    changes = edit.changes()
    if not changes:
        raise TaggingError("nothing_to_change", "give at least one field to change")
    async with in_transaction() as conn:
        group = await service.get_group(conn=conn, group_id=group_id)
        if group is None:
            raise NotFound(f"tag group {group_id}")
        if "name" in changes and changes["name"] != group.name:
            if await service.group_named(conn=conn, name=changes["name"]):
                raise TaggingError(
                    "duplicate_name", f"a tag group named {changes['name']!r} exists"
                )
        if changes.get("sync_to_wecom") is False and group.origin == Origin.WECOM:
            raise TaggingError("wecom_group", "a group that came from WeCom always syncs")
        wecom_visible = {
            k: v for k, v in changes.items() if k in ("name", "order") and getattr(group, k) != v
        }
        newly_synced = changes.get("sync_to_wecom") is True and not group.sync_to_wecom
        await service.update_group(conn=conn, group=group, **changes)
        record = await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.group.edit",
            target=f"tag_group:{group.id}",
            detail={"fields": sorted(changes)},
        )
        if wecom_visible and group.wecom_group_id and _group_syncs(group):
            await push_edit(
                conn=conn,
                wecom_id=group.wecom_group_id,
                name=wecom_visible.get("name"),
                order=wecom_visible.get("order"),
                key=f"tagging.group:{group.id}:{record.seq}",
            )
            await service.update_group(conn=conn, group=group, push_pending=True)
        if newly_synced:
            # Marked to sync: its tags go to WeCom now (the group with the first one).
            for tag in await service.live_tags(conn=conn, group_id=group.id):
                await push_new_tag(conn=conn, tag=tag, group=group, repair=f"s{record.seq}")
    return group


async def do_delete_group(*, group_id: int, actor: Actor) -> int:
    """Delete a group and its tags (customers lose them, recorded); WeCom told if it syncs."""
    async with in_transaction() as conn:
        group = await service.get_group(conn=conn, group_id=group_id)
        if group is None:
            raise NotFound(f"tag group {group_id}")
        removed = 0
        for tag in await service.live_tags(conn=conn, group_id=group.id):
            removed += await _drop_tag(
                conn=conn, tag=tag, actor_ref=actor.ref, source=TagSource.MANUAL
            )
        if group.wecom_group_id and _group_syncs(group):
            # Deleting a WeCom group deletes its tags there too (del_corp_tag).
            await outbox.enqueue(
                conn,
                idem_key=f"tagging.group:{group.id}:del",
                write=outbox.del_corp_tag(group_id=[group.wecom_group_id]),
                origin=f"tagging.group:{group.id}:del",
            )
        await service.update_group(
            conn=conn, group=group, deleted_at=service.now(), wecom_group_id=None
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.group.delete",
            target=f"tag_group:{group.id}",
            detail={"customers": removed},
        )
    return removed


async def do_create_tag(*, spec: TagIn, actor: Actor) -> Tag:
    async with in_transaction() as conn:
        group = await service.get_group(conn=conn, group_id=spec.group_id)
        if group is None:
            raise NotFound(f"tag group {spec.group_id}")
        if await service.tag_named(conn=conn, group_id=group.id, name=spec.name):
            raise TaggingError(
                "duplicate_name", f"group {group.name!r} already has a tag {spec.name!r}"
            )
        tag = await service.create_tag(
            conn=conn,
            group=group,
            name=spec.name,
            order=spec.order,
            colour=spec.colour,
            description=spec.description,
            owner=spec.owner or actor.ref,
        )
        pushed = await push_new_tag(conn=conn, tag=tag, group=group)
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.tag.create",
            target=f"tag:{tag.id}",
            detail={"group_id": group.id, "pushed": pushed},
        )
    return tag


async def do_edit_tag(*, tag_id: int, edit: TagEdit, actor: Actor) -> Tag:
    changes = edit.changes()
    if not changes:
        raise TaggingError("nothing_to_change", "give at least one field to change")
    async with in_transaction() as conn:
        tag = await service.get_tag(conn=conn, tag_id=tag_id)
        if tag is None:
            raise NotFound(f"tag {tag_id}")
        if "name" in changes and changes["name"] != tag.name:
            if await service.tag_named(conn=conn, group_id=tag.group_id, name=changes["name"]):  # type: ignore[attr-defined]
                raise TaggingError(
                    "duplicate_name", f"the group already has a tag {changes['name']!r}"
                )
        wecom_visible = {
            k: v for k, v in changes.items() if k in ("name", "order") and getattr(tag, k) != v
        }
        await service.update_tag(conn=conn, tag=tag, **changes)
        record = await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.tag.edit",
            target=f"tag:{tag.id}",
            detail={"fields": sorted(changes)},
        )
        if wecom_visible and tag.wecom_tag_id and _group_syncs(tag.group):
            await push_edit(
                conn=conn,
                wecom_id=tag.wecom_tag_id,
                name=wecom_visible.get("name"),
                order=wecom_visible.get("order"),
                key=f"tagging.tag:{tag.id}:{record.seq}",
            )
            await service.update_tag(conn=conn, tag=tag, push_pending=True)
    return tag


async def do_delete_tag(*, tag_id: int, actor: Actor) -> int:
    """Delete a tag: its customers lose it (recorded), WeCom is told if it knows the tag.

    Returns how many customers lost it.
    """
    async with in_transaction() as conn:
        tag = await service.get_tag(conn=conn, tag_id=tag_id)
        if tag is None:
            raise NotFound(f"tag {tag_id}")
        wecom_tag_id = tag.wecom_tag_id  # _drop_tag unlinks it
        removed = await _drop_tag(conn=conn, tag=tag, actor_ref=actor.ref, source=TagSource.MANUAL)
        if wecom_tag_id and _group_syncs(tag.group):
            await outbox.enqueue(
                conn,
                idem_key=f"tagging.tag:{tag.id}:del",
                write=outbox.del_corp_tag(tag_id=[wecom_tag_id]),
                origin=f"tagging.tag:{tag.id}:del",
            )
        await audit.append(
            conn=conn,
            actor=actor,
            action="tagging.tag.delete",
            target=f"tag:{tag.id}",
            detail={"customers": removed},
        )
    return removed


async def _drop_tag(*, conn: BaseDBAsyncClient, tag: Tag, actor_ref: str, source: TagSource) -> int:
    """Soft-delete ``tag``; every customer carrying it loses it, with a history entry."""
    removed = 0
    for row in await service.customers_with_tag(conn=conn, tag_id=tag.id):
        if await service.remove_customer_tag(
            conn=conn,
            customer_id=row.customer_id,  # type: ignore[attr-defined]
            tag_id=tag.id,
            source=source,
            actor=actor_ref,
            reason={"tag_deleted": True},
        ):
            removed += 1
    await service.update_tag(conn=conn, tag=tag, deleted_at=service.now(), wecom_tag_id=None)
    return removed


# ---------------------------------------------------------------- customer tags


def _note(reason: str) -> dict[str, Any]:
    """An operator's reason as kept: personal numbers masked (PIPL art. 51), like
    stored message text — operators paste what the customer told them."""
    from compliance_nlp.pii import find_pii, mask_pii

    text = " ".join(reason.split())
    return {"note": mask_pii(text, find_pii(text))} if text else {}


@dataclass(frozen=True)
class TagChange:
    """What tagging a customer did: whether it changed anything, and the WeCom writes queued."""

    changed: bool
    marks_queued: int


async def tag_customer(
    *,
    conn: BaseDBAsyncClient,
    external_userid: str,
    tag: Tag,
    source: TagSource,
    applied_by: str,
    reason: Mapping[str, Any] | None = None,
    advisor_userid: str | None = None,
    expires_at: datetime | None = None,
    push: bool = True,
    customer_id: int | None = None,
) -> TagChange:
    """Tag a customer inside the caller's transaction (flows, hooks and sync share it).

    The customer must be known (``bot`` stores every contact it hears of): an unknown
    id is refused, never created here.  ``customer_id``: the row id when the caller
    has it already (a rule streaming over customers), saving a lookup.
    """
    customer_id = await _known_customer(conn, external_userid, customer_id)
    row = await service.apply_customer_tag(
        conn=conn,
        customer_id=customer_id,
        tag_id=tag.id,
        source=source,
        applied_by=applied_by,
        reason=reason,
        advisor_userid=advisor_userid,
        expires_at=expires_at,
    )
    if row is None:
        return TagChange(False, 0)
    return TagChange(
        True, await _push_change(conn, f"add:{row.id}", external_userid, tag, source, push, True)
    )


async def untag_customer(
    *,
    conn: BaseDBAsyncClient,
    external_userid: str,
    tag: Tag,
    source: TagSource,
    actor_ref: str,
    reason: Mapping[str, Any] | None = None,
    push: bool = True,
    customer_id: int | None = None,
) -> TagChange:
    customer_id = await _known_customer(conn, external_userid, customer_id)
    row = await service.remove_customer_tag(
        conn=conn,
        customer_id=customer_id,
        tag_id=tag.id,
        source=source,
        actor=actor_ref,
        reason=reason,
    )
    if row is None:
        return TagChange(False, 0)
    return TagChange(
        True, await _push_change(conn, f"del:{row.id}", external_userid, tag, source, push, False)
    )


async def _known_customer(
    conn: BaseDBAsyncClient, external_userid: str, customer_id: int | None
) -> int:
    """The customer's row id; an unknown id is refused, never created here."""
    if customer_id is None:
        customer_id = await service.customer_id_of(conn=conn, external_userid=external_userid)
    if customer_id is None:
        raise NotFound("customer")
    return customer_id


async def _push_change(
    conn: BaseDBAsyncClient,
    history_key: str,
    external_userid: str,
    tag: Tag,
    source: TagSource,
    push: bool,
    add: bool,
) -> int:
    """mark_tag rows queued for a change WeCom does not know of yet (not WeCom's own)."""
    if not push or source == TagSource.WECOM or not _group_syncs(await tag.group):
        return 0
    return await push_mark(
        conn=conn, history_key=history_key, external_userid=external_userid, tag=tag, add=add
    )


async def do_tag_customer(
    *, external_userid: str, tag_id: int, actor: Actor, reason: str = ""
) -> TagChange:
    """An operator tags a customer (source ``manual``)."""
    async with in_transaction() as conn:
        tag = await service.get_tag(conn=conn, tag_id=tag_id)
        if tag is None:
            raise NotFound(f"tag {tag_id}")
        change = await tag_customer(
            conn=conn,
            external_userid=external_userid,
            tag=tag,
            source=TagSource.MANUAL,
            applied_by=actor.ref,
            reason=_note(reason),
        )
        if change.changed:
            await audit.append(
                conn=conn,
                actor=actor,
                action="tagging.customer_tag.add",
                target=f"customer:{outbox.mask_external_userid(external_userid)}",
                detail={"tag_id": tag.id, "marks": change.marks_queued},
            )
    return change


async def do_untag_customer(
    *, external_userid: str, tag_id: int, actor: Actor, reason: str = ""
) -> TagChange:
    async with in_transaction() as conn:
        tag = await service.get_tag(conn=conn, tag_id=tag_id)
        if tag is None:
            raise NotFound(f"tag {tag_id}")
        change = await untag_customer(
            conn=conn,
            external_userid=external_userid,
            tag=tag,
            source=TagSource.MANUAL,
            actor_ref=actor.ref,
            reason=_note(reason),
        )
        if change.changed:
            await audit.append(
                conn=conn,
                actor=actor,
                action="tagging.customer_tag.remove",
                target=f"customer:{outbox.mask_external_userid(external_userid)}",
                detail={"tag_id": tag.id, "marks": change.marks_queued},
            )
    return change


async def customer_tags(*, external_userid: str) -> list[CustomerTag]:
    customer_id = await service.customer_id_of(external_userid=external_userid)
    if customer_id is None:
        raise NotFound("customer")
    return await service.tags_of_customer(customer_id=customer_id)


# ---------------------------------------------------------------- audiences


async def check_audience(*, expr: str) -> Any:
    """Parse and compile ``expr`` (unknown tags and attributes refused); no side effects."""
    from tortoise import Tortoise

    from tagging import audience

    node = audience.parse(expr)
    await audience.where_clause(node, conn=Tortoise.get_connection("default"))
    return node


async def do_save_audience(*, name: str, expr: str, actor: Actor) -> Any:
    """Save (or replace) a named audience; the expression is checked first."""
    await check_audience(expr=expr)
    async with in_transaction() as conn:
        saved = await service.save_audience(conn=conn, name=name, expr=expr, created_by=actor.ref)
        await audit.append(
            conn=conn, actor=actor, action="tagging.audience.save", target=f"audience:{saved.id}"
        )
    return saved
