"""`siyu users …` and `siyu api-keys …`: passwords never on argv, keys printed once."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from core.domain import CliContext
from core.settings import Settings
from siyu import cli as siyu_cli
from tests.conftest import SCHEMA, make_settings


@pytest.fixture
def cli_settings(tmp_path: Path, fresh_database_url: str, redis_url: str) -> Settings:
    return make_settings(tmp_path, database_url=fresh_database_url, redis_url=redis_url)


def run(
    settings: Settings,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    ctx = CliContext(settings_factory=lambda: settings, schema=SCHEMA)
    code = siyu_cli.main(argv, ctx=ctx)
    out, err = capsys.readouterr()
    return code, out, err


def test_users_lifecycle_from_the_cli(
    cli_settings: Settings, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(cli_settings, ["migrate"], capsys, monkeypatch)[0] == 0
    code, out, _ = run(
        cli_settings,
        ["users", "create", "--role", "admin", "--name", "root", "--display-name", "运维"],
        capsys,
        monkeypatch,
        stdin="a long enough password\n",
    )
    assert code == 0 and json.loads(out)["created"] == "root"

    # Weak passwords are refused before anything is written.
    code, _, err = run(
        cli_settings,
        ["users", "create", "--role", "advisor", "--name", "weak"],
        capsys,
        monkeypatch,
        stdin="short\n",
    )
    assert code == 2 and "password" in err
    # There is no way to pass a password on the command line.
    with pytest.raises(SystemExit):
        run(
            cli_settings,
            ["users", "create", "--role", "advisor", "--name", "x", "--password", "p"],
            capsys,
            monkeypatch,
        )
    capsys.readouterr()

    code, out, _ = run(cli_settings, ["users", "list", "--json"], capsys, monkeypatch)
    assert [(u["name"], u["role"], u["status"]) for u in json.loads(out)] == [
        ("root", "admin", "active")
    ]
    code, out, _ = run(cli_settings, ["users", "disable", "root"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["status"] == "disabled"
    code, _, err = run(cli_settings, ["users", "disable", "nobody"], capsys, monkeypatch)
    assert code == 1 and "nobody" in err
    code, out, _ = run(
        cli_settings,
        ["users", "reset-password", "root", "--password-stdin"],
        capsys,
        monkeypatch,
        stdin="another long password\n",
    )
    assert code == 0

    code, out, _ = run(cli_settings, ["audit", "verify"], capsys, monkeypatch)
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["entries"] == 3


def test_api_keys_from_the_cli(
    cli_settings: Settings, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(cli_settings, ["migrate"], capsys, monkeypatch)[0] == 0
    code, out, err = run(
        cli_settings,
        [
            "api-keys", "create", "--name", "core-banking", "--scope", "archive:write",
            "--scope", "customers:write", "--expires", "2099-12-31", "--allow-ip", "10.0.0.0/8",
        ],
        capsys,
        monkeypatch,
    )  # fmt: skip
    created = json.loads(out)
    assert code == 0 and created["key"].startswith("siyu_")
    assert created["scopes"] == ["archive:write", "customers:write"]
    assert "shown only now" in err

    code, out, _ = run(cli_settings, ["api-keys", "list", "--json"], capsys, monkeypatch)
    listed = json.loads(out)
    assert created["key"] not in out
    assert listed[0]["allowed_ips"] == ["10.0.0.0/8"] and listed[0]["revoked_at"] is None
    assert listed[0]["expires_at"].startswith("2099-12-31T16:00:00")  # end of the day, +08:00

    code, _, err = run(
        cli_settings,
        ["api-keys", "create", "--name", "x", "--scope", "tags:write", "--expires", "31/12"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "--expires" in err
    code, out, _ = run(cli_settings, ["api-keys", "revoke", "core-banking"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["revoked"] == "core-banking"
    code, out, _ = run(cli_settings, ["api-keys", "list", "--json"], capsys, monkeypatch)
    assert json.loads(out)[0]["revoked_at"] is not None
    code, _, _ = run(cli_settings, ["api-keys", "revoke", "missing"], capsys, monkeypatch)
    assert code == 1
