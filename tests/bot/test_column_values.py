"""A multi-row insert converts a column at a time, exactly as the ORM converts each value."""

from __future__ import annotations

from typing import Any

import pytest

from bot import models
from bot import service as bot_service

COLUMNS: list[tuple[type[Any], str, list[Any]]] = [
    (models.Message, "msgid", ["m" * 128, "a", "b"]),
    (models.Message, "msgid", ["a", 12345, "b"]),  # not a str: converted as the ORM does
    (models.Message, "roomid", [None, "r1", None]),
    (models.Message, "roomid", [None, None]),
    (models.Message, "has_violation", [True, False]),
    (models.Message, "has_violation", [True, 1, 0]),
    (models.Message, "receiver_ids", [["a", "b"], []]),
    (models.Message, "masked_text", ["您好" * 500, ""]),
    (models.OutboxItem, "last_errcode", [None, 40001, 0]),
    (models.OutboxItem, "attempts", [0, 3]),
    (models.OutboxItem, "state", [models.OutboxState.PENDING, "pending"]),
    (models.Customer, "gender", [1, 2, 0]),
    (models.Customer, "needs_sync", [False, True]),
]


@pytest.mark.parametrize("model, name, values", COLUMNS)
def test_a_column_is_converted_as_the_orm_converts_each_value(
    model: type[Any], name: str, values: list[Any]
) -> None:
    field = model._meta.fields_map[name]
    expected = [field.to_db_value(v, model) for v in values]
    assert bot_service._column_converter_of(model, name)(list(values)) == expected


@pytest.mark.parametrize(
    "name, values",
    [
        ("msgid", ["ok", "m" * 129, "ok"]),
        ("source", ["archive", "s" * 17]),
        ("sender_id", ["zhangwei", None]),
    ],
)
def test_a_column_holding_a_value_the_orm_refuses_is_refused(name: str, values: list[Any]) -> None:
    field = models.Message._meta.fields_map[name]
    bad = next(v for v in values if v is None or len(v) > (field.max_length or 0))
    with pytest.raises(Exception) as orm:
        field.to_db_value(bad, models.Message)
    with pytest.raises(type(orm.value)):
        bot_service._column_converter_of(models.Message, name)(values)
