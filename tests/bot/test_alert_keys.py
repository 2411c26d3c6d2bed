"""Alert keys built from the longest ids WeCom sends still fit their columns."""

from __future__ import annotations

import time

from bot import models
from bot.flows import bounded_key
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record


def test_long_keys_keep_a_readable_head_and_stay_distinct() -> None:
    a = bounded_key("redemption_intent:archive:" + "1" * 128 + ":zhangwei")
    b = bounded_key("redemption_intent:archive:" + "1" * 128 + ":lisi")
    assert len(a) <= 150 and len(b) <= 150 and a != b
    assert a.startswith("redemption_intent:archive:111")
    assert bounded_key("violation:archive:m1") == "violation:archive:m1"


async def test_an_intent_alert_on_a_128_character_msgid_is_stored(edge: Edge) -> None:
    """redemption_intent + source + a 128-character msgid + the advisor's userid is over
    160 characters: before, the store failed and the message was dead-lettered."""
    userid, ext = a_relation(edge)
    msgid = "7" * 100 + "_" + "a" * 18 + "_external"  # 128 characters
    assert len(msgid) == 128
    rec = record(
        msgid, ext, userid, "我要赎回，全部取出来，不想要了", at_ms=int(time.time() * 1000)
    )
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=[rec])
    assert status == 200 and body["accepted"] == 1
    await edge.process_all()
    message = await models.Message.get(source="archive", msgid=msgid)
    assert message.intent == "redemption_intent"
    alerts = await models.Alert.filter(msgid=msgid)
    assert alerts and all(len(a.idem_key) <= 160 for a in alerts)
    assert not await models.DeadLetter.all().exists()
