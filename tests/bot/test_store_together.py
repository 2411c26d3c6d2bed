"""A read's messages are stored together: one transaction, a few multi-row statements.

Storing message by message cost a transaction and a dozen round trips each and capped
a worker far below what its analyzer could do (issue 8, item 11).  What must not change:
duplicates are told per message on SQLite and PostgreSQL, one bad message fails alone,
and the hooks of other domains take effect exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import models, outbox
from bot import service as bot_service
from bot.archive import record_to_draft
from bot.flows import MessageToStore, StoreDeps, do_store_messages
from bot.hooks import Hooks, NamedHook, StoredMessage
from bot.keys import STREAM
from bot.schemas import StoreResult
from core.crypto import Keyring
from core.domain import Domain
from core.settings import Settings
from siyu.domains import DOMAINS
from tests.bot.harness import Edge, start_edge
from tests.bot.test_archive import a_relation, record
from tests.bot.test_worker_failures import SteppingClock

ADVISOR = "lina"
CUSTOMER = "wmTOGETHER000000000000000001"
VIOLATION = "这个产品保本保收益，放心买"
COMPLAINT = "我要投诉你们，马上把理财全部赎回"


def _keyring(settings: Settings) -> Keyring:
    keys = {k: base64.b64decode(v.get_secret_value()) for k, v in settings.crypto.keys.items()}
    return Keyring(keys=keys, active_key_id=settings.crypto.active_key_id)


def _deps(
    settings: Settings, *hooks: Callable[[StoredMessage, BaseDBAsyncClient], Any]
) -> StoreDeps:
    return StoreDeps(
        keyring=_keyring(settings),
        hooks=Hooks(on_message=tuple(NamedHook(f"test.hook{i}", h) for i, h in enumerate(hooks))),
        agent_id=1000002,
    )


async def _read(analyzer: Any, records: Sequence[dict[str, Any]]) -> list[MessageToStore]:
    """The records as the pipeline hands them to be stored: drafted and analysed."""
    drafts = [record_to_draft(r) for r in records]
    analyses = await analyzer.analyze_many([(d.text, d.analysis_role) for d in drafts])
    return [
        MessageToStore(draft=d, analysis=a, original={"record": r})
        for d, a, r in zip(drafts, analyses, records, strict=True)
    ]


def _chat(
    msgid: str, text: str = "好的，明天联系您", *, from_customer: bool = False
) -> dict[str, Any]:
    if from_customer:
        return record(msgid, CUSTOMER, ADVISOR, text)
    return record(msgid, ADVISOR, CUSTOMER, text)


def _stored(results: Sequence[StoreResult | BaseException]) -> list[bool | str]:
    return [r.stored if isinstance(r, StoreResult) else type(r).__name__ for r in results]


async def _msgids() -> list[str]:
    return sorted(await models.Message.all().values_list("msgid", flat=True))


# ------------------------------------------------------------------ through the worker


async def test_a_read_is_stored_with_one_insert_per_table(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty records read together: one INSERT into bot_message for all of them (it was
    one per message, each in a transaction of its own), and one for their review cases."""
    userid, ext = a_relation(edge)
    records = [record(f"t{i:02d}", userid, ext, f"您好，第{i}期周报已发您") for i in range(16)]
    records += [record(f"v{i}", userid, ext, f"{VIOLATION}（{i}）") for i in range(4)]
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and body["accepted"] == 20
    caplog.set_level(logging.DEBUG, logger="tortoise.db_client")
    await edge.process_all()
    assert len(await _msgids()) == 20
    statements = [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]

    def inserts_into(table: str) -> int:
        return sum(1 for s in statements if s.startswith(f'INSERT INTO "{table}"'))

    assert inserts_into("bot_message") == 1
    assert await models.ReviewCase.all().count() == 4
    assert inserts_into("bot_review_case") == 1


@pytest.fixture
async def picky_edge(
    settings: Settings, analyzer: Any, redis_client: Any, db: None
) -> AsyncIterator[tuple[Edge, dict[str, int]]]:
    """An edge with a domain whose hook writes an outbox row per call and always fails
    on a message saying 「拒绝」."""
    calls: dict[str, int] = {}

    async def picky_hook(message: StoredMessage, conn: BaseDBAsyncClient) -> None:
        n = calls[message.msgid] = calls.get(message.msgid, 0) + 1
        # A row per call (the key counts calls): an effect that happened twice shows.
        await outbox.enqueue(
            conn,
            idem_key=f"picky:{message.msgid}:{n}",
            origin=f"picky.note:{message.msgid}",
            write=outbox.app_text(agent_id=1000002, touser=ADVISOR, content="收到"),
        )
        if "拒绝" in message.text_masked:
            raise RuntimeError("picky refuses this one")

    settings.pipeline.max_deliveries = 3
    picky = Domain(name="picky", hooks={"on_message": picky_hook})
    edge, closers = await start_edge(settings, analyzer=analyzer, domains=(*DOMAINS, picky))
    edge.worker.clock = SteppingClock()
    try:
        yield edge, calls
    finally:
        for close in closers:
            await close()


