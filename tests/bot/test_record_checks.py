"""``bot.archive.validate_record``: the whole-record check (one JSON dump) refuses
what the field-by-field walk refuses, and lets through what it lets through."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bot.archive import MAX_RECORD_DEPTH, RecordError, validate_record


def _record(**extra: Any) -> dict[str, Any]:
    return {
        "msgid": "m1",
        "action": "send",
        "from": "advisor001",
        "tolist": ["wmcustomer1"],
        "roomid": "",
        "msgtime": 1_700_000_000_000,
        "msgtype": "text",
        "text": {"content": "您好"},
        **extra,
    }


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"text": {"content": "a\x00b"}}, ("'text.content' value", "NUL")),
        ({"note": {"k\x00": "v"}}, ("name", "NUL")),
        ({"text": {"content": "坏\ud800"}}, ("'text.content'", "surrogate")),
        ({"extra": {"\udfff": 1}}, ("name", "surrogate")),
        ({"score": math.nan}, ("'score'", "finite")),
        ({"score": [1.0, -math.inf]}, ("'score[1]'", "finite")),
        # The record is level 1: a value nested MAX_RECORD_DEPTH dicts deep sits below it.
        ({"n": _nested(MAX_RECORD_DEPTH)}, ("nested deeper",)),
    ],
)
def test_refused_with_the_field_named(extra: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(RecordError) as err:
        validate_record(_record(**extra))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        # The six characters of the escape, not a NUL: JSON writes them as \\u0000.
        {"text": {"content": "路径 C:\\u0000 不是空字符"}},
        {"n": _nested(MAX_RECORD_DEPTH - 1)},
        {"score": 1.5, "tags": [["a"], {"b": None}]},
    ],
)
def test_accepted_unchanged(extra: dict[str, Any]) -> None:
    rec = _record(**extra)
    assert validate_record(rec) is rec
