"""The hash-chained audit log: appends in the caller's transaction, verify finds tampering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from core import audit
from core.audit import Actor
from core.models import AuditEntry
from core.settings import Settings

ADMIN = Actor("operator", "1", "alice")
AUDIT_DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


async def _append_n(n: int) -> list[audit.AuditRecord]:
    out = []
    for i in range(n):
        out.append(
            await audit.append_alone(
                actor=ADMIN,
                action="operator.create",
                target=f"operator:{i + 10}",
                source="10.0.0.1",
                detail={"name": f"user{i}", "role": "advisor"},
            )
        )
    return out


async def _sql(statement: str) -> None:
    await Tortoise.get_connection("default").execute_script(statement)


async def test_entries_chain_and_verify(db: None) -> None:
    records = await _append_n(5)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    report = await audit.verify()
    assert report.ok and report.entries == 5 and report.last_hash == records[-1].hash
    assert await audit.chain_head() == audit.ChainHead(5, records[-1].hash)


async def test_entry_rolls_back_with_the_change_it_records(db: None) -> None:
    with pytest.raises(RuntimeError):
        async with in_transaction() as conn:
            await audit.append(conn=conn, actor=ADMIN, action="operator.create")
            raise RuntimeError("the change failed")
    assert await AuditEntry.all().count() == 0
    assert (await audit.chain_head()).seq == 0
    # The next append starts the chain cleanly.
    await _append_n(1)
    assert (await audit.verify()).ok


async def test_concurrent_appends_form_one_line(db: None) -> None:
    async def one(i: int) -> None:
        async with in_transaction() as conn:
            await audit.append(conn=conn, actor=ADMIN, action="api_key.use", target=str(i))

    await asyncio.gather(*(one(i) for i in range(20)))
    report = await audit.verify()
    assert report.ok and report.entries == 20


async def test_a_log_whose_head_was_deleted_refuses_appends(db: None) -> None:
    """Entries without a head row: tampered with, so nothing is chained onto it (a first
    append racing another first append finds the other's head and goes on instead)."""
    await _append_n(2)
    await _sql("DELETE FROM core_audit_head")
    with pytest.raises(audit.AuditHeadMissing):
        async with in_transaction() as conn:
            await audit.append(conn=conn, actor=ADMIN, action="api_key.use", target="x")
    assert (await audit.verify()).entries == 2


async def test_edited_entry_is_reported_as_altered(db: None) -> None:
    await _append_n(5)
    await _sql("UPDATE core_audit_log SET result = 'failure' WHERE seq = 3")
    report = await audit.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("altered", 3)
    assert report.entries == 2


async def test_deleted_entry_is_reported_as_missing(db: None) -> None:
    await _append_n(5)
    await _sql("DELETE FROM core_audit_log WHERE seq = 2")
    report = await audit.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("missing", 2)


async def test_deleted_last_entries_are_reported_by_the_head(db: None) -> None:
    await _append_n(5)
    await _sql("DELETE FROM core_audit_log WHERE seq >= 4")
    report = await audit.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("missing", 4)


async def test_reordered_entries_are_reported(db: None) -> None:
    await _append_n(5)
    # Swap positions 2 and 3 (through a free number: seq is unique).
    await _sql("UPDATE core_audit_log SET seq = 100 WHERE seq = 2")
    await _sql("UPDATE core_audit_log SET seq = 2 WHERE seq = 3")
    await _sql("UPDATE core_audit_log SET seq = 3 WHERE seq = 100")
    report = await audit.verify()
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 2)


async def _rebuild_from(seq: int) -> None:
    """What an intruder with full write access does: edit, then recompute every hash."""
    rows = await AuditEntry.all().order_by("seq")
    prev = audit.GENESIS
    for row in rows:
        if row.seq == seq:
            row.result = "failure"
        digest = audit.entry_hash(
            prev_hash=prev,
            at=row.at,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            action=row.action,
            target=row.target,
            result=row.result,
            source=row.source,
            detail=row.detail,
        )
        await AuditEntry.filter(id=row.id).update(result=row.result, prev_hash=prev, hash=digest)
        prev = digest
    await _sql("UPDATE core_audit_head SET hash = '" + prev + "' WHERE id = 1")


