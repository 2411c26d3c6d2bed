"""A domain that exists only in the tests: it plugs in through the registry alone.

One model, one migration, one hook, one route, one job, one CLI command, and an
outbox origin with a before-send check and an on-settled callback — everything a
real domain (tagging, SOP) will hand the root, with no edit to bot or core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from bot import outbox
from bot.hooks import StoredMessage
from core.domain import CliContext, Domain, JobSpec

TICKS: web.AppKey[list[int]] = web.AppKey("stub_ticks")
TICKED: web.AppKey[asyncio.Event] = web.AppKey("stub_ticked")


async def on_message(record: StoredMessage, conn: BaseDBAsyncClient) -> None:
    from tests.stubdomain.models import StubNote

    if record.sender_role != "member":
        return
    note = await StubNote.create(
        using_db=conn,
        message_id=record.id,
        customer=record.customer,
        text_masked=record.text_masked,
    )
    # No network inside a hook: the WeCom write is an outbox row.
    await outbox.enqueue(
        conn,
        idem_key=f"stub.note:{note.id}",
        origin=f"stub.note:{note.id}",
        write=outbox.app_text(agent_id=1000002, touser=record.advisor or "", content="收到"),
    )


async def before_send(pending: outbox.PendingWrite) -> str | None:
    from tests.stubdomain.models import StubNote

    note = await StubNote.get(id=int(pending.origin.rsplit(":", 1)[1]))
    return "备注含「撤回」，不再发送" if "撤回" in note.text_masked else None


async def on_settled(settled: outbox.Settled, conn: BaseDBAsyncClient) -> None:
    from tests.stubdomain.models import StubNote

    await (
        StubNote.filter(id=int(settled.origin.rsplit(":", 1)[1]))
        .using_db(conn)
        .update(
            outcome=settled.outcome, wecom_answer=dict(settled.result or {"reason": settled.reason})
        )
    )


async def list_notes(request: web.Request) -> web.Response:
    from tests.stubdomain.models import StubNote

    notes = await StubNote.all().order_by("id").values("message_id", "text_masked", "outcome")
    return web.json_response({"notes": notes})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/stub/notes", list_notes)


async def ticks_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TICKS] = []
    app[TICKED] = asyncio.Event()
    yield


def build_tick(app: web.Application) -> Any:
    async def tick() -> int:
        app[TICKS].append(len(app[TICKS]) + 1)
        app[TICKED].set()
        return 0

    return tick


def cmd_count(args: argparse.Namespace, ctx: CliContext) -> int:
    from core import db as core_db
    from tests.stubdomain.models import StubNote

    async def run() -> int:
        async with core_db.db_lifespan(ctx.settings, ctx.schema):
            return await StubNote.all().count()

    print(json.dumps({"notes": asyncio.run(run())}))
    return 0


def register_cli(sub: Any, ctx: CliContext) -> None:
    sp = sub.add_parser("stub", help="the test-only stub domain")
    ssub = sp.add_subparsers(dest="stub_command", required=True)
    ssub.add_parser("count", help="count stub notes").set_defaults(func=lambda a: cmd_count(a, ctx))


DOMAIN = Domain(
    name="stub",
    model_modules=("tests.stubdomain.models",),
    migrations="tests.stubdomain.migrations",
    contexts={"admin": (ticks_ctx,)},
    routes={"admin": (add_routes,)},
    jobs=(
        JobSpec(
            name="stub-tick",
            roles=frozenset({"admin"}),
            interval_s=lambda s: 0.05,
            build=build_tick,
        ),
    ),
    cli=register_cli,
    hooks={"on_message": on_message},
    outbox_checks={"stub.note": before_send},
    outbox_settled={"stub.note": on_settled},
)
