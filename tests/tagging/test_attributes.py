"""Imported attributes: the typed schema, the bulk API with per-row errors, the CSV import."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot import models as bot_models
from core.models import AuditEntry
from core.settings import Settings
from tagging import attributes, audience


@pytest.mark.parametrize(
    ("name", "raw", "stored"),
    [
        ("risk_level", "C3", "C3"),
        ("age", "61", 61),
        ("aum", "1000000.50", "1000000.5"),
        ("birthday", "1980-02-29", "1980-02-29"),
        ("aum_band", "300万-1000万", "300万-1000万"),
        (
            "holdings",
            '[{"product_code": "FUND01", "risk_level": "R3", "maturity_date": "2027-01-01"}]',
            [{"product_code": "FUND01", "risk_level": "R3", "maturity_date": "2027-01-01"}],
        ),
    ],
)
def test_values_are_checked_and_normalised(name: str, raw: str, stored: Any) -> None:
    assert attributes.check_value(name, raw) == stored


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("risk_level", "C9", "one of"),
        ("age", "61.5", "whole number"),
        ("age", "200", "above"),
        ("aum", "-1", "below"),
        ("aum", "NaN", "not a number"),
        ("birthday", "1980-02-30", "not a date"),
        ("salary", "1", "unknown attribute"),
        ("holdings", '[{"product_code": "X", "risk_level": "R9"}]', "R1..R5"),
        ("branch", "", "empty"),
    ],
)
def test_bad_values_say_why(name: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attributes.check_value(name, raw)


async def _customers(*pairs: tuple[str, str | None]) -> None:
    for ext, union in pairs:
        await bot_models.Customer.create(external_userid=ext, unionid=union)


async def test_api_reports_rows_applies_the_rest_and_is_idempotent(edge: Any) -> None:
    await _customers(("wmATTR0000000000000001", "oUNION1"), ("wmATTR0000000000000002", None))
    rows: list[Any] = [
        {"external_userid": "wmATTR0000000000000001", "attributes": {"risk_level": "C4"}},
        {"unionid": "oUNION1", "attributes": {"maturity_date": "2026-12-10"}},
        {"external_userid": "wmATTR0000000000000002", "attributes": {"risk_level": "C7"}},
        {"external_userid": "wmNOBODY00000000000003", "attributes": {"age": 30}},
        {"attributes": {"age": 30}},
        "not a row",
    ]
    status, body = await edge.api("POST", "/api/v1/customers/attributes", json=rows)
    assert status == 200
    assert (body["accepted"], body["unchanged"], body["rejected"]) == (2, 0, 4)
    errors = {e["row"]: e["error"] for e in body["errors"]}
    assert set(errors) == {3, 4, 5, 6}
    assert "C1" in errors[3] and errors[4] == "unknown customer"
    assert "exactly one" in errors[5]
    assert not await bot_models.Customer.filter(external_userid="wmNOBODY00000000000003").exists()
    stored = await bot_models.Customer.get(external_userid="wmATTR0000000000000001")
    assert stored.attributes == {"risk_level": "C4", "maturity_date": "2026-12-10"}

    # The same rows again change nothing; the audit log has one import entry.
    status, body = await edge.api("POST", "/api/v1/customers/attributes", json={"rows": rows})
    assert (body["accepted"], body["unchanged"]) == (0, 2)
    assert await AuditEntry.filter(action="tagging.attributes.import").count() == 1

    # Imported attributes are what audiences select on.
    node = audience.parse("attr.risk_level >= C4")
    assert await audience.count(node) == 1

    status, body = await edge.api(
        "POST", "/api/v1/customers/attributes", json=[{}] * (attributes.MAX_ROWS + 1)
    )
    assert status == 413


def test_csv_import_streams_reports_lines_and_reruns_as_a_no_op(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core import db as core_db
    from core.domain import CliContext
    from siyu import cli as siyu_cli
    from siyu.app import schema_of
    from siyu.domains import DOMAINS

    ctx = CliContext(settings_factory=lambda: settings, schema=schema_of(DOMAINS))
    assert siyu_cli.main(["migrate"], ctx=ctx) == 0

    async def seed() -> None:
        async with core_db.db_lifespan(settings, ctx.schema):
            if core_db.dialect_of(settings.database_url) == "postgres":
                await bot_models.Customer.all().delete()
            for i in range(5):
                await bot_models.Customer.create(external_userid=f"wmCSV{i:017d}")

    asyncio.run(seed())
    csv_file = tmp_path / "attrs.csv"
    lines = ["external_userid,risk_level,aum,maturity_date"]
    lines += [f"wmCSV{i:017d},C{i + 1},{i * 1000},2027-01-0{i + 1}" for i in range(5)]
    lines += ["wmCSV00000000000000001,C9,1,2027-01-01", "wmUNKNOWN,C1,,"]
    csv_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert (
        siyu_cli.main(["customers", "import", str(csv_file), "--quiet", "--chunk", "2"], ctx=ctx)
        == 1
    )
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"accepted": 5, "unchanged": 0, "rejected": 2}
    assert "line 7: risk_level: must be one of" in err and "line 8: unknown customer" in err

    assert siyu_cli.main(["customers", "import", str(csv_file), "--quiet"], ctx=ctx) == 1
    out, _ = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1]) == {
        "accepted": 0,
        "unchanged": 5,
        "rejected": 2,
    }

    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("external_userid,salary\nwmCSV00000000000000000,1\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="unknown attribute columns: salary"):
        siyu_cli.main(["customers", "import", str(bad_header), "--quiet"], ctx=ctx)
