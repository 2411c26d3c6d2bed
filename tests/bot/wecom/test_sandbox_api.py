"""The fake WeCom API: WeCom's shapes, errcodes and limits, driven by a controlled clock.

Raw HTTP where the client would hide the behaviour (token errors, which it retries);
the real client elsewhere.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.sandbox import SandboxState, start_fake_wecom
from bot.sandbox.fake_api import ExternalContact, FollowInfo, Member
from bot.wecom.client import WeComClient, WeComError


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:  # 2023-11-15 06:13 Beijing
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _no_sleep(_: float) -> None:
    return None


class Sandbox:
    def __init__(
        self,
        state: SandboxState,
        base_url: str,
        session: aiohttp.ClientSession,
        clock: FakeClock,
        client: WeComClient,
    ) -> None:
        self.state = state
        self.base_url = base_url
        self.session = session
        self.clock = clock
        self.client = client

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.base_url + path, params=params) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def post(self, path: str, payload: Any, **params: str) -> dict[str, Any]:
        async with self.session.post(self.base_url + path, json=payload, params=params) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def token(self, kind: str = "app") -> str:
        body = await self.get(
            "/cgi-bin/gettoken", corpid=self.state.corp_id, corpsecret=self.state.secrets[kind]
        )
        token: str = body["access_token"]
        return token

    async def errcode(self, coro: Any) -> int:
        with pytest.raises(WeComError) as info:
            await coro
        return info.value.errcode


@pytest.fixture
async def sandbox(redis_client: aioredis.Redis) -> AsyncIterator[Sandbox]:
    clock = FakeClock()
    state = SandboxState(clock=clock)
    state.seed_demo(random.Random(42))
    runner, base_url = await start_fake_wecom(state)
    async with aiohttp.ClientSession() as session:
        client = WeComClient(
            session=session,
            redis=redis_client,
            corp_id=state.corp_id,
            base_url=base_url,
            secrets=state.secrets,
            agent_id=state.agent_id,
            clock=clock,
            sleep=_no_sleep,
            rate_limits={"message/send": (100_000, 10_000.0)},
        )
        yield Sandbox(state, base_url, session, clock, client)
    await runner.cleanup()


def _customer_of(state: SandboxState, userid: str, index: int = 0) -> str:
    return list(state.follows[userid])[index]


# -------------------------------------------------------------------- seed


def test_seed_demo_builds_a_believable_corp() -> None:
    one, two = SandboxState(clock=FakeClock()), SandboxState(clock=FakeClock())
    one.seed_demo(random.Random(3))
    two.seed_demo(random.Random(3))

    assert len(one.contacts) == 30
    assert {m.position for m in one.members.values()} >= {"客户经理", "财富管理部总经理"}
    advisors = [m for m in one.members.values() if m.manager == "liuyang"]
    assert len(advisors) >= 5
    assert "财富管理部" in one.departments.values()
    assert {g.group_name for g in one.tag_groups.values()} == {"客户等级", "风险偏好", "产品兴趣"}
    assert all(g.group_id.startswith("et") for g in one.tag_groups.values())
    assert all(ext.startswith("wm") for ext in one.contacts)
    followed = {ext for rel in one.follows.values() for ext in rel}
    assert followed == set(one.contacts)
    assert len(one.group_chats) == 2
    # Same seed, same corp: the demo is reproducible.
    assert [c.name for c in one.contacts.values()] == [c.name for c in two.contacts.values()]
    assert list(one.contacts) == list(two.contacts)


# ------------------------------------------------------------------ tokens


async def test_gettoken_answers_the_same_token_until_it_expires(sandbox: Sandbox) -> None:
    first = await sandbox.get(
        "/cgi-bin/gettoken", corpid=sandbox.state.corp_id, corpsecret=sandbox.state.secrets["app"]
    )
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert first["expires_in"] == 7200
    assert await sandbox.token() == first["access_token"]
    assert await sandbox.token("contact") != first["access_token"]

    sandbox.clock.advance(7200)
    assert await sandbox.token() != first["access_token"]


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"corpid": "wwsandbox0000000001", "corpsecret": "wrong"}, 40001),
        ({"corpid": "wwother", "corpsecret": "x"}, 40013),
        ({"corpid": "wwsandbox0000000001"}, 41004),
        ({"corpsecret": "x"}, 41002),
    ],
)
async def test_gettoken_errors(sandbox: Sandbox, params: dict[str, str], errcode: int) -> None:
    body = await sandbox.get("/cgi-bin/gettoken", **params)
    assert body["errcode"] == errcode
    assert "access_token" not in body
    assert (
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}" in body["errmsg"]
    )


async def test_token_errors_41001_40014_42001(sandbox: Sandbox) -> None:
    missing = await sandbox.get("/cgi-bin/user/get", userid="zhangwei")
    assert missing["errcode"] == 41001
    assert missing["errmsg"].startswith("access_token missing")

    bogus = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token="nope")
    assert bogus["errcode"] == 40014
    assert bogus["errmsg"].startswith("invalid access_token")

    token = await sandbox.token()
    ok = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token)
    assert ok["errcode"] == 0 and ok["direct_leader"] == ["liuyang"]

    sandbox.clock.advance(7200)
    expired = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token)
    assert expired["errcode"] == 42001


async def test_control_endpoints_expire_and_invalidate(sandbox: Sandbox) -> None:
    token = await sandbox.token()
    await sandbox.post("/sandbox/tokens/expire", {})
    body = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token)
    assert body["errcode"] == 42001

    token = await sandbox.token()
    await sandbox.post("/sandbox/tokens/invalidate", {})
    body = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token)
    assert body["errcode"] == 40014


async def test_only_the_app_token_sends_app_messages(sandbox: Sandbox) -> None:
    token = await sandbox.token("contact")
    body = await sandbox.post(
        "/cgi-bin/message/send",
        {
            "touser": "zhangwei",
            "msgtype": "text",
            "agentid": sandbox.state.agent_id,
            "text": {"content": "hi"},
        },
        access_token=token,
    )
    assert body["errcode"] == 48002


async def test_bad_json_is_47001(sandbox: Sandbox) -> None:
    token = await sandbox.token()
    async with sandbox.session.post(
        f"{sandbox.base_url}/cgi-bin/message/send",
        params={"access_token": token},
        data=b"{not json",
    ) as resp:
        assert (await resp.json())["errcode"] == 47001


# ------------------------------------------------------------ fault levers


async def test_inject_fails_the_next_calls_then_recovers(sandbox: Sandbox) -> None:
    token = await sandbox.token()
    await sandbox.post("/sandbox/inject", {"api": "user/get", "errcode": -1, "times": 2})

    codes = [
        (await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token))["errcode"]
        for _ in range(3)
    ]

    assert codes == [-1, -1, 0]
    calls = await sandbox.get("/sandbox/calls")
    assert calls["calls"]["user/get"] == 3


async def test_per_api_rate_limit_answers_45009(sandbox: Sandbox) -> None:
    sandbox.state.rate_limits["user/get"] = (3, 60.0)
    token = await sandbox.token()

    codes = [
        (await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token))["errcode"]
        for _ in range(4)
    ]
    assert codes == [0, 0, 0, 45009]

    sandbox.clock.advance(60)
    body = await sandbox.get("/cgi-bin/user/get", userid="zhangwei", access_token=token)
    assert body["errcode"] == 0


# ------------------------------------------------------------ welcome codes


async def test_welcome_code_works_once(sandbox: Sandbox) -> None:
    ext = _customer_of(sandbox.state, "zhangwei")
    code = sandbox.state.issue_welcome_code(userid="zhangwei", external_userid=ext)

    await sandbox.client.send_welcome_msg(welcome_code=code, text="您好，我是您的客户经理张伟")
    assert (
        await sandbox.errcode(sandbox.client.send_welcome_msg(welcome_code=code, text="again"))
        == 41051
    )

    assert [(m["userid"], m["external_userid"]) for m in sandbox.state.welcome_messages] == [
        ("zhangwei", ext)
    ]


async def test_welcome_code_expires_after_20_seconds(sandbox: Sandbox) -> None:
    ext = _customer_of(sandbox.state, "zhangwei")
    issued = await sandbox.post(
        "/sandbox/welcome_codes", {"userid": "zhangwei", "external_userid": ext}
    )
    code = issued["welcome_code"]

    sandbox.clock.advance(20.5)

    assert (
        await sandbox.errcode(
            sandbox.client.send_welcome_msg(welcome_code=code, text="迟到的欢迎语")
        )
        == 41051
    )
    assert sandbox.state.welcome_messages == []


async def test_welcome_code_within_20_seconds_is_accepted(sandbox: Sandbox) -> None:
    ext = _customer_of(sandbox.state, "wangfang")
    code = sandbox.state.issue_welcome_code(userid="wangfang", external_userid=ext)
    sandbox.clock.advance(19)
    await sandbox.client.send_welcome_msg(welcome_code=code, text="欢迎")
    assert len(sandbox.state.welcome_messages) == 1


# ------------------------------------------------------------- app messages


async def test_app_messages_past_30_a_minute_are_dropped_silently(sandbox: Sandbox) -> None:
    for i in range(35):
        answer = await sandbox.client.send_app_message(touser="zhangwei", content=f"提醒 {i}")
        assert answer["errcode"] == 0 and answer["invaliduser"] == ""

    assert len(sandbox.state.delivered_app_messages("zhangwei")) == 30
    dropped = sandbox.state.dropped_app_messages("zhangwei")
    assert [m.drop_reason for m in dropped] == ["minute_limit"] * 5
    assert [m.content["content"] for m in dropped] == [f"提醒 {i}" for i in range(30, 35)]

    # Another member's quota is separate, and the minute passes.
    await sandbox.client.send_app_message(touser="wangfang", content="提醒")
    assert len(sandbox.state.delivered_app_messages("wangfang")) == 1
    sandbox.clock.advance(60)
    await sandbox.client.send_app_message(touser="zhangwei", content="下一分钟")
    assert len(sandbox.state.delivered_app_messages("zhangwei")) == 31

    listed = await sandbox.get("/sandbox/app_messages", touser="zhangwei")
    assert sum(m["dropped"] for m in listed["app_messages"]) == 5


async def test_app_messages_past_the_hourly_limit_are_dropped(sandbox: Sandbox) -> None:
    assert (sandbox.state.member_minute_limit, sandbox.state.member_hour_limit) == (30, 1000)
    sandbox.state.member_hour_limit = 45  # same rule, smaller number, fewer requests
    for minute in range(3):
        for i in range(20):
            await sandbox.client.send_app_message(touser="lina", content=f"{minute}-{i}")
        sandbox.clock.advance(61)

    assert len(sandbox.state.delivered_app_messages("lina")) == 45
    assert {m.drop_reason for m in sandbox.state.dropped_app_messages("lina")} == {"hour_limit"}

    sandbox.clock.advance(3600)
    await sandbox.client.send_app_message(touser="lina", content="an hour later")
    assert len(sandbox.state.delivered_app_messages("lina")) == 46


async def test_app_message_duplicate_check(sandbox: Sandbox) -> None:
    for _ in range(2):
        await sandbox.client.send_app_message(
            touser="zhaomin",
            content="同一条",
            enable_duplicate_check=True,
            duplicate_check_interval=600,
        )
    assert len(sandbox.state.delivered_app_messages("zhaomin")) == 1
    assert sandbox.state.dropped_app_messages("zhaomin")[0].drop_reason == "duplicate"


async def test_app_message_errors(sandbox: Sandbox) -> None:
    client = sandbox.client
    assert await sandbox.errcode(client.send_app_message(touser="ghost", content="x")) == 81013
    assert await sandbox.errcode(client.send_app_message(touser="zhangwei", content="")) == 44004
    bad_agent = WeComClient(
        session=sandbox.session,
        redis=client._redis,
        corp_id=sandbox.state.corp_id,
        base_url=sandbox.base_url,
        secrets=sandbox.state.secrets,
        agent_id=1,
        sleep=_no_sleep,
    )
    assert (
        await sandbox.errcode(bad_agent.send_app_message(touser="zhangwei", content="x")) == 40056
    )


# ------------------------------------------------------------- contacts


async def test_directory_and_contacts(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    user = await client.get_user("zhangwei")
    assert user["department"] == [2] and user["position"] == "客户经理"
    assert await sandbox.errcode(client.get_user("nobody")) == 60111
    assert await sandbox.errcode(client.list_users(99)) == 60123

    listed = await client.list_external_contacts("zhangwei")
    assert listed["external_userid"] == list(state.follows["zhangwei"])
    assert await sandbox.errcode(client.list_external_contacts("nobody")) == 40003
    assert await sandbox.errcode(client.list_external_contacts("sunli")) == 84061

    ext = listed["external_userid"][0]
    detail = await client.get_external_contact(ext)
    contact = detail["external_contact"]
    assert contact["name"] == state.contacts[ext].name
    assert {"external_userid", "name", "type", "gender"} <= contact.keys()
    follow = next(f for f in detail["follow_user"] if f["userid"] == "zhangwei")
    assert {"remark", "createtime", "tags", "add_way"} <= follow.keys()
    assert all({"group_name", "tag_name", "tag_id", "type"} <= t.keys() for t in follow["tags"])
    assert await sandbox.errcode(client.get_external_contact("wmUnknown")) == 40096


async def test_batch_get_by_user_pages_with_a_cursor(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    advisors = ["zhangwei", "wangfang", "lina"]
    expected = sum(len(state.follows[a]) for a in advisors)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await client.batch_get_by_user(advisors, cursor=cursor, limit=4)
        assert len(page["external_contact_list"]) <= 4
        for row in page["external_contact_list"]:
            assert "tag_id" in row["follow_info"]
            seen.append(row["external_contact"]["external_userid"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == expected
    assert await sandbox.errcode(client.batch_get_by_user([])) == 40058


# ---------------------------------------------------------------- tags


async def test_corp_tag_crud_and_mark_tag(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    groups = (await client.get_corp_tag_list())["tag_group"]
    assert [g["group_name"] for g in groups] == ["客户等级", "风险偏好", "产品兴趣"]

    level = groups[0]
    added = await client.add_corp_tag(group_id=level["group_id"], tags=[{"name": "钻石客户"}])
    new_tag = added["tag_group"]["tag"][0]
    assert new_tag["id"].startswith("et") and new_tag["name"] == "钻石客户"
    assert (
        await sandbox.errcode(
            client.add_corp_tag(group_id=level["group_id"], tags=[{"name": "钻石客户"}])
        )
        == 40071
    )
    # A known group name adds into that group instead of creating a second one.
    await client.add_corp_tag(group_name="客户等级", tags=[{"name": "黑钻客户"}])
    assert (
        len((await client.get_corp_tag_list(group_id=[level["group_id"]]))["tag_group"][0]["tag"])
        == len(level["tag"]) + 2
    )

    ext = _customer_of(state, "chenjie")
    await client.mark_tag(userid="chenjie", external_userid=ext, add_tag=[new_tag["id"]])
    assert new_tag["id"] in state.follows["chenjie"][ext].tags
    assert (
        await sandbox.errcode(
            client.mark_tag(userid="chenjie", external_userid=ext, add_tag=["etNoSuchTag"])
        )
        == 40068
    )
    stranger = next(e for e in state.contacts if e not in state.follows["chenjie"])
    assert (
        await sandbox.errcode(
            client.mark_tag(userid="chenjie", external_userid=stranger, add_tag=[new_tag["id"]])
        )
        == 84061
    )

    await client.edit_corp_tag(id=new_tag["id"], name="钻石卡客户", order=9)
    assert await sandbox.errcode(client.edit_corp_tag(id="etGone", name="x")) == 40068

    await client.del_corp_tag(tag_id=[new_tag["id"]])
    assert new_tag["id"] not in state.follows["chenjie"][ext].tags
    assert await sandbox.errcode(client.del_corp_tag(tag_id=[new_tag["id"]])) == 40068
    assert await sandbox.errcode(client.del_corp_tag()) == 40058


# ------------------------------------------------------------- mass sends


async def test_mass_send_reaches_a_customer_once_a_day(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    first, second = list(state.follows["zhaomin"])[:2]

    task = await client.add_msg_template(
        sender="zhaomin", external_userid=[first, "wmNobody"], text="本周基金定投提示"
    )
    assert task["fail_list"] == ["wmNobody"]
    assert task["msgid"].startswith("msg")
    result = await client.get_groupmsg_send_result(msgid=task["msgid"], userid="zhaomin")
    assert [(r["external_userid"], r["status"]) for r in result["send_list"]] == [(first, 1)]
    assert "send_time" in result["send_list"][0]

    again = await client.add_msg_template(
        sender="zhaomin", external_userid=[first, second], text="同日第二条"
    )
    result = await client.get_groupmsg_send_result(msgid=again["msgid"], userid="zhaomin")
    assert {r["external_userid"]: r["status"] for r in result["send_list"]} == {first: 3, second: 1}

    sandbox.clock.advance(86400)
    next_day = await client.add_msg_template(sender="zhaomin", external_userid=[first], text="次日")
    result = await client.get_groupmsg_send_result(msgid=next_day["msgid"], userid="zhaomin")
    assert result["send_list"][0]["status"] == 1


async def test_mass_send_waits_for_the_member_to_confirm(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    state.auto_confirm_mass_send = False
    ext = _customer_of(state, "zhangwei")
    task = await client.add_msg_template(sender="zhangwei", external_userid=[ext], text="待确认")
    result = await client.get_groupmsg_send_result(msgid=task["msgid"], userid="zhangwei")
    assert result["send_list"][0]["status"] == 0

    del state.follows["zhangwei"][ext]  # the customer deleted the advisor meanwhile
    await sandbox.post("/sandbox/mass_send/confirm", {"msgid": task["msgid"]})

    result = await client.get_groupmsg_send_result(msgid=task["msgid"], userid="zhangwei")
    assert result["send_list"][0]["status"] == 2


async def test_mass_send_needs_content_and_targets(sandbox: Sandbox) -> None:
    client = sandbox.client
    assert (
        await sandbox.errcode(client.add_msg_template(sender="zhangwei", external_userid=["x"]))
        == 40058
    )
    assert await sandbox.errcode(client.add_msg_template(text="hello")) == 40058
    assert await sandbox.errcode(client.add_msg_template(sender="ghost", text="hello")) == 40003


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_attachments_need_live_media_of_their_type(sandbox: Sandbox) -> None:
    client, state = sandbox.client, sandbox.state
    ext = _customer_of(state, "zhangwei")
    image = (
        await client.upload_media("image", filename="a.png", content=PNG, content_type="image/png")
    )["media_id"]
    doc = (
        await client.upload_media(
            "file", filename="a.pdf", content=b"%PDF-1.4 x", content_type="application/pdf"
        )
    )["media_id"]
    cover = {"title": "开户", "appid": "wx0123456789abcdef", "page": "pages/a.html"}

    def send(*attachments: dict[str, Any]) -> Any:
        return client.add_msg_template(
            sender="zhangwei", external_userid=[ext], attachments=list(attachments)
        )

    ok = await send(
        {"msgtype": "image", "image": {"media_id": image}},
        {"msgtype": "file", "file": {"media_id": doc}},
        {"msgtype": "miniprogram", "miniprogram": {**cover, "pic_media_id": image}},
        {"msgtype": "link", "link": {"title": "周报", "url": "https://example.com/w"}},
    )
    assert ok["msgid"]
    assert len(state.mass_sends[ok["msgid"]].attachments) == 4
    # WeCom's checks: unknown or expired ids (40007), an id of another type, no cover,
    # a link without url, more than nine attachments.
    assert (
        await sandbox.errcode(send({"msgtype": "image", "image": {"media_id": "3nope"}})) == 40007
    )
    assert await sandbox.errcode(send({"msgtype": "file", "file": {"media_id": image}})) == 40007
    assert await sandbox.errcode(send({"msgtype": "miniprogram", "miniprogram": cover})) == 40007
    assert await sandbox.errcode(send({"msgtype": "link", "link": {"title": "周报"}})) == 40058
    link = {"msgtype": "link", "link": {"title": "周报", "url": "https://example.com/w"}}
    assert await sandbox.errcode(send(*[link] * 10)) == 40058
    code = state.issue_welcome_code(userid="zhangwei", external_userid=ext)
    sandbox.clock.advance(3 * 24 * 3600)  # the media ids expire after three days
    welcome = client.send_welcome_msg(
        welcome_code=code, attachments=[{"msgtype": "image", "image": {"media_id": image}}]
    )
    assert await sandbox.errcode(welcome) == 40007
    app_image = client.call(
        "message/send",
        json={
            "touser": "zhangwei",
            "msgtype": "image",
            "agentid": state.agent_id,
            "image": {"media_id": image},
        },
    )
    assert await sandbox.errcode(app_image) == 40007


# ------------------------------------------------------------- group chats


async def test_group_chats(sandbox: Sandbox) -> None:
    client = sandbox.client
    listed = await client.list_group_chats()
    assert len(listed["group_chat_list"]) == 2
    assert listed["next_cursor"] == ""
    chat_id = listed["group_chat_list"][0]["chat_id"]

    chat = (await client.get_group_chat(chat_id))["group_chat"]
    assert chat["chat_id"] == chat_id
    assert {m["type"] for m in chat["member_list"]} == {1, 2}
    assert all("name" not in m for m in chat["member_list"])
    named = (await client.get_group_chat(chat_id, need_name=True))["group_chat"]
    assert all(m["name"] for m in named["member_list"])

    assert await sandbox.errcode(client.get_group_chat("wrNoSuchChat")) == 40050
    only_zhaomin = await client.list_group_chats(owner_userids=["zhaomin"])
    assert len(only_zhaomin["group_chat_list"]) == 1


async def test_state_helpers_add_members_and_contacts() -> None:
    state = SandboxState(clock=FakeClock())
    state.add_member(Member("advisor1", "周婷", [1], "13800000000", "客户经理"))
    state.add_contact(
        ExternalContact("wmX", "吴强", unionid="oX"),
        {"advisor1": FollowInfo(createtime=1, state="qr_1")},
    )
    assert state.follows["advisor1"]["wmX"].state == "qr_1"
