"""Every message ingested through the API records which key sent it.

The key is named as the audit log names a caller (``api_key:<key id>``); a record sent
again by another key stays the first sender's; the review case page names the key and
``siyu messages export`` carries it.  Records from the archive puller name no key.
"""

from __future__ import annotations

import time
from typing import Any

from admin import flows as admin_flows
from admin.permissions import load_table
from bot import models
from tests.admin.console import CLI, Console, make_operator, signed_in_client
from tests.bot.harness import Edge


def _record(msgid: str, sender: str, receiver: str, text: str) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [receiver],
        "roomid": "",
        "msgtime": int(time.time() * 1000),
        "msgtype": "text",
        "text": {"content": text},
    }


async def _key(name: str) -> tuple[str, str]:
    created = await admin_flows.do_create_api_key(
        actor=CLI, source="test", name=name, scopes=["archive:write"], table=load_table()
    )
    return created.plaintext, created.key.key_id


async def test_the_key_that_sent_a_message_is_kept_and_shown(edge: Edge) -> None:
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    core_key, core_id = await _key("core-banking")
    other_key, _ = await _key("crm")
    records = [
        _record("snd-1", ext, userid, "这个理财到期能拿回本金吗"),
        _record("snd-2", userid, ext, "您放心，这个产品保本保收益，稳赚不赔"),
    ]
    status, body = await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=records,
        headers={"Authorization": f"Bearer {core_key}"},
    )
    assert status == 200 and body["accepted"] == 2
    # The same record again, from another key: a duplicate, the first sender stays.
    status, body = await edge.api(
        "POST",
        "/api/v1/archive/messages",
        json=records[1:],
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert status == 200 and body["duplicate"] == 1
    await edge.process_all()
    rows = await models.Message.filter(msgid__in=["snd-1", "snd-2"]).values_list(
        "msgid", "ingested_by"
    )
    assert sorted(rows) == [("snd-1", f"api_key:{core_id}"), ("snd-2", f"api_key:{core_id}")]

    case = await models.ReviewCase.get(message__msgid="snd-2")
    console = Console(settings=edge.settings, app=edge.app, base=edge.base)
    edge.settings.admin.cookie_secure = False  # plain HTTP on loopback
    edge.settings.admin.totp_required_roles = []
    await make_operator("compliance", name="reviewer")
    client, _ = await signed_in_client(console, "reviewer")
    async with client, client.get(console.url(f"/review/{case.id}")) as r:
        html = await r.text()
    via = html.split('id="ingested-via">', 1)[1].split("</dd>", 1)[0]
    assert via == f"API 密钥 core-banking（{core_id}）"


async def test_records_not_sent_through_the_api_name_no_key(edge: Edge) -> None:
    from bot.archive import ingest_records
    from bot.keys import STREAM

    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    report = await ingest_records(edge.app[STREAM], [_record("pull-1", ext, userid, "你好")])
    assert report.accepted == 1
    await edge.process_all()
    assert (await models.Message.get(msgid="pull-1")).ingested_by is None
