"""``siyu messages export``: --since/--until in Asia/Shanghai, and the reviewer filters.

Messages are stored at instants straddling 00:00 and 08:00 Beijing (16:00 and 00:00
UTC); the export must select the same rows on SQLite and PostgreSQL whatever the
process's local time zone is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.settings import Settings
from tests.bot.test_archive import cli_env  # noqa: F401  (the CLI environment fixture)
from tests.conftest import SCHEMA

# msgid -> (UTC instant, sender, advisor userid, has_violation)
ROWS: dict[str, tuple[datetime, str, str | None, bool]] = {
    # 2026-10-31 23:30 Beijing
    "before-midnight": (datetime(2026, 10, 31, 15, 30, tzinfo=UTC), "zhangwei", "zhangwei", False),
    # 2026-11-01 00:00 Beijing exactly
    "midnight": (datetime(2026, 10, 31, 16, 0, tzinfo=UTC), "wmCUST0001", "zhangwei", True),
    # 2026-11-01 03:00 Beijing: the window the old code dropped
    "early": (datetime(2026, 10, 31, 19, 0, tzinfo=UTC), "lina", "lina", True),
    # 2026-11-01 07:59 Beijing
    "before-eight": (datetime(2026, 10, 31, 23, 59, tzinfo=UTC), "zhangwei", "zhangwei", False),
    # 2026-11-01 08:00 Beijing
    "eight": (datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "lina", "lina", False),
    # 2026-11-01 12:00 Beijing
    "noon": (datetime(2026, 11, 1, 4, 0, tzinfo=UTC), "zhangwei", None, True),
}


@pytest.fixture(params=["UTC", "Asia/Shanghai"])
def process_tz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def stored(cli_env: None, settings: Settings) -> None:  # noqa: F811 (the fixture)
    from bot import models
    from core import db as core_db
    from siyu.cli import main

    assert main(["migrate"]) == 0

    async def seed() -> None:
        async with core_db.db_lifespan(settings, SCHEMA):
            if core_db.dialect_of(settings.database_url) == "postgres":
                # The session's PostgreSQL database is shared: start from empty tables.
                from tortoise import Tortoise

                await Tortoise.get_connection("default").execute_script(
                    'TRUNCATE "bot_message", "bot_advisor" RESTART IDENTITY CASCADE'
                )
            advisors = {u: await models.Advisor.create(userid=u) for u in ("zhangwei", "lina")}
            for msgid, (at, sender, advisor, violation) in ROWS.items():
                await models.Message.create(
                    msgid=msgid,
                    source="archive",
                    direction="advisor_to_customer",
                    sender_id=sender,
                    sender_role="advisor",
                    receiver_ids=["wmCUST0001"],
                    msgtime=at,
                    msgtype="text",
                    masked_text=f"text {msgid}",
                    has_violation=violation,
                    advisor=advisors[advisor] if advisor else None,
                    ingested_by="api_key:ab12cd34" if msgid == "noon" else None,
                )

    asyncio.run(seed())


def export(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    from siyu.cli import main

    capsys.readouterr()
    assert main(["messages", "export", *argv]) == 0
    out = capsys.readouterr()
    ids = [json.loads(line)["msgid"] for line in out.out.splitlines()]
    assert f"exported {len(ids)} messages" in out.err
    return ids


@pytest.mark.usefixtures("stored", "process_tz")
def test_since_midnight_beijing_keeps_00_to_08(capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, "--since", "2026-11-01") == [
        "midnight",
        "early",
        "before-eight",
        "eight",
        "noon",
    ]
    assert export(capsys, "--since", "2026-11-01T00:00:00") == [
        "midnight",
        "early",
        "before-eight",
        "eight",
        "noon",
    ]


@pytest.mark.usefixtures("stored", "process_tz")
def test_until_is_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, "--since", "2026-11-01", "--until", "2026-11-01T08:00") == [
        "midnight",
        "early",
        "before-eight",
    ]
    assert export(capsys, "--until", "2026-11-01") == ["before-midnight"]


@pytest.mark.usefixtures("stored", "process_tz")
def test_explicit_offsets(capsys: pytest.CaptureFixture[str]) -> None:
    # 00:00 UTC is 08:00 Beijing.
    assert export(capsys, "--since", "2026-11-01T00:00:00+00:00") == ["eight", "noon"]
    assert export(capsys, "--since", "2026-11-01T00:00:00Z") == ["eight", "noon"]
    assert export(
        capsys, "--since", "2026-10-31T16:00:00+00:00", "--until", "2026-11-01T03:00:00+08:00"
    ) == ["midnight"]


@pytest.mark.usefixtures("stored", "process_tz")
def test_each_line_names_the_key_that_sent_it(capsys: pytest.CaptureFixture[str]) -> None:
    from siyu.cli import main

    capsys.readouterr()
    assert main(["messages", "export"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sent = {line["msgid"]: line["ingested_by"] for line in lines}
    assert sent.pop("noon") == "api_key:ab12cd34"
    assert sent and set(sent.values()) == {None}


@pytest.mark.usefixtures("stored", "process_tz")
def test_violations_only_and_advisor(capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, "--violations-only") == ["midnight", "early", "noon"]
    assert export(capsys, "--advisor", "zhangwei") == [
        "before-midnight",
        "midnight",
        "before-eight",
    ]
    assert export(capsys, "--advisor", "lina", "--violations-only", "--since", "2026-11-01") == [
        "early"
    ]
    assert export(capsys, "--advisor", "nobody") == []


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(
    "argv",
    [
        ["--since", "not-a-date"],
        ["--until", "2026-13-01"],
        ["--since", "2026-11-02", "--until", "2026-11-01"],
    ],
)
def test_bad_dates_fail_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    from siyu.cli import main

    capsys.readouterr()
    assert main(["messages", "export", *argv]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert "exported" not in out.err
    assert out.err.strip()


def test_help_describes_filters(capsys: pytest.CaptureFixture[str]) -> None:
    from siyu.cli import main

    with pytest.raises(SystemExit):
        main(["messages", "export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--since", "--until", "--violations-only", "--advisor"):
        assert flag in text
    assert "Asia/Shanghai" in text and "exclusive" in text
