"""A read of customer messages with no active campaign reads no enrolment.

Without an active campaign no message ends a journey or triggers one (an enrolment is
judged against its campaign's plan only), so the SOP hook no longer reads the read's
customers' enrolments then (issue 8, item 11: the hook's cost on every read).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from tortoise.transactions import in_transaction

from bot.hooks import StoredMessage
from bot.schemas import Direction
from sop.engine import enrol


def _line(i: int) -> StoredMessage:
    return StoredMessage(
        id=i,
        source="archive",
        msgid=f"m{i}",
        direction=Direction.CUSTOMER_TO_ADVISOR,
        sender_role="customer",
        customer=f"wmREAD{i % 3:04d}",
        advisor="lina",
        roomid=None,
        msgtime=datetime.now(UTC),
        msgtype="text",
        text_masked="这个理财还能买吗",
        intent="purchase_intent",
        intent_score=0.9,
        sentiment="neutral",
        violation_categories=(),
        has_violation=False,
    )


async def test_no_enrolment_is_read_without_an_active_campaign(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tortoise.db_client")
    async with in_transaction() as conn:
        await enrol.on_messages([_line(i) for i in range(6)], conn)
    statements = [r.getMessage() for r in caplog.records if r.name == "tortoise.db_client"]
    assert any('"sop_campaign"' in s for s in statements)  # it looked for campaigns
    assert not [s for s in statements if '"sop_enrolment"' in s]
