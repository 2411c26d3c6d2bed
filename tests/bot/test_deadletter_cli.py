"""Operator commands: `siyu deadletter` (list, requeue one or many) and `siyu archive import`."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from bot import models
from bot import service as bot_service
from bot.archive import MAX_RECORD_CHARS, MAX_TEXT_CHARS, archive_dedup_key
from bot.stream import payload_aad
from core import db as core_db
from core.crypto import load_keyring
from core.settings import Settings
from siyu.cli import build_parser, main
from tests.bot.test_archive import cli_env, record  # noqa: F401 - cli_env is a fixture
from tests.conftest import SCHEMA


def add_dead_letters(settings: Settings, rows: list[tuple[str, str, str]]) -> list[int]:
    """(msgid, source, error) → ids of dead letters holding a sealed archive record each."""

    async def run() -> list[int]:
        keyring = load_keyring(settings)
        ids = []
        async with core_db.db_lifespan(settings, SCHEMA):
            for i, (msgid, source, error) in enumerate(rows):
                key = archive_dedup_key(msgid)
                payload = {"record": record(msgid, "wmCUST0001", "zhangwei", f"你好{i}")}
                await bot_service.add_dead_letter(
                    stream_id=f"1700000000000-{i}-{uuid.uuid4().hex[:8]}",
                    source=source,
                    dedup_key=key,
                    payload_sealed=keyring.seal_text(json.dumps(payload), aad=payload_aad(key)),
                    error=error,
                    deliveries=5,
                )
                ids.append((await models.DeadLetter.get(dedup_key=key)).id)
        return ids

    return asyncio.run(run())


def backdate(settings: Settings, dead_letter_id: int, when: datetime) -> None:
    async def run() -> None:
        async with core_db.db_lifespan(settings, SCHEMA):
            await models.DeadLetter.filter(id=dead_letter_id).update(created_at=when)

    asyncio.run(run())


def statuses(settings: Settings) -> dict[int, str]:
    async def run() -> dict[int, str]:
        async with core_db.db_lifespan(settings, SCHEMA):
            return dict(await models.DeadLetter.all().values_list("id", "status"))

    return asyncio.run(run())


def queued_keys(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return [f[b"key"].decode() for _id, f in client.xrange(settings.pipeline.stream)]
    finally:
        client.close()


@pytest.fixture
def migrated(cli_env: None, settings: Settings, redis_client_sync: None) -> Settings:  # noqa: F811
    assert main(["migrate"]) == 0

    async def empty() -> None:
        # PostgreSQL is shared by the test session: start from no dead letters.
        async with core_db.db_lifespan(settings, SCHEMA):
            await models.DeadLetter.all().delete()

    asyncio.run(empty())
    return settings


def test_requeue_of_an_unknown_id_is_a_clear_error_found_before_redis(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens here: a command that opened Redis first would fail on it instead.
    monkeypatch.setenv("SIYU_REDIS_URL", "redis://127.0.0.1:1/0")
    capsys.readouterr()
    assert main(["deadletter", "requeue", "999"]) == 2
    err = capsys.readouterr().err
    assert "no dead letter with id 999" in err and "Traceback" not in err


def test_requeueing_the_same_id_twice_queues_it_once(
    migrated: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = migrated
    (dl_id,) = add_dead_letters(settings, [("twice", "archive", "RuntimeError('hiccup')")])
    capsys.readouterr()
    assert main(["deadletter", "requeue", str(dl_id)]) == 0
    assert capsys.readouterr().out.strip()  # the new stream entry's id
    assert main(["deadletter", "requeue", str(dl_id)]) == 0
    assert "requeued before" in capsys.readouterr().err
    assert queued_keys(settings) == ["arc:twice"]
    assert statuses(settings) == {dl_id: "requeued"}


def test_bulk_requeue_by_error_since_and_all(
    migrated: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = migrated
    old, bad_id, recent, raw = add_dead_letters(
        settings,
        [
            ("old", "archive", "RuntimeError('tagging service hiccup')"),
            ("badid", "archive", "ValidationError('msgid: too long')"),
            ("recent", "archive", "RuntimeError('tagging service hiccup')"),
            ("raw", "archive_raw", "decrypt: no private key for publickey_ver 3"),
        ],
    )
    backdate(settings, old, datetime(2020, 1, 1, tzinfo=UTC))
    capsys.readouterr()

    assert main(["deadletter", "list", "--error", "%HICCUP%"]) == 0
    listed = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert listed == [old, recent]

    assert main(["deadletter", "requeue", "--error", "%hiccup%", "--since", "2021-01-01"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in out] == [recent]
    assert queued_keys(settings) == ["arc:recent"]

    assert main(["deadletter", "requeue", "--all"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["id"] for line in captured.out.splitlines()] == [old, bad_id]
    assert f"skipped dead letter {raw}" in captured.err
    assert queued_keys(settings) == ["arc:recent", "arc:old", "arc:badid"]
    assert statuses(settings) == {
        old: "requeued",
        bad_id: "requeued",
        recent: "requeued",
        raw: "open",
    }
    # Nothing open matches any more: nothing queued, not an error.
    assert main(["deadletter", "requeue", "--all"]) == 0
    assert "nothing queued" in capsys.readouterr().err
    assert len(queued_keys(settings)) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["deadletter", "requeue"],
        ["deadletter", "requeue", "1", "--all"],
        ["deadletter", "requeue", "--all", "--error", "%x%"],
        ["deadletter", "requeue", "--since", "yesterday"],
        ["deadletter", "list", "--since", "2026-13-01"],
    ],
)
def test_requeue_arguments_that_make_no_sense_exit_2(
    migrated: Settings, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("siyu: ") and "Traceback" not in err


def test_archive_import_reports_every_error_by_line(
    migrated: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = migrated
    f = tmp_path / "archive.jsonl"
    lines = [
        json.dumps(record("a1", "wmCUST0001", "zhangwei", "你好"), ensure_ascii=False),
        "",
        "{broken json",
        json.dumps(record("m" * 129, "wmCUST0001", "zhangwei", "你好")),
        json.dumps(record("sur", "wmCUST0001", "zhangwei", "坏")).replace("\\u574f", "\\ud800"),
        json.dumps(record("a2", "wmCUST0001", "zhangwei", "在吗"), ensure_ascii=False),
    ]
    f.write_bytes(("\n".join(lines) + "\n").encode() + b'{"msgid": "\xff\xfe"}\n')
    capsys.readouterr()
    assert main(["archive", "import", str(f)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["accepted"], report["rejected"]) == (2, 4)
    by_line = {e["line"]: e["error"] for e in report["errors"]}
    assert sorted(by_line) == [3, 4, 5, 7]
    assert "invalid JSON" in by_line[3]
    assert "'msgid'" in by_line[4]
    assert "surrogate" in by_line[5]
    assert "UTF-8" in by_line[7]
    assert all("index" not in e for e in report["errors"])
    assert queued_keys(settings) == ["arc:a1", "arc:a2"]
    # Run again: nothing queued twice.
    assert main(["archive", "import", str(f)]) == 1
    again = json.loads(capsys.readouterr().out)
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 2, 4)
    assert main(["archive", "import", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_deadletter_and_archive_command_and_argument_has_help() -> None:
    root = _subparsers(build_parser())
    for name in ("deadletter", "archive"):
        group = root.choices[name]
        assert group.description, name
        sub = _subparsers(group)
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert set(helps) == set(sub.choices), name
        for command, parser in sub.choices.items():
            assert helps[command], f"{name} {command}: no help"
            for action in parser._actions:
                if not isinstance(action, argparse._HelpAction):
                    assert action.help, f"{name} {command} {action.dest}: no help"
    archive_import = _subparsers(root.choices["archive"]).choices["import"]
    text = archive_import.format_help()
    for words in ("JSON lines", "msgid", "msgtime", "milliseconds", '"text": {"content"'):
        assert words in text, words
    assert f"{MAX_RECORD_CHARS:,}" in text and f"{MAX_TEXT_CHARS:,}" in text