async def test_a_message_whose_hook_fails_fails_alone_and_hooks_take_effect_once(
    picky_edge: tuple[Edge, dict[str, int]],
) -> None:
    edge, calls = picky_edge
    userid, ext = a_relation(edge)
    records = [
        record("h1", userid, ext, "您好"),
        record("h2", userid, ext, "拒绝这条"),
        record("h3", ext, userid, "在吗"),
    ]
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and body["accepted"] == 3
    await edge.process_all()
    assert await _msgids() == ["h1", "h3"]
    # The read's transaction rolled back when h2's hook failed; h1 and h3 were then
    # stored each in its own, and the row h1's hook wrote in the failed attempt is gone.
    assert calls == {"h1": 2, "h2": 4, "h3": 1}
    rows = await models.OutboxItem.filter(origin__startswith="picky.note:").values_list(
        "origin", flat=True
    )
    assert sorted(rows) == ["picky.note:h1", "picky.note:h3"]
    dead = await models.DeadLetter.all().values_list("dedup_key", flat=True)
    assert dead == ["arc:h2"]
    assert await edge.app[STREAM].depth() == (0, 0)


# ------------------------------------------------------------------ the flow itself


@pytest.fixture(params=["returning", "row by row"])
def insert_style(request: pytest.FixtureRequest, settings: Settings, monkeypatch: Any) -> str:
    """SQLite before 3.35 has no INSERT … RETURNING: the row-by-row path is tested too."""
    if request.param == "row by row":
        if not settings.database_url.startswith("sqlite"):
            pytest.skip("an SQLite library's limit")
        monkeypatch.setattr(bot_service, "_SQLITE_RETURNING", False)
    return str(request.param)


async def test_duplicates_are_told_per_message(
    db: None, settings: Settings, analyzer: Any, insert_style: str
) -> None:
    """Stored before (a redelivery the pre-check missed: another worker stored it in
    between) or repeated within the read: stored once, the others told they are
    duplicates, in their places."""
    deps = _deps(settings)
    (earlier,) = await do_store_messages(items=await _read(analyzer, [_chat("d0")]), deps=deps)
    assert isinstance(earlier, StoreResult) and earlier.stored
    read = await _read(
        analyzer,
        [_chat("d1"), _chat("d0"), _chat("d2", from_customer=True), _chat("d1"), _chat("d3")],
    )
    results = await do_store_messages(items=read, deps=deps)
    assert _stored(results) == [True, False, True, False, True]
    ids = [r.record_id for r in results if isinstance(r, StoreResult) and r.stored]
    rows = await models.Message.filter(id__in=ids).order_by("id").values_list("msgid", flat=True)
    assert sorted(rows) == ["d1", "d2", "d3"]
    assert await _msgids() == ["d0", "d1", "d2", "d3"]
    # Each stored message's record names its own row.
    for r, item in zip(results, read, strict=True):
        if isinstance(r, StoreResult) and r.stored:
            assert r.record.msgid == item.draft.msgid
            assert (await models.Message.get(id=r.record_id)).msgid == item.draft.msgid


