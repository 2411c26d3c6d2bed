"""The sandbox's mass-send follow-up and the limits the SOP engine plans around:
get_groupmsg_task, remind_groupmsg_send (3 in 24 h), the WelcomeCode (20 s, once) and
the per-member app-message caps (dropped silently, errcode 0)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.sandbox import SandboxState, start_fake_wecom
from bot.wecom.client import WeComClient, WeComError


class Clock:
    def __init__(self) -> None:
        self.now = 1_789_000_000.0  # 2026-09-10, Beijing morning

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def corp(redis_client: aioredis.Redis) -> AsyncIterator[tuple[SandboxState, WeComClient]]:
    clock = Clock()
    state = SandboxState(clock=clock, auto_confirm_mass_send=False)
    state.seed_demo(random.Random(7))
    runner, base = await start_fake_wecom(state)
    async with aiohttp.ClientSession() as session:
        client = WeComClient(
            session=session,
            redis=redis_client,
            corp_id=state.corp_id,
            base_url=base,
            secrets=state.secrets,
            agent_id=state.agent_id,
            clock=clock,
            sleep=_no_sleep,
            busy_retries=0,
        )
        yield state, client
    await runner.cleanup()


async def errcode(coro: object) -> int:
    with pytest.raises(WeComError) as info:
        await coro  # type: ignore[misc]
    return info.value.errcode


async def test_task_status_follows_the_members_confirmation(
    corp: tuple[SandboxState, WeComClient],
) -> None:
    state, client = corp
    customers = list(state.follows["zhangwei"])[:2]
    task = await client.add_msg_template(
        sender="zhangwei", external_userid=customers, text="中秋安康"
    )
    msgid = task["msgid"]
    got = await client.call("externalcontact/get_groupmsg_task", json={"msgid": msgid})
    assert got["task_list"] == [{"userid": "zhangwei", "status": 0}]
    state.clock.now += 600  # type: ignore[attr-defined]
    state.confirm_mass_send(msgid)
    got = await client.call("externalcontact/get_groupmsg_task", json={"msgid": msgid})
    assert got["task_list"] == [
        {"userid": "zhangwei", "status": 2, "send_time": int(state.clock())}
    ]
    result = await client.get_groupmsg_send_result(msgid=msgid, userid="zhangwei")
    assert sorted(r["status"] for r in result["send_list"]) == [1, 1]


async def test_remind_three_times_a_day_then_the_frequency_code(
    corp: tuple[SandboxState, WeComClient],
) -> None:
    state, client = corp
    ext = list(state.follows["lina"])[0]
    msgid = (await client.add_msg_template(sender="lina", external_userid=[ext], text="提醒"))[
        "msgid"
    ]
    for _ in range(3):
        await client.call("externalcontact/remind_groupmsg_send", json={"msgid": msgid})
        state.clock.now += 3600  # type: ignore[attr-defined]
    assert await errcode(
        client.call("externalcontact/remind_groupmsg_send", json={"msgid": msgid})
    ) in (45009,)
    assert len(state.groupmsg_reminders[msgid]) == 3
    # A day after the first reminder, one more is allowed.
    state.clock.now += 21 * 3600 + 1  # type: ignore[attr-defined]
    await client.call("externalcontact/remind_groupmsg_send", json={"msgid": msgid})
    assert (
        await errcode(client.call("externalcontact/remind_groupmsg_send", json={"msgid": "nope"}))
        == 40058
    )


async def test_welcome_code_works_once_within_twenty_seconds(
    corp: tuple[SandboxState, WeComClient],
) -> None:
    state, client = corp
    ext = list(state.follows["wangfang"])[0]
    code = state.issue_welcome_code(userid="wangfang", external_userid=ext)
    state.clock.now += 19  # type: ignore[attr-defined]
    await client.send_welcome_msg(welcome_code=code, text="您好，我是王芳")
    assert await errcode(client.send_welcome_msg(welcome_code=code, text="again")) == 41051
    late = state.issue_welcome_code(userid="wangfang", external_userid=ext)
    state.clock.now += 21  # type: ignore[attr-defined]
    assert await errcode(client.send_welcome_msg(welcome_code=late, text="late")) == 41051
    assert [m["text"] for m in state.welcome_messages] == ["您好，我是王芳"]


async def test_app_messages_past_the_member_caps_are_dropped_silently(
    corp: tuple[SandboxState, WeComClient],
) -> None:
    state, client = corp
    for i in range(31):
        answer = await client.send_app_message(touser="chenjie", content=f"第{i}条")
        assert answer["errcode"] == 0  # WeCom says ok either way
    assert len(state.delivered_app_messages("chenjie")) == 30
    assert [m.drop_reason for m in state.dropped_app_messages("chenjie")] == ["minute_limit"]
