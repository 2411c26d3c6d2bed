"""A message's sealed original is its stream entry's text, sealed again as it came."""

from __future__ import annotations

import json
import time

from bot import models
from bot.keys import KEYRING, STREAM
from bot.stream import payload_aad
from bot.wecom.parse import parse_inbound
from tests.bot.harness import Edge, xml


async def test_the_original_is_the_text_the_entry_held(edge: Edge) -> None:
    plain = xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "zhangwei",
            "CreateTime": int(time.time()),
            "MsgType": "text",
            "Content": "客户电话13812345678，保证收益",
            "MsgId": "7300000000000000777",
            "AgentID": 1000002,
        }
    )
    key = parse_inbound(plain).dedup_key
    # Queued by an earlier release, which laid its JSON out another way: the stored
    # original is that text, not the payload encoded again.
    queued = json.dumps({"xml": plain}, ensure_ascii=False, indent=1)
    stream, keyring = edge.app[STREAM], edge.app[KEYRING]
    await stream.redis.xadd(
        stream.stream,
        {
            "src": "callback",
            "key": key,
            "p": keyring.seal_text(queued, aad=payload_aad(key)),
            "t": str(int(time.time() * 1000)),
        },
    )
    await edge.process_all()
    m = await models.Message.get(msgid="7300000000000000777")
    assert "13812345678" not in m.masked_text and "13812345678" not in (m.original_sealed or "")
    assert m.original_sealed is not None
    assert keyring.open_text(m.original_sealed, aad=f"message:callback:{m.msgid}") == queued
