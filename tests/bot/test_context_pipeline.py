"""Archive transcripts are judged in their conversation before anything is stored."""

from __future__ import annotations

import time

from bot import models
from tests.bot.harness import Edge


def record(msgid: str, sender: str, to: str, text: str, at_ms: int) -> dict[str, object]:
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": at_ms,
        "msgtype": "text",
        "text": {"content": text},
    }


def a_relation(edge: Edge) -> tuple[str, str]:
    return next((u, e) for u, fs in edge.state.follows.items() for e in fs)


async def _stored(msgid: str) -> models.Message:
    return await models.Message.get(source="archive", msgid=msgid)


async def test_an_answer_is_judged_with_the_question_it_answers(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    records = [
        record("q1", ext, userid, "王经理，这款理财到期本金能拿回来吧？我电话13812345678", now),
        record("a1", userid, ext, "是的👌", now + 20_000),
        # The same short answer to a service question is service.
        record("q2", ext, userid, "明天能到账吗？", now + 60_000),
        record("a2", userid, ext, "是的👌", now + 80_000),
    ]
    status, body = await edge.api("POST", "/api/v1/archive/messages", json=records)
    assert status == 200 and body["accepted"] == 4
    await edge.process_all()

    flagged = await _stored("a1")
    assert flagged.has_violation
    found = [v for v in flagged.analysis["violations"] if v["severity"] == "violation"]
    assert [v["category"] for v in found] == ["guaranteed_return"]
    # The evidence is cut from the advisor's line (the assuring words); it names the
    # customer message that gave it meaning — masked, like everything stored in clear.
    assert found[0]["evidence"].startswith("是的")
    assert found[0]["evidence"] in "是的👌"
    assert "本金能拿回来" in found[0]["context_evidence"]
    assert "13812345678" not in found[0]["context_evidence"]
    assert await models.ReviewCase.filter(message=flagged).exists()

    assert not (await _stored("a2")).has_violation


async def test_context_comes_from_what_is_already_stored(edge: Edge) -> None:
    """The question was stored by an earlier read; the answer arrives in a later one."""
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    q = [record("q3", ext, userid, "测评我老是不合格，测出来都是保守型，咋办", now)]
    assert (await edge.api("POST", "/api/v1/archive/messages", json=q))[0] == 200
    await edge.process_all()
    a = [record("a3", userid, ext, "没事，我来帮您弄", now + 30_000)]
    assert (await edge.api("POST", "/api/v1/archive/messages", json=a))[0] == 200
    await edge.process_all()
    answer = await _stored("a3")
    found = {v["category"] for v in answer.analysis["violations"] if v["severity"] == "violation"}
    assert "suitability_evasion" in found


async def test_a_correction_that_names_the_forbidden_thing_is_left_alone(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    now = int(time.time() * 1000)
    records = [
        record("q4", ext, userid, "这个私募保本吗？到期本金能拿回来吧", now),
        record(
            "a4", userid, ext, "没有保本的了，资管新规以后都是净值型，会有亏损的可能", now + 9_000
        ),
        record("q5", ext, userid, "大额存单到期本息都能拿回来吧？", now + 60_000),
        record("a5", userid, ext, "对，到期本息都在，还受存款保险保护", now + 70_000),
        record("e1", userid, ext, "晚安", now + 90_000),
    ]
    assert (await edge.api("POST", "/api/v1/archive/messages", json=records))[0] == 200
    await edge.process_all()
    for msgid in ("a4", "a5", "e1"):
        message = await _stored(msgid)
        assert not message.has_violation, (msgid, message.analysis)
    assert not await models.ReviewCase.all().exists()


async def test_compliance_check_api_takes_the_visible_thread(edge: Edge) -> None:
    question = [{"role": "customer", "text": "王经理，这款理财到期本金能拿回来吧？"}]
    status, body = await edge.api(
        "POST", "/api/v1/compliance/check", json={"text": "是的👌", "context": question}
    )
    assert status == 200
    assert {v["category"] for v in body["violations"]} == {"guaranteed_return"}
    status, body = await edge.api("POST", "/api/v1/compliance/check", json={"text": "是的👌"})
    assert status == 200 and body["violations"] == []
    status, body = await edge.api(
        "POST", "/api/v1/compliance/check", json={"text": "是的", "context": [{"role": "x"}]}
    )
    assert status == 400 and "context" in body["error"]["message"]
