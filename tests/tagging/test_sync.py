"""Two-way sync with WeCom's corp tags, every path against the sandbox (errors and limits too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from bot.hooks import StoredEvent, frozen_fields
from bot.outbox import OutboxPolicies
from bot.wecom.client import WeComError, WeComRateLimited
from core.audit import Actor
from core.models import AuditEntry
from siyu.domains import DOMAINS
from tagging import flows, hooks, service, sync
from tagging.jobs import TagSyncJob
from tagging.models import CustomerTag, Origin, SyncRequest, SyncRun, TagSource
from tagging.schemas import GroupEdit, GroupIn, TagEdit, TagIn
from tests.bot.outbox_fakes import FakeCorp, start_fake_corp

OPS = Actor("operator", "7", "运营小王")
POLICIES = OutboxPolicies.from_domains(DOMAINS)


@pytest.fixture
async def corp(redis_client: aioredis.Redis, db: None) -> AsyncIterator[FakeCorp]:
    fake, close = await start_fake_corp(redis_client)
    try:
        yield fake
    finally:
        await close()


def wecom_library(corp: FakeCorp) -> dict[str, list[str]]:
    return {
        g.group_name: [t.name for t in g.tags]
        for g in sorted(corp.state.tag_groups.values(), key=lambda g: g.order)
    }


async def local_library() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in await service.live_groups():
        out[g.name] = [t.name for t in await service.live_tags(group_id=g.id)]
    return out


async def drain(corp: FakeCorp) -> int:
    dispatcher = corp.dispatcher(policies=POLICIES)
    total = 0
    while n := await dispatcher.tick():
        total += n
    return total


def event(
    event_key: str,
    event: str,
    change_type: str,
    *,
    fields: dict[str, Any] | None = None,
    customer: str | None = None,
    advisor: str | None = None,
) -> StoredEvent:
    return StoredEvent(
        id=1,
        event_key=event_key,
        kind="event",
        event=event,
        change_type=change_type,
        occurred_at=datetime.now(UTC),
        fields=frozen_fields(fields or {}),
        customer=customer,
        advisor=advisor,
        state=None,
        welcome_code=None,
    )


async def run_hook(record: StoredEvent) -> None:
    async with in_transaction() as conn:
        await hooks.on_event(record, conn)


async def test_full_pull_brings_the_corp_library_in_and_is_idempotent(corp: FakeCorp) -> None:
    report = await sync.sync_library(client=corp.client(), kind="pull")
    assert await local_library() == wecom_library(corp)
    counts = report.counts()
    assert counts["group_created"] == len(corp.state.tag_groups)
    groups = await service.live_groups()
    assert all(g.origin == Origin.WECOM and g.wecom_group_id for g in groups)
    again = await sync.sync_library(client=corp.client(), kind="pull")
    assert again.changes == []  # nothing to change the second time
    run = await service.last_run(kind="pull")
    assert run is not None and run.ok and run.changes == []
    assert await AuditEntry.filter(action="tagging.sync.pull").count() == 2


async def test_a_tag_created_in_siyu_reaches_wecom_and_is_linked(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    group = (await service.live_groups())[0]
    tag = await flows.do_create_tag(spec=TagIn(group_id=group.id, name="新客户"), actor=OPS)
    assert tag.push_pending
    assert await drain(corp) >= 1
    assert "新客户" in wecom_library(corp)[group.name]
    stored = await service.get_tag(tag_id=tag.id)
    assert stored is not None and not stored.push_pending
    wecom_tag = next(
        t for g in corp.state.tag_groups.values() for t in g.tags if t.name == "新客户"
    )
    assert stored.wecom_tag_id == wecom_tag.id

    # An edit and a delete follow it.
    await flows.do_edit_tag(tag_id=tag.id, edit=TagEdit(name="新开户客户"), actor=OPS)
    await drain(corp)
    assert "新开户客户" in wecom_library(corp)[group.name]
    await flows.do_delete_tag(tag_id=tag.id, actor=OPS)
    await drain(corp)
    assert corp.state.find_tag(wecom_tag.id) is None


async def test_siyu_only_groups_stay_local_and_marked_groups_are_created_in_wecom(
    corp: FakeCorp,
) -> None:
    local = await flows.do_create_group(spec=GroupIn(name="内部备注"), actor=OPS)
    await flows.do_create_tag(spec=TagIn(group_id=local.id, name="只在本地"), actor=OPS)
    shared = await flows.do_create_group(
        spec=GroupIn(name="养老规划", sync_to_wecom=True), actor=OPS
    )
    await flows.do_create_tag(spec=TagIn(group_id=shared.id, name="关注养老"), actor=OPS)
    await drain(corp)
    assert "内部备注" not in wecom_library(corp)
    assert wecom_library(corp)["养老规划"] == ["关注养老"]
    linked = await service.get_group(conn=None, group_id=shared.id)  # type: ignore[arg-type]
    assert linked is not None and linked.wecom_group_id
    # A reconcile does not push the local-only group either, nor duplicate the shared one.
    await sync.sync_library(client=corp.client(), kind="reconcile")
    await drain(corp)
    assert "内部备注" not in wecom_library(corp)
    assert wecom_library(corp)["养老规划"] == ["关注养老"]
    assert (await local_library())["养老规划"] == ["关注养老"]


async def test_change_external_tag_callback_pulls_wecom_changes(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    wecom_group = next(iter(corp.state.tag_groups.values()))
    renamed = wecom_group.tags[0]
    renamed.name = "钻石客户"
    removed = wecom_group.tags.pop()
    created = corp.state.add_tag_group("理财偏好", ["稳健", "进取"], order=9)

    # The hook records requests only (no network), once per event key.
    for key, change, wid in (
        ("k1", "update", renamed.id),
        ("k2", "delete", removed.id),
        ("k3", "create", created.group_id),
    ):
        ev = event(key, "change_external_tag", change, fields={"Id": wid, "TagType": "tag"})
        await run_hook(ev)
        await run_hook(ev)
    assert await SyncRequest.filter(done_at=None).count() == 3

    job = TagSyncJob(client=corp.client(), clock=lambda: 0.0, reconcile_every_s=3600)
    job._last_reconcile = 0.0  # as if the start-up pull had just run
    assert await job.tick() > 0
    assert await local_library() == wecom_library(corp)
    assert not await SyncRequest.filter(done_at=None).exists()


async def test_wecom_deleting_a_tag_removes_it_from_customers_with_history(
    corp: FakeCorp,
) -> None:
    await sync.sync_library(client=corp.client())
    userid = (
        "zhangwei"
        if "zhangwei" in corp.state.members
        else next(u for u, f in corp.state.follows.items() if f)
    )
    ext = corp.customer_of(userid)
    await run_hook(
        event(
            "c1", "change_external_contact", "edit_external_contact", customer=ext, advisor=userid
        )
    )
    await sync.sync_contacts(client=corp.client())
    rows = await CustomerTag.all().prefetch_related("tag")
    want = set(corp.state.follows[userid][ext].tags)
    assert {r.tag.wecom_tag_id for r in rows} == want
    assert all(r.source == TagSource.WECOM and r.advisor_userid == userid for r in rows)

    gone = next(iter(want))
    for g in corp.state.tag_groups.values():
        g.tags = [t for t in g.tags if t.id != gone]
    for rels in corp.state.follows.values():
        for info in rels.values():
            info.tags = [t for t in info.tags if t != gone]
    report = await sync.sync_library(client=corp.client(), kind="reconcile")
    assert report.counts().get("tag_deleted") == 1
    left = await CustomerTag.all().prefetch_related("tag")
    assert gone not in {r.tag.wecom_tag_id for r in left}
    removals = [h for h in await service.history_of_customer(customer_id=left[0].customer_id)]  # type: ignore[attr-defined]
    assert any(h.action == "remove" and h.actor == "wecom" for h in removals)
    run = await service.last_run(kind="reconcile")
    assert run is not None and run.ok and any(c["change"] == "tag_deleted" for c in run.changes)


async def test_advisor_tags_follow_wecom_per_relation(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    userid = next(u for u, f in corp.state.follows.items() if f)
    ext = corp.customer_of(userid)
    info = corp.state.follows[userid][ext]
    await run_hook(
        event(
            "c1", "change_external_contact", "edit_external_contact", customer=ext, advisor=userid
        )
    )
    await sync.sync_contacts(client=corp.client())
    assert await CustomerTag.all().count() == len(info.tags)

    # The advisor removes one tag and adds another in WeCom.
    dropped = info.tags.pop(0)
    added = next(
        t.id for g in corp.state.tag_groups.values() for t in g.tags if t.id not in info.tags
    )
    info.tags.append(added)
    await run_hook(
        event(
            "c2", "change_external_contact", "edit_external_contact", customer=ext, advisor=userid
        )
    )
    report = await sync.sync_contacts(client=corp.client())
    assert report.counts() == {"customer_tag_added": 1, "customer_tag_removed": 1}
    have = {r.tag.wecom_tag_id for r in await CustomerTag.all().prefetch_related("tag")}
    assert have == set(info.tags) and dropped not in have

    # The relation ends: the tags that advisor set go with it (no network needed).
    await run_hook(
        event("c3", "change_external_contact", "del_follow_user", customer=ext, advisor=userid)
    )
    assert not await CustomerTag.all().exists()


async def test_manual_customer_tag_is_marked_in_wecom_for_each_relation(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    userid = next(u for u, f in corp.state.follows.items() if f)
    ext = corp.customer_of(userid)
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        advisor = await bot_service.upsert_advisor(conn=conn, userid=userid)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=bot_models.RelationStatus.ACTIVE,
            at=bot_service.now(),
        )
    info = corp.state.follows[userid][ext]
    tag = next(t for t in await service.live_tags() if t.wecom_tag_id not in info.tags)
    change = await flows.do_tag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    assert change.marks_queued == 1
    await drain(corp)
    assert tag.wecom_tag_id in info.tags
    change = await flows.do_untag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    await drain(corp)
    assert tag.wecom_tag_id not in info.tags


async def test_rate_limit_and_errors_leave_requests_pending_and_are_reported(
    corp: FakeCorp,
) -> None:
    corp.state.inject("externalcontact/get_corp_tag_list", 45009)
    with pytest.raises(WeComRateLimited):
        await sync.sync_library(client=corp.client(), kind="reconcile")
    run = await SyncRun.filter(kind="reconcile").order_by("-id").first()
    assert run is not None and not run.ok and "45009" in run.error
    assert not await service.live_groups()  # nothing half-applied

    # The job keeps its requests for the next tick.
    await run_hook(event("t1", "change_external_tag", "create", fields={"Id": "x"}))
    corp.state.inject("externalcontact/get_corp_tag_list", 45009)
    job = TagSyncJob(client=corp.client(), clock=lambda: 0.0)
    assert await job.tick() == 0
    pending = await SyncRequest.filter(done_at=None)
    assert len(pending) == 1
    assert await job.tick() > 0  # the limit has passed: the start-up pull and the request
    assert not await SyncRequest.filter(done_at=None).exists()

    # A contact fetch refused with a rate limit stops the batch; the request waits.
    userid = next(u for u, f in corp.state.follows.items() if f)
    ext = corp.customer_of(userid)
    await run_hook(
        event(
            "c1", "change_external_contact", "edit_external_contact", customer=ext, advisor=userid
        )
    )
    corp.state.inject("externalcontact/get", 45009)
    await sync.sync_contacts(client=corp.client())
    req = await SyncRequest.get(key="event:c1")
    assert req.done_at is None and req.attempts == 1 and "45009" in req.last_error
    await sync.sync_contacts(client=corp.client())
    req = await SyncRequest.get(key="event:c1")
    assert req.done_at is not None


async def test_wecom_refusing_a_push_is_repaired_by_reconcile(corp: FakeCorp) -> None:
    shared = await flows.do_create_group(spec=GroupIn(name="活动", sync_to_wecom=True), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=shared.id, name="双十一"), actor=OPS)
    corp.state.inject("externalcontact/add_corp_tag", 40058)  # WeCom refuses this one
    await drain(corp)
    stored = await service.get_tag(tag_id=tag.id)
    assert stored is not None and not stored.push_pending and stored.wecom_tag_id is None
    row = await bot_models.OutboxItem.get(origin=f"tagging.tag:{tag.id}:add")
    assert row.state == "failed" and row.last_errcode == 40058

    # The reconcile finds the drift and queues the push again, under a new key.
    report = await sync.sync_library(client=corp.client(), kind="reconcile")
    assert report.counts().get("tag_pushed") == 1
    await drain(corp)
    assert "双十一" in wecom_library(corp).get("活动", [])


async def test_sandbox_refuses_overlong_names_with_40058(corp: FakeCorp) -> None:
    with pytest.raises(WeComError) as info:
        await corp.client().add_corp_tag(group_name="组", tags=[{"name": "长" * 31}])
    assert info.value.errcode == 40058


async def test_a_mark_overtaken_by_a_removal_is_cancelled_before_send(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    userid = next(u for u, f in corp.state.follows.items() if f)
    ext = corp.customer_of(userid)
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        advisor = await bot_service.upsert_advisor(conn=conn, userid=userid)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=bot_models.RelationStatus.ACTIVE,
            at=bot_service.now(),
        )
    info = corp.state.follows[userid][ext]
    tag = next(t for t in await service.live_tags() if t.wecom_tag_id not in info.tags)
    await flows.do_tag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    await flows.do_untag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    await drain(corp)
    states = {
        r.origin.split(":")[1]: r.state
        for r in await bot_models.OutboxItem.filter(origin__startswith="tagging.mark:")
    }
    # The add was overtaken by the removal: it never reached WeCom.
    assert states["add"] == "cancelled"
    assert tag.wecom_tag_id not in info.tags


async def test_group_marked_later_edited_and_deleted_follows_to_wecom(corp: FakeCorp) -> None:
    group = await flows.do_create_group(spec=GroupIn(name="私有"), actor=OPS)
    for name in ("甲", "乙"):
        await flows.do_create_tag(spec=TagIn(group_id=group.id, name=name), actor=OPS)
    await drain(corp)
    assert "私有" not in wecom_library(corp)

    await flows.do_edit_group(group_id=group.id, edit=GroupEdit(sync_to_wecom=True), actor=OPS)
    await drain(corp)
    assert wecom_library(corp)["私有"] == ["甲", "乙"]

    await flows.do_edit_group(group_id=group.id, edit=GroupEdit(name="共享"), actor=OPS)
    await drain(corp)
    assert "共享" in wecom_library(corp) and "私有" not in wecom_library(corp)

    await flows.do_delete_group(group_id=group.id, actor=OPS)
    await drain(corp)
    assert "共享" not in wecom_library(corp)
    assert await service.get_group(conn=None, group_id=group.id) is None  # type: ignore[arg-type]
    # A reconcile does not bring it back.
    await sync.sync_library(client=corp.client(), kind="reconcile")
    assert "共享" not in await local_library()


async def test_a_wecom_group_cannot_be_unmarked(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    group = (await service.live_groups())[0]
    with pytest.raises(flows.TaggingError) as info:
        await flows.do_edit_group(group_id=group.id, edit=GroupEdit(sync_to_wecom=False), actor=OPS)
    assert info.value.code == "wecom_group"


async def _follow(corp: FakeCorp) -> tuple[str, str]:
    userid = next(u for u, f in corp.state.follows.items() if f)
    ext = corp.customer_of(userid)
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        advisor = await bot_service.upsert_advisor(conn=conn, userid=userid)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=bot_models.RelationStatus.ACTIVE,
            at=bot_service.now(),
        )
    return userid, ext


async def test_a_lost_mark_is_repaired_when_the_contact_is_next_checked(corp: FakeCorp) -> None:
    await sync.sync_library(client=corp.client())
    userid, ext = await _follow(corp)
    info = corp.state.follows[userid][ext]
    tag = next(t for t in await service.live_tags() if t.wecom_tag_id not in info.tags)
    corp.state.inject("externalcontact/mark_tag", 40058)  # the first mark fails
    await flows.do_tag_customer(external_userid=ext, tag_id=tag.id, actor=OPS)
    await drain(corp)
    assert tag.wecom_tag_id not in info.tags

    # The rotation (or any callback) checks the contact: siyu's tag is marked again,
    # and WeCom's own tags are taken in as well.
    job = TagSyncJob(client=corp.client(), clock=lambda: 0.0)
    await job.tick()
    assert await SyncRequest.filter(key__startswith=f"reconcile:{ext}:").count() == 1
    run = await service.last_run(kind="contact")
    assert run is not None and any(c["change"] == "customer_tag_marked_again" for c in run.changes)
    await drain(corp)
    assert tag.wecom_tag_id in info.tags
    have = {r.tag.wecom_tag_id for r in await CustomerTag.all().prefetch_related("tag")}
    assert have == set(info.tags)

    # Once a day per customer: the next rotation round asks nothing new today.
    await job.tick()
    await job.tick()
    assert await SyncRequest.filter(key__startswith=f"reconcile:{ext}:").count() == 1


async def test_a_request_wecom_keeps_refusing_is_given_up(corp: FakeCorp) -> None:
    userid, ext = await _follow(corp)
    await run_hook(
        event(
            "c1", "change_external_contact", "edit_external_contact", customer=ext, advisor=userid
        )
    )
    corp.state.inject("externalcontact/get", 48002, times=10)  # api forbidden
    for _ in range(service.MAX_SYNC_ATTEMPTS + 2):
        await sync.sync_contacts(client=corp.client())
    req = await SyncRequest.get(key="event:c1")
    assert req.done_at is None and req.attempts == service.MAX_SYNC_ATTEMPTS
    assert not await service.pending_sync_requests(kind="contact", limit=10)


async def test_wecom_deleting_a_siyu_tag_never_deletes_it_here(corp: FakeCorp) -> None:
    shared = await flows.do_create_group(spec=GroupIn(name="活动", sync_to_wecom=True), actor=OPS)
    tag = await flows.do_create_tag(spec=TagIn(group_id=shared.id, name="双十一"), actor=OPS)
    await drain(corp)
    linked = await service.get_tag(tag_id=tag.id)
    assert linked is not None and linked.wecom_tag_id
    await corp.client().del_corp_tag(tag_id=[linked.wecom_tag_id])

    # A callback's pull (no repair) keeps siyu's tag, unlinked ...
    await run_hook(event("d1", "change_external_tag", "delete", fields={"Id": "x"}))
    await sync.sync_requested_library(client=corp.client())
    kept = await service.get_tag(tag_id=tag.id)
    assert kept is not None and kept.wecom_tag_id is None
    # ... and the reconcile pushes it back.
    await sync.sync_library(client=corp.client(), kind="reconcile")
    await drain(corp)
    assert wecom_library(corp)["活动"] == ["双十一"]
