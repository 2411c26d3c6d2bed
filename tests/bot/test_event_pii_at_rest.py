"""Personal data outside messages: event fields, follow remarks, alert rows — none in clear.

Events carry what PIPL art. 28 calls sensitive (a member's Mobile/Email/Address in
change_contact, Latitude/Longitude in LOCATION); advisors type customers' numbers into
a contact's remark and description; an alert names the customer.  After storing all of
them, no raw value appears in the SQLite file or its WAL, the Redis AOF or the logs —
and nothing is lost: each original opens with the key, and the alert WeCom receives
still names the customer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import models
from bot.flows import (
    CLEAR_EVENT_FIELDS,
    SEALED_FIELD_NAMES,
    event_fields_aad,
    open_event_fields,
    open_follow_text,
)
from bot.jobs import OutboxDispatcher
from bot.keys import KEYRING, METRICS, WECOM_CLIENT
from bot.wecom.parse import parse_inbound
from core import redis as core_redis
from core.crypto import DecryptionError
from tests.bot.harness import Edge, start_edge, xml
from tests.conftest import make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wecom"

MOBILE = "13766554433"
EMAIL = "zhou.min@wealth-example.cn"
ADDRESS = "上海市浦东新区世纪大道100号"
LATITUDE = "31.2359291"
LONGITUDE = "121.5060583"
REMARK_PHONE = "13922220131"
ID_NO = "110101199003074514"
REMARK_EMAIL = "wang.zong@family-office.cn"
RAW = (MOBILE, EMAIL, ADDRESS, LATITUDE, LONGITUDE, REMARK_PHONE, ID_NO, REMARK_EMAIL)


def _event(event: str, **fields: Any) -> str:
    return xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": fields.pop("FromUserName", "sys"),
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": event,
            **fields,
        }
    )


@pytest.fixture
async def local_edge(tmp_path: Path) -> AsyncIterator[tuple[Edge, Path]]:
    """An edge whose SQLite file and Redis (with its AOF) all live under one data dir."""
    from tests.bot.conftest import InThreadAnalyzer

    data = tmp_path / "data"
    embedded = core_redis.start_embedded(data / "redis")
    settings = make_settings(
        data, database_url=f"sqlite://{data / 'siyu.sqlite3'}", redis_url=embedded.url
    )
    edge, closers = await start_edge(settings, analyzer=InThreadAnalyzer())
    try:
        yield edge, data
    finally:
        for c in closers:
            await c()
        embedded.shutdown()


async def test_no_personal_field_in_clear_anywhere(
    local_edge: tuple[Edge, Path], caplog: pytest.LogCaptureFixture
) -> None:
    edge, data = local_edge
    caplog.set_level(logging.DEBUG)
    # An advisor with a manager (who hears about churn) and a customer with a name.
    userid, ext = next(
        (u, e)
        for u, fs in edge.state.follows.items()
        for e in fs
        if edge.state.members[u].manager and edge.state.contacts[e].name
    )
    name = edge.state.contacts[ext].name
    follow = edge.state.follows[userid][ext]
    follow.remark = f"王总 {REMARK_PHONE}"
    follow.description = f"身份证{ID_NO}，邮箱{REMARK_EMAIL}，只做稳健型"

    callbacks = [
        _event(
            "change_contact",
            ChangeType="update_user",
            UserID="lina",
            Name="李娜",
            Mobile=MOBILE,
            Email=EMAIL,
            Address=ADDRESS,
            Position="理财经理",
        ),
        _event(
            "LOCATION",
            FromUserName="lina",
            AgentID=1000002,
            Latitude=LATITUDE,
            Longitude=LONGITUDE,
            Precision="30.0",
        ),
        _event(
            "change_external_contact",
            ChangeType="add_external_contact",
            UserID=userid,
            ExternalUserID=ext,
            State="wealth_salon",
            WelcomeCode="WELCOMECODE",
        ),
    ]
    for plain in callbacks:
        assert await edge.post_callback(plain) == (200, "success")
    await edge.process_all()
    churn = _event(
        "change_external_contact",
        ChangeType="del_follow_user",
        UserID=userid,
        ExternalUserID=ext,
    )
    assert await edge.post_callback(churn) == (200, "success")
    await edge.process_all()

    keyring = edge.app[KEYRING]
    # Nothing lost: every field is kept, the personal ones sealed ...
    member = await models.Event.get(event="change_contact")
    assert member.fields_json["UserID"] == "lina"
    assert set(member.fields_json[SEALED_FIELD_NAMES]) == {
        "Name",
        "Mobile",
        "Email",
        "Address",
        "Position",
    }
    assert open_event_fields(member, keyring=keyring)["Mobile"] == MOBILE
    location = await models.Event.get(event="LOCATION")
    assert "Latitude" not in location.fields_json
    assert open_event_fields(location, keyring=keyring)["Longitude"] == LONGITUDE
    added = await models.Event.get(change_type="add_external_contact")
    assert added.fields_json["State"] == "wealth_salon"  # channel attribution stays readable
    # ... the remark and description masked in clear, their originals sealed ...
    rel = await models.FollowRelation.get(
        customer__external_userid=ext, advisor__userid=userid
    ).prefetch_related("customer", "advisor")
    assert rel.remark.startswith("王总 139") and REMARK_PHONE not in rel.remark
    assert "只做稳健型" in rel.description
    assert open_follow_text(rel, "remark", keyring=keyring) == follow.remark
    assert open_follow_text(rel, "description", keyring=keyring) == follow.description
    # ... and the churn alert's row names the customer by a stand-in ...
    alert = await models.Alert.get(kind="churn")
    row = await models.OutboxItem.get(idem_key=f"notify:{alert.idem_key}")
    assert "流失预警" in row.payload["text"]["content"]
    assert name not in json.dumps(row.payload, ensure_ascii=False)
    assert ext[-6:] in row.payload["text"]["content"]
    assert row.payload_sealed and name not in row.payload_sealed
    # ... while the message WeCom receives still names them.
    dispatcher = OutboxDispatcher(
        client=edge.app[WECOM_CLIENT],
        settings=edge.settings.outbox,
        metrics=edge.app[METRICS],
        keyring=keyring,
    )
    await dispatcher.dispatch_due()
    manager = edge.state.members[userid].manager
    sent = [m.content["content"] for m in edge.state.delivered_app_messages(manager)]
    assert any("流失预警" in t and name in t for t in sent), sent

    leaks: list[str] = []
    for raw in RAW:
        if raw in caplog.text:
            leaks.append(f"logs:{raw}")
        for path in data.rglob("*"):
            if path.is_file() and raw.encode() in path.read_bytes():
                leaks.append(f"{path.relative_to(data)}:{raw}")
    files = {p.name for p in data.rglob("*") if p.is_file()}
    assert any(n.endswith(".aof") or "appendonly" in n for n in files), files  # AOF searched
    assert "siyu.sqlite3" in files
    assert not leaks, leaks


@pytest.mark.parametrize(
    "fixture", sorted(p.name for p in FIXTURES.glob("event_*.xml")), ids=lambda n: n[6:-4]
)
async def test_every_event_keeps_only_allowed_fields_in_clear_and_loses_none(
    edge: Edge, fixture: str
) -> None:
    plain = (FIXTURES / fixture).read_text(encoding="utf-8")
    assert (await edge.post_callback(plain))[0] == 200
    await edge.process_all()
    event = await models.Event.get()
    clear = set(event.fields_json) - {SEALED_FIELD_NAMES}
    assert clear <= CLEAR_EVENT_FIELDS
    assert open_event_fields(event, keyring=edge.app[KEYRING]) == parse_inbound(plain).fields


async def test_sealed_event_fields_are_bound_to_their_row(edge: Edge) -> None:
    for plain in (
        _event("LOCATION", FromUserName="lina", Latitude=LATITUDE, Longitude=LONGITUDE),
        _event("LOCATION", FromUserName="wangfang", Latitude="22.5", Longitude="114.0"),
    ):
        await edge.post_callback(plain)
    await edge.process_all()
    first, second = await models.Event.filter(event="LOCATION").order_by("id")
    assert first.fields_sealed
    # Copied onto another row, a sealed value no longer opens.
    with pytest.raises(DecryptionError):
        edge.app[KEYRING].open_text(first.fields_sealed, aad=event_fields_aad(second.event_key))
