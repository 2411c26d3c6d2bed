from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest

from core.crypto import DecryptionError, Keyring, load_keyring
from core.settings import Settings, SettingsError
from tests.conftest import SCHEMA


def test_missing_callback_secrets_are_named(tmp_path: Path) -> None:
    from siyu.app import create_app

    s = Settings(_env_file=None, data_dir=tmp_path, wecom={"corp_id": "ww1"})  # type: ignore[arg-type]
    with pytest.raises(SettingsError) as err:
        create_app(s, ("receiver",))
    assert "SIYU_WECOM__TOKEN" in str(err.value)
    assert "SIYU_WECOM__ENCODING_AES_KEY" in str(err.value)
    with pytest.raises(SettingsError, match="SIYU_WECOM__APP_SECRET"):
        create_app(s, ("scheduler",))


def test_env_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_HTTP__PORT", "9123")
    monkeypatch.setenv("SIYU_WECOM__CALLBACK_MAX_SKEW_S", "0")
    s = Settings(_env_file=None)
    assert s.http.port == 9123 and s.wecom.callback_max_skew_s == 0
    assert s.database_url.startswith("sqlite://") and s.embedded_redis


def test_keyring_round_trip_binding_and_rotation() -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    old = Keyring(keys={"k1": k1}, active_key_id="k1")
    sealed = old.seal_text("客户身份证 110101199003074514", aad="message:archive:m1")
    assert "1101" not in sealed
    rotated = Keyring(keys={"k1": k1, "k2": k2}, active_key_id="k2")
    assert rotated.open_text(sealed, aad="message:archive:m1").endswith("074514")
    assert rotated.seal_text("x", aad="a").startswith("v1.k2.")
    with pytest.raises(DecryptionError):
        rotated.open_text(sealed, aad="message:archive:m2")  # copied onto another row
    with pytest.raises(DecryptionError):
        Keyring(keys={"k2": k2}, active_key_id="k2").open_text(sealed, aad="message:archive:m1")


def test_embedded_key_file_created_once_private(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path)
    a = load_keyring(s)
    b = load_keyring(s)
    assert a.keys == b.keys
    assert (tmp_path / "field-keys.json").stat().st_mode & 0o077 == 0


def test_shared_database_requires_configured_keys(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path, database_url="postgres://x@h/db")
    with pytest.raises(SettingsError, match="SIYU_CRYPTO__KEYS"):
        load_keyring(s)


def test_serve_refuses_unmigrated_database(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
) -> None:
    from siyu.cli import main

    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIYU_REDIS_URL", redis_url)
    monkeypatch.setenv("SIYU_NLP__POOL_SIZE", "0")
    monkeypatch.setenv("SIYU_HTTP__PORT", "0")
    monkeypatch.setenv(
        "SIYU_CRYPTO__KEYS", json.dumps({"a": base64.b64encode(secrets.token_bytes(32)).decode()})
    )
    assert main(["serve", "--role", "worker"]) == 2
    assert "siyu migrate" in capsys.readouterr().err
    assert main(["migrate"]) == 0
    assert "applied 0001_initial" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


async def test_migrated_schema_matches_models(tmp_path: Path) -> None:
    """Every model column exists after migrating: the SQL files did not drift."""
    from tortoise import Tortoise

    from core import db as core_db

    s = Settings(_env_file=None, data_dir=tmp_path)
    await core_db.init_db(s, SCHEMA)
    try:
        conn = Tortoise.get_connection("default")
        await core_db.migrate(conn, SCHEMA, "sqlite")
        for model in Tortoise.apps["models"].values():
            table = model._meta.db_table
            _, rows = await conn.execute_query(f'PRAGMA table_info("{table}")')
            have = {r["name"] for r in rows}
            want = set(model._meta.fields_db_projection.values())
            assert want <= have, (table, want - have)
    finally:
        await core_db.close_db()
