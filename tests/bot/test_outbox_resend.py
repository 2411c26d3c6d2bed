"""Which writes may be sent again after a request that may have reached WeCom."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot import outbox

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "write",
    [
        outbox.add_msg_template(sender="zhangwei", text="x", external_userid=["wm1"]),
        outbox.mark_tag(userid="zhangwei", external_userid="wm1", add_tag=["et1"]),
        outbox.send_welcome_msg(welcome_code="code", text="欢迎"),
        outbox.add_corp_tag(tags=[{"name": "高净值"}], group_name="客户等级"),
        outbox.remind_groupmsg_send(msgid="msg1"),
        outbox.Write("message/send", {"touser": "zhangwei", "msgtype": "text"}),
    ],
    ids=lambda w: w.api,
)
def test_writes_that_would_happen_twice_are_never_resent(write: outbox.Write) -> None:
    assert not outbox.resend_is_safe(write.api, write.payload, in_doubt_since=T0, at=T0)


def test_an_app_message_is_resent_only_inside_wecoms_duplicate_window() -> None:
    w = outbox.app_text(agent_id=1, touser="zhangwei", content="x", dedup_window_s=1800)
    inside = T0 + timedelta(seconds=1800 - outbox.DUPLICATE_CHECK_MARGIN_S - 1)
    outside = T0 + timedelta(seconds=1800 - outbox.DUPLICATE_CHECK_MARGIN_S)
    assert outbox.resend_is_safe(w.api, w.payload, in_doubt_since=T0, at=inside)
    assert not outbox.resend_is_safe(w.api, w.payload, in_doubt_since=T0, at=outside)


def test_recipients_show_members_and_mask_customers() -> None:
    ext = "wmSMJdx72WEesOY1N4r0DhdeTIzLt10M"
    tag = outbox.mark_tag(userid="zhangwei", external_userid=ext, add_tag=["et1"])
    shown = outbox.recipient_of(tag.api, tag.payload)
    assert "member:zhangwei" in shown and ext not in shown and "wmSM…Lt10M"[:4] in shown
    mass = outbox.add_msg_template(sender="lina", text="x", external_userid=[ext] * 5)
    shown = outbox.recipient_of(mass.api, mass.payload)
    assert shown == "member:lina customers:wmSM…t10M,wmSM…t10M,wmSM…t10M,+2"
    app = outbox.app_text(agent_id=1, touser="zhangwei", content="x")
    assert outbox.recipient_of(app.api, app.payload) == "member:zhangwei"
    welcome = outbox.send_welcome_msg(welcome_code="secretcode", text="欢迎")
    assert "secretcode" not in outbox.recipient_of(welcome.api, welcome.payload)
