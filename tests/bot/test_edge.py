"""The edge end to end: encrypted callbacks in, rows out, alerts queued."""

from __future__ import annotations

import time

from bot import models
from tests.bot.harness import Edge, xml


def text_msg(msg_id: str, content: str, sender: str = "zhangwei") -> str:
    return xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": sender,
            "CreateTime": int(time.time()),
            "MsgType": "text",
            "Content": content,
            "MsgId": msg_id,
            "AgentID": 1000002,
        }
    )


def contact_event(change: str, userid: str, external: str, **extra: str) -> str:
    return xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "sys",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "change_external_contact",
            "ChangeType": change,
            "UserID": userid,
            "ExternalUserID": external,
            **extra,
        }
    )


async def test_url_verification_answers_echostr(edge: Edge) -> None:
    ts, nonce = str(int(time.time())), "n0nce1"
    echostr, sig = edge.crypto.encrypt("echo-1234567", nonce=nonce, timestamp=ts)
    async with edge.session.get(
        f"{edge.base}/wecom/callback",
        params={"msg_signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr},
    ) as resp:
        assert resp.status == 200
        assert await resp.text() == "echo-1234567"
    async with edge.session.get(
        f"{edge.base}/wecom/callback",
        params={"msg_signature": "0" * 40, "timestamp": ts, "nonce": nonce, "echostr": echostr},
    ) as resp:
        assert resp.status == 403


async def test_message_delivered_three_times_is_stored_once(edge: Edge) -> None:
    plain = text_msg("7300000000000000001", "我的手机号是13812345678，帮我查下理财到期日")
    for _ in range(3):  # WeCom's retries re-sign with new nonces
        assert await edge.post_callback(plain) == (200, "success")
    assert await edge.queued() == 1
    await edge.process_all()
    rows = await models.Message.filter(msgid="7300000000000000001")
    assert len(rows) == 1
    m = rows[0]
    assert m.source == "callback" and m.direction == "member_to_app"
    # PII never stored in clear; the original is sealed and opens with the key.
    assert "13812345678" not in m.masked_text and "138" in m.masked_text
    assert "13812345678" not in (m.original_sealed or "")
    keyring = edge.app[__import__("bot.keys", fromlist=["KEYRING"]).KEYRING]
    opened = keyring.open_text(m.original_sealed, aad=f"message:callback:{m.msgid}")
    assert "13812345678" in opened
    # Redelivery of the same stream entry after the commit is a no-op.
    await edge.post_callback(plain)
    await edge.process_all()
    assert await models.Message.filter(msgid="7300000000000000001").count() == 1


async def test_add_contact_fetches_profile_and_keeps_channel(edge: Edge) -> None:
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    status, _ = await edge.post_callback(
        contact_event(
            "add_external_contact", userid, ext, State="wealth_salon", WelcomeCode="WELCOMECODE"
        )
    )
    assert status == 200
    await edge.process_all()
    customer = await models.Customer.get(external_userid=ext)
    assert customer.name == edge.state.contacts[ext].name
    assert not customer.needs_sync
    rel = await models.FollowRelation.get(customer=customer).prefetch_related("advisor")
    assert rel.advisor.userid == userid and rel.status == "active"
    advisor = await models.Advisor.get(userid=userid)
    assert advisor.manager_userid == edge.state.members[userid].manager
    event = await models.Event.get(change_type="add_external_contact")
    assert event.fields_json["WelcomeCode"] == "WELCOMECODE"


async def test_two_customers_added_in_the_same_second_are_both_kept(edge: Edge) -> None:
    userid = "zhangwei"
    exts = [e for e in list(edge.state.follows.get(userid, {}))][:2]
    assert len(exts) == 2
    now = int(time.time())
    for ext in exts:
        plain = xml(
            {
                "ToUserName": "wwtestcorp0000001",
                "FromUserName": "sys",
                "CreateTime": now,
                "MsgType": "event",
                "Event": "change_external_contact",
                "ChangeType": "add_external_contact",
                "UserID": userid,
                "ExternalUserID": ext,
            }
        )
        assert (await edge.post_callback(plain))[0] == 200
    await edge.process_all()
    assert await models.Event.filter(change_type="add_external_contact").count() == 2


async def test_del_follow_user_marks_lost_and_alerts_manager(edge: Edge) -> None:
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    await edge.post_callback(contact_event("add_external_contact", userid, ext))
    await edge.process_all()
    await edge.post_callback(contact_event("del_follow_user", userid, ext))
    await edge.process_all()
    rel = await models.FollowRelation.get(customer__external_userid=ext, advisor__userid=userid)
    assert rel.status == "lost"
    manager = edge.state.members[userid].manager
    alert = await models.Alert.get(kind="churn")
    assert alert.recipient_userid == manager
    out = await models.OutboxItem.get(idem_key=f"notify:{alert.idem_key}")
    assert out.api == "message/send" and out.payload["touser"] == manager
    assert "流失预警" in out.payload["text"]["content"]


async def test_unknown_payload_is_kept_not_dropped(edge: Edge) -> None:
    plain = xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "sys",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "some_future_event",
            "Foo": "bar",
        }
    )
    assert (await edge.post_callback(plain))[0] == 200
    await edge.process_all()
    ev = await models.Event.get(event="some_future_event")
    assert ev.kind == "unknown" and ev.raw_sealed


async def test_metrics_and_health(edge: Edge) -> None:
    await edge.post_callback(text_msg("7300000000000000009", "你好"))
    async with edge.session.get(f"{edge.base}/metrics") as resp:
        body = await resp.text()
    assert 'siyu_callbacks_total{outcome="queued"} 1.0' in body
    assert "siyu_queue_length 1.0" in body
    async with edge.session.get(f"{edge.base}/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["checks"] == {"redis": "ok", "database": "ok"}


async def test_logs_carry_ids_not_bodies(edge: Edge, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from core.logs import JsonFormatter

    caplog.set_level(logging.DEBUG)
    secret_text = "身份证110101199003074514，电话13812345678"
    await edge.post_callback(text_msg("7300000000000000077", secret_text))
    await edge.post_callback(text_msg("7300000000000000077", secret_text) + "<bad")  # refused
    await edge.process_all()
    fmt = JsonFormatter()
    lines = [fmt.format(r) for r in caplog.records]
    assert lines, "expected some log lines"
    for line in lines:
        assert "13812345678" not in line and "110101199003074514" not in line
