"""The worker reads a callback's fields as the receiver parsed them, not the XML again."""

from __future__ import annotations

import json
import time

import pytest

from bot import models
from bot import pipeline as bot_pipeline
from bot.keys import KEYRING
from tests.bot.harness import Edge, xml


def _never_parsed_again(_xml: str) -> None:
    raise AssertionError("the worker parsed the callback XML again")


async def test_the_worker_stores_a_callback_from_the_receivers_fields(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "zhangwei",
            "CreateTime": int(time.time()),
            "MsgType": "text",
            "Content": "身份证110101199003074514发我，保证收益10%",
            "MsgId": "7300000000000000888",
            "AgentID": 1000002,
        }
    )
    assert await edge.post_callback(plain) == (200, "success")
    monkeypatch.setattr(bot_pipeline, "parse_inbound", _never_parsed_again)
    await edge.process_all()
    m = await models.Message.get(msgid="7300000000000000888")
    assert m.sender_id == "zhangwei" and m.msgtype == "text"
    assert "110101199003074514" not in m.masked_text and "保证收益" in m.masked_text
    # The original kept is what WeCom sent, the XML alone.
    keyring = edge.app[KEYRING]
    assert m.original_sealed is not None and "110101199003074514" not in m.original_sealed
    opened = keyring.open_text(m.original_sealed, aad=f"message:callback:{m.msgid}")
    assert json.loads(opened) == {"xml": plain}