async def test_two_workers_storing_overlapping_reads_store_each_message_once(
    db: None, settings: Settings, analyzer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL the two transactions run at once, their reads in opposite orders:
    the second waits on the unique key the first holds, then skips it (no deadlock)."""
    deps = _deps(settings)
    records = [_chat(f"o{i}", f"第{i}条") for i in range(12)]
    a = await _read(analyzer, records[:8])
    b = await _read(analyzer, list(reversed(records[4:])))
    ra, rb = await asyncio.gather(
        do_store_messages(items=a, deps=deps), do_store_messages(items=b, deps=deps)
    )
    stored_by_a = {i.draft.msgid for i, r in zip(a, ra, strict=True) if r.stored}  # type: ignore[union-attr]
    stored_by_b = {i.draft.msgid for i, r in zip(b, rb, strict=True) if r.stored}  # type: ignore[union-attr]
    assert not stored_by_a & stored_by_b
    assert stored_by_a | stored_by_b == {f"o{i}" for i in range(12)}
    assert await models.Message.all().count() == 12
    # Neither read failed as a whole (a deadlock would have sent it message by message).
    assert "storing a read together failed" not in caplog.text


async def test_a_message_the_database_would_refuse_fails_alone(
    db: None, settings: Settings, analyzer: Any
) -> None:
    """A msgid longer than its column (SQLite would store it: it does not check lengths)
    fails with the ORM's validation error, the others of its read are stored."""
    read = await _read(analyzer, [_chat("ok1"), _chat("x" * 300), _chat("ok2")])
    results = await do_store_messages(items=read, deps=_deps(settings))
    assert _stored(results) == [True, "ValidationError", True]
    assert await _msgids() == ["ok1", "ok2"]


async def test_hooks_see_each_stored_message_in_the_order_read(
    db: None, settings: Settings, analyzer: Any
) -> None:
    """Each hook gets its message's frozen record, in the order read, with the row
    readable through the transaction it is given; a duplicate runs no hook."""
    seen: list[tuple[str, str]] = []

    async def reading_hook(message: StoredMessage, conn: BaseDBAsyncClient) -> None:
        row = await models.Message.get(id=message.id, using_db=conn)
        seen.append((message.msgid, row.masked_text))

    deps = _deps(settings, reading_hook)
    await do_store_messages(items=await _read(analyzer, [_chat("s2", "第二条")]), deps=deps)
    seen.clear()
    read = await _read(
        analyzer,
        [
            _chat("s3", "第三条"),
            _chat("s1", "第一条"),
            _chat("s2", "第二条"),
            _chat("s4", "第四条"),
        ],
    )
    results = await do_store_messages(items=read, deps=deps)
    assert _stored(results) == [True, True, False, True]
    assert seen == [("s3", "第三条"), ("s1", "第一条"), ("s4", "第四条")]


async def test_a_read_hook_sees_the_read_once_and_takes_effect_once(
    db: None, settings: Settings, analyzer: Any
) -> None:
    """``on_messages`` gets the messages a transaction stored, together, in the order read
    and after every ``on_message``; when it fails, the read is stored again message by
    message (the hook called for each alone) and only the refused one fails."""
    calls: list[list[str]] = []
    order: list[str] = []
    n_calls = iter(range(1, 100))

    async def per_message(message: StoredMessage, conn: BaseDBAsyncClient) -> None:
        order.append(f"message:{message.msgid}")

    async def per_read(messages: Sequence[StoredMessage], conn: BaseDBAsyncClient) -> None:
        calls.append([m.msgid for m in messages])
        order.append("read")
        # One row per call: an effect that happened twice, or survived a rollback, shows.
        await outbox.enqueue(
            conn,
            idem_key=f"reader:{next(n_calls)}",
            origin="reader.note:" + ",".join(m.msgid for m in messages),
            write=outbox.app_text(agent_id=1000002, touser=ADVISOR, content="收到"),
        )
        if any("拒绝" in m.text_masked for m in messages):
            raise RuntimeError("the read hook refuses this one")

    deps = StoreDeps(
        keyring=_keyring(settings),
        hooks=Hooks(
            on_message=(NamedHook("test.on_message", per_message),),
            on_messages=(NamedHook("test.on_messages", per_read),),
        ),
        agent_id=1000002,
    )
    await do_store_messages(items=await _read(analyzer, [_chat("r0")]), deps=deps)
    read = await _read(
        analyzer,
        [_chat("r1"), _chat("r0"), _chat("r2", from_customer=True), _chat("r1"), _chat("r3")],
    )
    calls.clear()
    order.clear()
    assert _stored(await do_store_messages(items=read, deps=deps)) == [
        True,
        False,
        True,
        False,
        True,
    ]
    assert calls == [["r1", "r2", "r3"]]  # once, duplicates left out
    assert order == ["message:r1", "message:r2", "message:r3", "read"]

    calls.clear()
    read = await _read(analyzer, [_chat("r4"), _chat("r5", "拒绝这条"), _chat("r6")])
    assert _stored(await do_store_messages(items=read, deps=deps)) == [
        True,
        "RuntimeError",
        True,
    ]
    assert calls == [["r4", "r5", "r6"], ["r4"], ["r5"], ["r6"]]
    notes = await models.OutboxItem.filter(origin__startswith="reader.note:").values_list(
        "origin", flat=True
    )
    # The rolled-back read's row is gone; each message stored alone left one.
    assert sorted(notes) == [
        "reader.note:r0",
        "reader.note:r1,r2,r3",
        "reader.note:r4",
        "reader.note:r6",
    ]
    assert await _msgids() == ["r0", "r1", "r2", "r3", "r4", "r6"]


async def test_alerts_of_a_read_are_queued_sealed_once(
    db: None, settings: Settings, analyzer: Any
) -> None:
    """The alerts of a read go to the outbox with the customer named by a stand-in at
    rest and the text to send sealed; storing the read again queues nothing twice."""
    keyring = _keyring(settings)
    await models.Customer.create(external_userid=CUSTOMER, name="王女士")
    read = await _read(
        analyzer, [_chat("a1", VIOLATION), _chat("a2", COMPLAINT, from_customer=True)]
    )
    results = await do_store_messages(items=read, deps=_deps(settings))
    keys = [k for r in results if isinstance(r, StoreResult) for k in r.alerts]
    assert keys and await models.Alert.all().count() == len(keys)
    for key in keys:
        row = await models.OutboxItem.get(idem_key=f"notify:{key}")
        assert row.origin == f"bot.alert:{key}"[:96]
        at_rest = row.payload["text"]["content"]
        assert "王女士" not in at_rest and CUSTOMER[-6:] in at_rest
        sent = keyring.open_text(row.payload_sealed or "", aad=f"outbox:notify:{key}")
        assert "王女士" in sent
    again = await do_store_messages(items=read, deps=_deps(settings))
    assert _stored(again) == [False, False]
    assert await models.OutboxItem.all().count() == len(keys)


# ------------------------------------------------------------------ the service


async def test_customers_and_advisors_another_worker_inserted_meanwhile_are_read_back(
    db: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not there when read, there when inserted: another worker committed them in
    between; its rows are skipped by the INSERT and read back, not missed."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("an SQLite writer takes the lock before reading: nobody inserts between")
    import asyncpg

    real = bot_service._insert_many

    async def another_worker_first(model: Any, **kw: Any) -> Any:
        other = await asyncpg.connect(settings.database_url.replace("postgres://", "postgresql://"))
        try:
            if model is models.Customer:
                await other.execute(
                    'INSERT INTO "bot_customer" (created_at, updated_at, external_userid, name, '
                    "contact_type, corp_name, gender, attributes, needs_sync) "
                    "VALUES (now(), now(), 'wmRACED', '李先生', 1, '', 0, '{}', false)"
                )
            elif model is models.Advisor:
                await other.execute(
                    'INSERT INTO "bot_advisor" (created_at, updated_at, userid, name, department, '
                    "status) VALUES (now(), now(), 'raced', '', '', 'active')"
                )
        finally:
            await other.close()
        return await real(model, **kw)

    monkeypatch.setattr(bot_service, "_insert_many", another_worker_first)
    async with in_transaction() as conn:
        advisors = await bot_service.ensure_advisors(conn=conn, userids=["raced", "fresh"])
        customers = await bot_service.ensure_customers(
            conn=conn, external_userids=["wmRACED", "wmFRESH"]
        )
    stored = dict(await models.Advisor.all().values_list("userid", "id"))
    assert advisors == {"raced": stored["raced"], "fresh": stored["fresh"]}
    raced = await models.Customer.get(external_userid="wmRACED")
    fresh = await models.Customer.get(external_userid="wmFRESH")
    assert customers["wmRACED"] == bot_service.CustomerRef(raced.id, "wmRACED", "李先生")
    assert customers["wmFRESH"] == bot_service.CustomerRef(fresh.id, "wmFRESH", "")
    # Neither fetched from WeCom yet: both are for the reconcile job.
    assert raced.needs_sync and fresh.needs_sync


async def test_a_read_naming_a_new_customer_does_not_wait_for_another_reads_transaction(
    db: None, settings: Settings, analyzer: Any
) -> None:
    """Two workers' reads naming the same new customer and member: the second is stored
    while the first's transaction is still open.  The new rows were inserted inside the
    transaction, where they stayed locked until its commit, and the second read's INSERT
    … ON CONFLICT waited for it: two workers stored one after the other."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("SQLite has one writer at a time: the second read waits whatever it names")
    inside, release = asyncio.Event(), asyncio.Event()

    async def holding(message: StoredMessage, conn: BaseDBAsyncClient) -> None:
        if message.msgid == "held":
            inside.set()
            await release.wait()

    deps = _deps(settings, holding)
    first = asyncio.create_task(
        do_store_messages(
            items=await _read(analyzer, [record("held", "newadvisor", "wmNEWCUSTOMER", "您好")]),
            deps=deps,
        )
    )
    await inside.wait()
    try:
        items = await _read(analyzer, [record("free", "wmNEWCUSTOMER", "newadvisor", "好的")])
        # A guard against waiting forever, not a measure of speed: before, the second
        # read waited for the first's commit, which waits for this one.
        second = await asyncio.wait_for(do_store_messages(items=items, deps=deps), 60)
    finally:
        release.set()
        held = await first
    assert _stored(second) == [True] and _stored(held) == [True]
    assert await models.Customer.filter(external_userid="wmNEWCUSTOMER").count() == 1
    assert await models.Advisor.filter(userid="newadvisor").count() == 1


async def test_a_stored_customer_never_fetched_is_marked_for_the_reconcile_job(db: None) -> None:
    """As ``upsert_customer(needs_sync=True)`` does one by one: a customer the reconcile
    job has fetched (synced_at set) is left alone."""
    from datetime import UTC, datetime

    await models.Customer.create(external_userid="wmNEVER", needs_sync=False)
    await models.Customer.create(
        external_userid="wmSYNCED", needs_sync=False, synced_at=datetime.now(UTC), name="赵女士"
    )
    async with in_transaction() as conn:
        refs = await bot_service.ensure_customers(
            conn=conn, external_userids=["wmNEVER", "wmSYNCED", "wmNEVER"]
        )
    assert sorted(refs) == ["wmNEVER", "wmSYNCED"] and refs["wmSYNCED"].name == "赵女士"
    flags = dict(await models.Customer.all().values_list("external_userid", "needs_sync"))
    assert flags == {"wmNEVER": True, "wmSYNCED": False}


# ------------------------------------------------------------------ the multi-row insert


def _row_values() -> list[tuple[type[Any], str, Any]]:
    """Values a read's rows carry, and the odd ones a caller might pass."""
    when = models.Message._meta.fields_map["msgtime"]
    return [
        (models.Message, "msgid", "m" * 128),
        (models.Message, "msgid", 12345),  # not a str: converted as the ORM does
        (models.Message, "roomid", None),
        (models.Message, "has_violation", True),
        (models.Message, "has_violation", 1),
        (models.Customer, "gender", 1),
        (models.OutboxItem, "last_errcode", None),
        (models.OutboxItem, "last_errcode", 40001),
        (models.Message, "receiver_ids", ["a", "b"]),
        (models.Message, "analysis", {"violations": [{"evidence": "保本"}], "score": 0.5}),
        (models.Message, "analysis", None),
        (models.Message, "analysis", '{"a": 1}'),
        (models.Message, "masked_text", "您好" * 500),
        (models.Customer, "contact_type", 2),
        (models.Customer, "needs_sync", False),
        (models.OutboxItem, "attempts", 0),
        (models.OutboxItem, "state", models.OutboxState.PENDING),
        (models.Message, "msgtime", when.to_python_value("2026-12-06T01:02:03+00:00")),
    ]


@pytest.mark.parametrize("model, name, value", _row_values())
def test_a_column_value_is_converted_as_the_orm_converts_it(
    model: type[Any], name: str, value: Any
) -> None:
    field = model._meta.fields_map[name]
    assert bot_service._converter_of(model, name)(value) == field.to_db_value(value, model)


@pytest.mark.parametrize(
    "name, value", [("msgid", "m" * 129), ("source", "s" * 17), ("sender_id", None)]
)
def test_a_value_the_orm_refuses_is_refused(name: str, value: Any) -> None:
    field = models.Message._meta.fields_map[name]
    with pytest.raises(Exception) as orm:
        field.to_db_value(value, models.Message)
    with pytest.raises(type(orm.value)):
        bot_service._converter_of(models.Message, name)(value)


async def test_a_multi_row_insert_is_one_statement_text_whatever_the_rows_on_postgresql(
    db: None, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL gets a read's rows as one array per column: the statement's text does
    not depend on how many rows a read has, so the driver prepares it once, not once per
    length (and evicts it again from its cache)."""
    if not settings.database_url.startswith("postgres"):
        pytest.skip("SQLite caches statements by text too, but a read has one length")
    caplog.set_level(logging.DEBUG, logger="tortoise.db_client")
    async with in_transaction() as conn:
        for n in (1, 3, 5):
            await bot_service.ensure_advisors(conn=conn, userids=[f"a{n}x{i}" for i in range(n)])
    inserts = {
        r.getMessage().split(": [", 1)[0]
        for r in caplog.records
        if r.name == "tortoise.db_client" and r.getMessage().startswith('INSERT INTO "bot_advisor"')
    }
    assert len(inserts) == 1
    stored = await models.Advisor.all().values_list("userid", flat=True)
    assert sorted(stored) == sorted(f"a{n}x{i}" for n in (1, 3, 5) for i in range(n))
