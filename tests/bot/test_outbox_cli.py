"""``siyu outbox``: what an operator sees (truncation said, recipient, origin) and does.

Run through ``siyu.cli.main`` against SQLite and PostgreSQL, as an operator would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bot import service as bot_service
from bot.models import OutboxState
from core.settings import Settings
from tests.bot.test_archive import cli_env  # noqa: F401  (the CLI environment fixture)
from tests.conftest import SCHEMA

CUSTOMER = "wmSMJdx72WEesOY1N4r0DhdeTIzLt10M"


def run_db(settings: Settings, work: Any) -> Any:
    from core import db as core_db

    async def go() -> Any:
        async with core_db.db_lifespan(settings, SCHEMA):
            return await work()

    return asyncio.run(go())


async def _row(item_id: int) -> Any:
    from bot import models

    return await models.OutboxItem.get(id=item_id)


def audited(since: Any) -> Any:
    """The outbox entries of the audit log written since ``since`` (newest first)."""

    async def read() -> list[Any]:
        from core import audit

        return await audit.entries(where=audit.AuditFilter(action="outbox.", since=since))

    return read


@pytest.fixture
def rows(cli_env: None, settings: Settings) -> Iterator[dict[str, int]]:  # noqa: F811
    """60 failed app messages, one mass send in doubt, one sent, one queued."""
    from bot import models
    from bot import outbox as bot_outbox
    from core import db as core_db
    from siyu.cli import main

    assert main(["migrate"]) == 0

    async def seed() -> dict[str, int]:
        from tortoise import Tortoise

        if core_db.dialect_of(settings.database_url) == "postgres":
            await Tortoise.get_connection("default").execute_script(
                'TRUNCATE "bot_outbox" RESTART IDENTITY CASCADE'
            )
        now = bot_service.now()
        ids: dict[str, int] = {}

        async def add(key: str, write: bot_outbox.Write, state: OutboxState, **kw: Any) -> None:
            item = await models.OutboxItem.create(
                idem_key=key,
                api=write.api,
                payload=dict(write.payload),
                secret_kind=write.via,
                state=state,
                next_attempt_at=now,
                origin=f"bot.alert:{key}",
                **kw,
            )
            ids[key] = int(item.id)

        for i in range(60):
            await add(
                f"f{i}",
                bot_outbox.app_text(agent_id=1000002, touser="zhangwei", content=f"提醒{i}"),
                OutboxState.FAILED,
                attempts=8,
                last_errcode=-1,
                last_error="WeCom message/send: errcode -1: system busy",
            )
        mass = bot_outbox.add_msg_template(
            sender="zhangwei", text="双十一活动", external_userid=[CUSTOMER]
        )
        await add("unknown", mass, OutboxState.UNKNOWN, attempts=1, request_at=now)
        sent = bot_outbox.app_text(agent_id=1000002, touser="lina", content="已发")
        await add("done", sent, OutboxState.DONE, attempts=1)
        queued = bot_outbox.app_text(agent_id=1000002, touser="lina", content="待发")
        await add("pending", queued, OutboxState.PENDING)
        return ids

    yield run_db(settings, seed)


def outbox(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    from siyu.cli import main

    capsys.readouterr()
    code = main(["outbox", *argv])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def test_failed_list_says_when_it_is_cut_and_shows_recipient_and_origin(
    rows: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    code, listed, err = outbox(capsys, "--state", "failed")
    assert code == 0 and len(listed) == 50
    assert "showing the newest 50 of 60 failed rows" in err and "--limit" in err
    assert listed[0]["id"] == rows["f59"]  # newest first
    assert listed[0]["recipient"] == "member:zhangwei"
    assert listed[0]["origin"] == "bot.alert:f59"

    code, listed, err = outbox(capsys, "--state", "failed", "--limit", "60")
    assert code == 0 and len(listed) == 60 and err == ""
    code, listed, err = outbox(capsys, "list", "--state", "unknown")
    assert code == 0 and [r["id"] for r in listed] == [rows["unknown"]] and err == ""
    # A customer is a person: shown masked; the member who sends is shown by userid.
    assert listed[0]["recipient"] == "member:zhangwei customers:wmSM…t10M"
    code, listed, err = outbox(capsys)
    assert len(listed) == 50 and "of 63 rows" in err
    assert CUSTOMER not in json.dumps(listed, ensure_ascii=False)


def test_retrying_twice_queues_once_and_sends_once(
    rows: dict[str, int], capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    item_id = rows["unknown"]
    started = bot_service.now()
    code, out, err = outbox(capsys, "retry", str(item_id))
    assert code == 0 and out == [{"id": item_id, "state": "pending", "result": "queued"}]
    code, out, err = outbox(capsys, "retry", str(item_id), str(item_id))
    assert code == 0 and out == [{"id": item_id, "state": "pending", "result": "already queued"}]
    item = run_db(settings, lambda: _row(item_id))
    assert item.state == "pending" and item.attempts == 0 and item.claim is None
    entries = run_db(settings, audited(started))
    assert [(e.action, e.actor_id) for e in entries] == [("outbox.retry", "cli")]

    async def dispatch() -> int:
        import redis.asyncio as aioredis

        from tests.bot.outbox_fakes import start_fake_corp

        client = aioredis.Redis.from_url(settings.redis_url)
        corp, close = await start_fake_corp(client)
        try:
            await corp.dispatcher().dispatch_due()
            await corp.dispatcher().dispatch_due()
            return corp.mass_sends_with("双十一活动")
        finally:
            await close()
            await client.aclose()

    assert run_db(settings, dispatch) == 1
    assert run_db(settings, lambda: _row(item_id)).state == "done"
    code, out, err = outbox(capsys, "retry", str(item_id))
    assert code == 1 and out[0]["result"].startswith("already sent")


def test_unknown_ids_are_refused_and_nothing_changes(
    rows: dict[str, int], capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    good = rows["f0"]
    for argv in (
        ["retry", str(good), "999999"],
        ["discard", "999999", str(good), "--reason", "不再需要"],
    ):
        code, out, err = outbox(capsys, *argv)
        assert code == 2 and out == []
        assert "no outbox row with id 999999" in err and "nothing changed" in err
        assert "Traceback" not in err
        assert run_db(settings, lambda: _row(good)).state == "failed"


def test_discard_keeps_the_row_cancelled_with_a_masked_reason(
    rows: dict[str, int], capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    item_id = rows["unknown"]
    started = bot_service.now()
    reason = "已在企业微信确认任务存在，客户电话13812345678"
    code, out, err = outbox(capsys, "discard", str(item_id), "--reason", reason)
    assert code == 0 and out == [{"id": item_id, "state": "cancelled", "result": "discarded"}]
    item = run_db(settings, lambda: _row(item_id))
    assert item.state == "cancelled" and item.settled_at is not None
    assert item.last_error.startswith("discarded by ")
    assert "已在企业微信确认任务存在" in item.last_error and "13812345678" not in item.last_error
    assert item.notify_pending  # the domain that asked learns "cancelled"
    (entry,) = run_db(settings, audited(started))
    assert (entry.action, entry.target) == ("outbox.discard", f"outbox:{item_id}")
    assert "13812345678" not in entry.detail

    code, out, err = outbox(capsys, "discard", str(rows["done"]), "--reason", "x")
    assert code == 1 and out[0]["result"].startswith("already sent")
    assert run_db(settings, lambda: _row(rows["done"])).state == "done"
    code, out, err = outbox(capsys, "discard", str(rows["pending"]), "--reason", "   ")
    assert code == 2 and "--reason must say why" in err
    assert run_db(settings, lambda: _row(rows["pending"])).state == "pending"


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "--limit", "0"],
        ["outbox", "--state", "lost"],
        ["outbox", "retry"],
        ["outbox", "retry", "abc"],
        ["outbox", "discard", "1"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from siyu.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_every_outbox_subcommand_and_argument_has_help() -> None:
    from siyu.cli import build_parser

    def subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
        return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))

    root = subparsers(build_parser())
    outbox_parser = root.choices["outbox"]
    parsers = {"outbox": outbox_parser}
    sub = subparsers(outbox_parser)
    helped = {a.dest: a.help for a in sub._choices_actions}
    assert set(helped) == {"list", "retry", "discard"} and all(helped.values())
    parsers |= {f"outbox {name}": p for name, p in sub.choices.items()}
    for name, parser in parsers.items():
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (name, action.dest)
