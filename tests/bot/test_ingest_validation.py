"""Archive ingest checks each record: a bad one is rejected with its index, the rest are queued."""

from __future__ import annotations

import json
from typing import Any

from bot import models
from bot.archive import MAX_RECORD_CHARS, MAX_TEXT_CHARS
from tests.bot.harness import Edge
from tests.bot.test_archive import a_relation, record

API = "/api/v1/archive/messages"


async def post_body(edge: Edge, body: str, ctype: str = "application/json") -> tuple[int, Any]:
    return await edge.api("POST", API, data=body.encode(), headers={"Content-Type": ctype})


async def stored_msgids() -> list[str]:
    return sorted(await models.Message.all().values_list("msgid", flat=True))


async def test_ids_longer_than_their_columns_are_rejected_per_record(edge: Edge) -> None:
    """A msgid over 128 characters used to be accepted and then fail in the worker every
    round, forever; now it is refused at ingest, and so is every other over-long id."""
    userid, ext = a_relation(edge)
    longest = "m" * 128  # exactly what Message.msgid holds: accepted
    records = [
        record("ok1", ext, userid, "你好"),
        record("m" * 129, ext, userid, "你好"),
        record("id2", "wm" + "x" * 63, userid, "你好"),
        record("id3", ext, "u" * 65, "你好"),
        {**record("id4", ext, userid, "你好"), "roomid": "r" * 65},
        {**record("id5", ext, userid, "你好"), "msgtype": "t" * 33},
        {"msgid": "id6", "action": "switch", "time": 1, "user": "u" * 65},
        record(longest, ext, userid, "在吗"),
    ]
    status, out = await edge.api("POST", API, json=records)
    assert status == 200, out
    assert (out["accepted"], out["rejected"]) == (2, 6)
    errors = {e["index"]: e["error"] for e in out["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert "'msgid'" in errors[1] and "129" in errors[1]
    assert "'from'" in errors[2]
    assert "'tolist[0]'" in errors[3]
    assert "'roomid'" in errors[4]
    assert "'msgtype'" in errors[5]
    assert "'user'" in errors[6]
    await edge.process_all()
    assert await stored_msgids() == sorted(["ok1", longest])
    assert await models.DeadLetter.all().count() == 0


async def test_a_lone_surrogate_rejects_only_its_record(edge: Edge) -> None:
    """ "\\ud800" in one record answered 500 for the whole call; records after it were
    never queued and a retry failed the same way."""
    userid, ext = a_relation(edge)
    good = [record(f"s{i}", ext, userid, f"第{i}条") for i in range(4)]

    def with_escape(rec: dict[str, Any], escape: str) -> str:
        # The JSON text of ``rec`` with its "PLACEHOLDER" written as a \u escape.
        return json.dumps(rec, ensure_ascii=False).replace("PLACEHOLDER", escape)

    bad_text = with_escape(record("sbad", ext, userid, "坏PLACEHOLDER"), "\\ud800")
    bad_key = with_escape(
        {**record("skey", ext, userid, "x"), "extra": {"PLACEHOLDER": 1}}, "\\ud83d"
    )
    bad_id = with_escape(record("idPLACEHOLDER", ext, userid, "x"), "\\udfff")
    parts = [json.dumps(good[0]), bad_text, json.dumps(good[1]), bad_key]
    parts += [json.dumps(good[2]), bad_id, json.dumps(good[3])]
    body = "[" + ",".join(parts) + "]"
    status, out = await post_body(edge, body)
    assert status == 200, out
    assert (out["accepted"], out["duplicate"], out["rejected"]) == (4, 0, 3)
    errors = {e["index"]: e for e in out["errors"]}
    assert sorted(errors) == [1, 3, 5]
    assert "'text.content'" in errors[1]["error"] and "surrogate" in errors[1]["error"]
    assert errors[1]["msgid"] == "sbad"
    assert "extra" in errors[3]["error"]
    assert "'msgid'" in errors[5]["error"]
    # The same call again: nothing queued twice, the same record refused the same way.
    status, again = await post_body(edge, body)
    assert status == 200
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 4, 3)
    await edge.process_all()
    assert await stored_msgids() == ["s0", "s1", "s2", "s3"]


async def test_oversize_records_are_rejected_with_their_index(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    big = record("big", ext, userid, "x")
    big["file"] = {"filename": "a.pdf", "padding": "p" * MAX_RECORD_CHARS}
    records = [
        record("before", ext, userid, "你好"),
        big,
        # Within the record limit, over what the compliance check takes: it could never
        # be analysed, so never stored (it dead-lettered its whole batch before).
        record("long", ext, userid, "好" * (MAX_TEXT_CHARS + 1)),
        record("nul", ext, userid, "a\x00b"),
        {**record("nan", ext, userid, "x"), "text": {"content": "x", "score": float("nan")}},
        record("after", ext, userid, "在吗"),
    ]
    errors: dict[int, str] = {}
    # Two calls, each within the API's body limit; indexes are per call.
    for first, part in ((0, records[:2]), (2, records[2:])):
        status, out = await post_body(edge, json.dumps(part, ensure_ascii=False))
        assert status == 200, out
        errors |= {first + e["index"]: e["error"] for e in out["errors"]}
    assert sorted(errors) == [1, 2, 3, 4]
    assert f"at most {MAX_RECORD_CHARS}" in errors[1]
    assert f"at most {MAX_TEXT_CHARS}" in errors[2]
    assert "NUL" in errors[3]
    assert "finite" in errors[4]
    await edge.process_all()
    assert await stored_msgids() == ["after", "before"]


async def test_deep_nesting_is_a_clean_400_or_a_per_record_rejection(edge: Edge) -> None:
    userid, ext = a_relation(edge)
    # Deeper than the parser goes: the body cannot be read at all.
    status, out = await post_body(edge, "[" * 200_000 + "]" * 200_000)
    assert status == 400 and out["error"]["code"] == "bad_request"
    assert "nested too deeply" in out["error"]["message"]
    line = json.dumps(record("j1", ext, userid, "你好"))
    status, out = await post_body(
        edge, line + "\n" + "[" * 200_000 + "\n", ctype="application/x-ndjson"
    )
    assert status == 400 and "line 2" in out["error"]["message"]
    assert await edge.queued() == 0
    # Readable, but nothing like a record: refused alone.
    nested: Any = "x"
    for _ in range(100):
        nested = {"a": nested}
    records = [record("d1", ext, userid, "你好"), {**record("d2", ext, userid, "x"), "n": nested}]
    status, out = await edge.api("POST", API, json=records)
    assert status == 200 and (out["accepted"], out["rejected"]) == (1, 1)
    assert out["errors"][0]["index"] == 1 and "nested" in out["errors"][0]["error"]
    # The pre-send check reads JSON too.
    status, out = await edge.api(
        "POST",
        "/api/v1/compliance/check",
        data=("[" * 200_000).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
