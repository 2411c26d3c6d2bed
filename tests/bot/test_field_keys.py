"""Field keys: the database records which keys sealed its data, and refuses others.

A lost key file used to become a new key silently (old rows then failed as if
tampered); a mistyped SIYU_CRYPTO__KEYS wrote rows no other process could open.  Now
a role refuses to start, saying what to do; a key id added for rotation is accepted;
and a stream entry sealed with a key id a worker lacks waits instead of being
dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiohttp import web

from bot import models
from bot.flows import FieldKeyMismatchError
from core.appkit import HAS_DB
from core.crypto import KEY_FILE, Keyring
from core.settings import Role, Settings
from siyu.app import create_app
from tests.conftest import SCHEMA, make_settings


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _with_keys(settings: Settings, keys: dict[str, bytes], active: str) -> Settings:
    return settings.model_copy(
        update={
            "crypto": settings.crypto.model_copy(
                update={
                    "keys": {k: _secret(v) for k, v in keys.items()},
                    "active_key_id": active,
                }
            )
        }
    )


def _secret(key: bytes) -> object:
    from pydantic import SecretStr

    return SecretStr(_b64(key))


def _configured(settings: Settings) -> bytes:
    return base64.b64decode(settings.crypto.keys["t1"].get_secret_value())


async def _starts(settings: Settings, roles: Iterable[Role] = ("admin",)) -> dict[str, str]:
    """Start an app (every cleanup context's start-up), stop it; the key checks recorded."""
    from bot import service as bot_service

    app = create_app(settings, roles, auto_migrate=True, analyzer=object())
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        return await bot_service.field_key_checks() if app[HAS_DB] else {}
    finally:
        await runner.cleanup()


async def _recorded(settings: Settings) -> dict[str, str]:
    """What the database records, read without starting an app (no check runs)."""
    from tortoise import Tortoise

    from bot import service as bot_service
    from core import db as core_db

    await core_db.init_db(settings, SCHEMA)
    try:
        return await bot_service.field_key_checks()
    finally:
        await Tortoise.close_connections()


async def test_first_start_records_a_check_never_the_key(
    settings: Settings, db: None, redis_client: object
) -> None:
    recorded = await _starts(settings)
    key = _configured(settings)
    assert list(recorded) == ["t1"]
    for form in (key.hex(), _b64(key), key.decode("latin-1")):
        assert form not in recorded["t1"]
    assert await _starts(settings) == recorded  # the same keys start again


async def test_another_key_under_a_recorded_id_is_refused(
    settings: Settings, db: None, redis_client: object
) -> None:
    before = await _starts(settings)
    other = _with_keys(settings, {"t1": secrets.token_bytes(32)}, "t1")
    with pytest.raises(FieldKeyMismatchError) as err:
        await _starts(other)
    message = str(err.value)
    assert "t1" in message and "SIYU_CRYPTO__KEYS" in message
    assert await _recorded(settings) == before  # nothing written


async def test_a_rotation_adds_a_key_and_dropping_an_old_one_is_refused(
    settings: Settings, db: None, redis_client: object
) -> None:
    await _starts(settings)
    old, new = _configured(settings), secrets.token_bytes(32)
    assert set(await _starts(_with_keys(settings, {"t1": old, "t2": new}, "t2"))) == {"t1", "t2"}
    with pytest.raises(FieldKeyMismatchError, match="t1"):
        await _starts(_with_keys(settings, {"t2": new}, "t2"))


async def test_a_database_sealed_before_keys_were_recorded_is_checked_on_its_data(
    settings: Settings, db: None, redis_client: object
) -> None:
    from datetime import UTC, datetime

    # As an older siyu left it: a sealed message, no record of keys.
    await models.Message.create(
        msgid="m0",
        source="archive",
        direction="advisor_to_customer",
        sender_id="zhangwei",
        sender_role="advisor",
        msgtime=datetime(2026, 1, 1, tzinfo=UTC),
        msgtype="text",
        original_sealed=Keyring(keys={"t1": _configured(settings)}, active_key_id="t1").seal_text(
            "{}", aad="message:archive:m0"
        ),
    )
    with pytest.raises(FieldKeyMismatchError, match="t1"):
        await _starts(_with_keys(settings, {"t1": secrets.token_bytes(32)}, "t1"))
    assert list(await _starts(settings)) == ["t1"]


async def test_recreated_key_file_is_refused_until_restored(
    tmp_path: Path, redis_url: str, redis_client: object
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite://{tmp_path / 'siyu.sqlite3'}",
        redis_url=redis_url,
        crypto={"keys": {}, "active_key_id": ""},
    )
    assert await _starts(settings)
    key_file = tmp_path / KEY_FILE
    saved = key_file.read_bytes()
    key_file.unlink()  # lost: the next start would create a new key
    with pytest.raises(FieldKeyMismatchError) as err:
        await _starts(settings)
    assert str(key_file) in str(err.value) and "restore" in str(err.value)
    key_file.write_bytes(saved)
    await _starts(settings)


async def test_receiver_is_refused_a_key_the_workers_do_not_share(
    settings: Settings, db: None, redis_client: object
) -> None:
    await _starts(settings)  # a role with the database publishes its checks in Redis
    with pytest.raises(FieldKeyMismatchError, match="t1"):
        await _starts(
            _with_keys(settings, {"t1": secrets.token_bytes(32)}, "t1"), roles=("receiver",)
        )
    # A key id the workers do not have yet (a rotation rolling out) is fine.
    await _starts(
        _with_keys(settings, {"t1": _configured(settings), "t9": secrets.token_bytes(32)}, "t9"),
        roles=("receiver",),
    )


def test_keys_check_command(
    tmp_path: Path,
    redis_url: str,
    redis_client_sync: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from siyu.cli import main

    settings = make_settings(
        tmp_path, database_url=f"sqlite://{tmp_path / 'siyu.sqlite3'}", redis_url=redis_url
    )
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SIYU_REDIS_URL", redis_url)
    monkeypatch.setenv("SIYU_CRYPTO__KEYS", json.dumps({"t1": _b64(_configured(settings))}))
    asyncio.run(_starts(settings))
    capsys.readouterr()
    assert main(["keys", "check"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"key_id": "t1", "active": True, "state": "ok"}
    monkeypatch.setenv("SIYU_CRYPTO__KEYS", json.dumps({"t1": _b64(secrets.token_bytes(32))}))
    assert main(["keys", "check"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "different key" and "SIYU_CRYPTO__KEYS" in err
    assert _b64(_configured(settings)) not in out + err