async def test_rebuilt_log_is_caught_by_an_exported_head(db: None, tmp_path: Path) -> None:
    await _append_n(3)
    exporter = audit.HeadExporter(tmp_path)
    await exporter.tick()
    await _append_n(2)
    await exporter.tick()
    assert len(audit.read_heads(tmp_path)) == 2
    await _rebuild_from(2)
    # Consistent on its own ...
    assert (await audit.verify()).ok
    # ... but not with the heads written out before the rebuild.
    report = await audit.verify(recorded_heads=audit.read_heads(tmp_path))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("rewritten", 3)


async def test_head_export_writes_one_line_per_new_head(db: None, tmp_path: Path) -> None:
    exporter = audit.HeadExporter(tmp_path)
    await exporter.tick()
    assert not audit.heads_path(tmp_path).exists()  # nothing to export yet
    await _append_n(2)
    await exporter.tick()
    await exporter.tick()
    # A restarted process reads the last line and does not repeat it.
    await audit.HeadExporter(tmp_path).tick()
    lines = audit.heads_path(tmp_path).read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [2]
    # A torn last line (a crash mid-write) does not hide the earlier ones.
    with audit.heads_path(tmp_path).open("a") as fh:
        fh.write('{"seq": 9, "ha')
    assert audit.read_heads(tmp_path) == [audit.ChainHead(2, json.loads(lines[0])["hash"])]


async def test_values_are_cut_to_their_columns_before_hashing(db: None) -> None:
    long = "名" * 300
    await audit.append_alone(
        actor=Actor("operator", "7", long), action="auth.sign_in", target=long, source="x" * 99
    )
    assert (await audit.verify()).ok


def _run_cli(argv: list[str], settings: Settings, monkeypatch: Any) -> int:
    from core.domain import CliContext
    from siyu import cli as siyu_cli
    from tests.conftest import SCHEMA

    ctx = CliContext(settings_factory=lambda: settings, schema=SCHEMA)
    return siyu_cli.main(argv, ctx=ctx)


async def test_cli_verify_exit_code_and_first_problem(
    settings: Settings, db: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    await _append_n(4)
    await _sql("UPDATE core_audit_log SET target = 'operator:999' WHERE seq = 2")
    from core import db as core_db

    await core_db.close_db()
    code = await asyncio.to_thread(_run_cli, ["audit", "verify"], settings, monkeypatch)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1
    assert out["problem"]["kind"] == "altered" and out["problem"]["seq"] == 2
    await core_db.init_db(settings, __import__("tests.conftest").conftest.SCHEMA)


async def test_documented_postgres_grants_forbid_rewriting_the_log(
    settings: Settings, db: None
) -> None:
    """The grants of docs/audit.md: the app role appends and reads, never edits."""
    import re
    import uuid

    import asyncpg

    if not settings.database_url.startswith("postgres"):
        pytest.skip("PostgreSQL grants")
    await _append_n(2)
    doc = await asyncio.to_thread(AUDIT_DOC.read_text)
    grants = re.search(r"```sql\n(.*?)```", doc, re.S)
    assert grants
    role = f"siyu_app_{uuid.uuid4().hex[:8]}"
    sql = grants.group(1).replace("siyu_app", role).replace("PASSWORD '…'", "")
    conn = await asyncpg.connect(settings.database_url.replace("postgres://", "postgresql://"))
    try:
        await conn.execute(sql)
        await conn.execute(f"SET ROLE {role}")
        assert await conn.fetchval("SELECT count(*) FROM core_audit_log") == 2
        await conn.execute("UPDATE core_audit_head SET seq = seq WHERE id = 1")
        for statement in (
            "UPDATE core_audit_log SET result = 'x' WHERE seq = 1",
            "DELETE FROM core_audit_log WHERE seq = 2",
            "TRUNCATE core_audit_log",
            "DELETE FROM core_audit_head",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        await conn.execute(
            "INSERT INTO core_audit_log (seq, at, actor_kind, actor_id, action, prev_hash, hash)"
            " VALUES (99, now(), 'system', 't', 't', 'p', 'h')"
        )
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute("DELETE FROM core_audit_log WHERE seq = 99")
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()
