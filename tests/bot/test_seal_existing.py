"""Rows stored before sealing existed: `siyu keys seal-existing` seals what they keep in clear."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import models
from bot.flows import SEALED_FIELD_NAMES, do_seal_existing_rows, open_event_fields, open_follow_text
from core.crypto import Keyring
from core.settings import Settings
from tests.conftest import make_settings

MOBILE = "13766554433"
REMARK = "王总 13922220131"
DESCRIPTION = "身份证110101199003074514，只做稳健型"


def _keyring(settings: Settings) -> Keyring:
    keys = {k: base64.b64decode(v.get_secret_value()) for k, v in settings.crypto.keys.items()}
    return Keyring(keys=keys, active_key_id=settings.crypto.active_key_id)


async def _old_rows() -> None:
    """What an older siyu stored: every event field and the remarks in clear."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    await models.Event.create(
        event_key="evt:old1",
        kind="event",
        event="change_contact",
        change_type="update_user",
        occurred_at=at,
        fields_json={"Event": "change_contact", "UserID": "lina", "Mobile": MOBILE},
    )
    await models.Event.create(
        event_key="evt:old2",
        kind="event",
        event="change_external_chat",
        change_type="create",
        occurred_at=at,
        fields_json={"Event": "change_external_chat", "ChatId": "wrOld"},
    )
    customer = await models.Customer.create(external_userid="wmOLDcustomer01")
    advisor = await models.Advisor.create(userid="zhangwei")
    await models.FollowRelation.create(
        customer=customer, advisor=advisor, remark=REMARK, description=DESCRIPTION
    )


async def test_old_rows_are_sealed_once_and_lose_nothing(settings: Settings, db: None) -> None:
    await _old_rows()
    keyring = _keyring(settings)
    done = await do_seal_existing_rows(keyring=keyring, batch=1)
    assert (done.events, done.follows) == (1, 1)  # the chat event had nothing to seal
    member = await models.Event.get(event_key="evt:old1")
    assert member.fields_json == {
        "Event": "change_contact",
        "UserID": "lina",
        SEALED_FIELD_NAMES: ["Mobile"],
    }
    assert open_event_fields(member, keyring=keyring)["Mobile"] == MOBILE
    rel = await models.FollowRelation.get().prefetch_related("customer", "advisor")
    assert "13922220131" not in rel.remark and rel.remark.startswith("王总 139")
    assert "110101199003074514" not in rel.description and "只做稳健型" in rel.description
    assert open_follow_text(rel, "remark", keyring=keyring) == REMARK
    assert open_follow_text(rel, "description", keyring=keyring) == DESCRIPTION
    again = await do_seal_existing_rows(keyring=keyring)
    assert (again.events, again.follows) == (0, 0)


def test_seal_existing_command(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from siyu.cli import main
    from tests.conftest import SCHEMA

    settings = make_settings(
        tmp_path, database_url=f"sqlite://{tmp_path / 'siyu.sqlite3'}", redis_url=redis_url
    )
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_DATABASE_URL", settings.database_url)
    keys = {k: v.get_secret_value() for k, v in settings.crypto.keys.items()}
    monkeypatch.setenv("SIYU_CRYPTO__KEYS", json.dumps(keys))
    assert main(["migrate"]) == 0

    async def seed() -> None:
        from core import db as core_db

        async with core_db.db_lifespan(settings, SCHEMA):
            await _old_rows()

    asyncio.run(seed())
    capsys.readouterr()
    assert main(["keys", "seal-existing"]) == 0
    # The remark's number is then indexed for the customer search (one follow relation).
    assert json.loads(capsys.readouterr().out) == {
        "events": 1,
        "follow_relations": 1,
        "phones_indexed": 1,
    }
    # A key other than the one the database records is refused, nothing sealed with it.
    other = base64.b64encode(b"\x01" * 32).decode()
    monkeypatch.setenv("SIYU_CRYPTO__KEYS", json.dumps({"t1": other}))
    assert main(["keys", "seal-existing"]) == 2
    assert "SIYU_CRYPTO__KEYS" in capsys.readouterr().err
