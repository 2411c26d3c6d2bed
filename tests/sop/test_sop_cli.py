"""`siyu campaigns …`: list, show, stats (JSON and CSV), pause/resume, opt-out — audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.admin.test_admin_cli import run
from tests.conftest import make_settings


@pytest.fixture
def cli_settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(
        tmp_path, database_url=f"sqlite://{tmp_path / 'cli.sqlite3'}", redis_url=redis_url
    )


def _seed(settings: Settings, analyzer: Any) -> int:
    from core import db as core_db
    from sop import campaigns
    from tests.conftest import SCHEMA
    from tests.sop.seed import OPS, REVIEWER

    async def work() -> int:
        async with core_db.db_lifespan(settings, SCHEMA):
            c = await campaigns.seed_demo_campaign(author=OPS, approver=REVIEWER, analyzer=analyzer)
            assert c is not None
            return c.id

    return asyncio.run(work())


def test_campaigns_from_the_command_line(
    cli_settings: Settings, analyzer: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(cli_settings, ["migrate"], capsys, monkeypatch)[0] == 0
    cid = _seed(cli_settings, analyzer)

    code, out, _ = run(cli_settings, ["campaigns", "list"], capsys, monkeypatch)
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    assert len(rows) == 2 and (rows[cid]["status"], rows[cid]["current_version"]) == ("active", 1)

    code, out, _ = run(cli_settings, ["campaigns", "show", str(cid)], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["versions"][0]["steps"][1]["delivery"] == "mass_send"
    code, _, err = run(cli_settings, ["campaigns", "show", "999"], capsys, monkeypatch)
    assert code == 1 and "999" in err

    code, out, _ = run(cli_settings, ["campaigns", "stats", str(cid), "--csv"], capsys, monkeypatch)
    assert code == 0 and out.startswith("version,step,step_name")

    code, out, _ = run(cli_settings, ["campaigns", "pause", str(cid)], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["status"] == "paused"
    code, _, err = run(cli_settings, ["campaigns", "pause", str(cid)], capsys, monkeypatch)
    assert code == 1 and "只有运行中的活动可以暂停" in err
    code, out, _ = run(cli_settings, ["campaigns", "resume", str(cid)], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["status"] == "active"

    argv = ["campaigns", "opt-out", "wmSOP00000000000000009", "--reason", "电话要求不再联系"]
    code, out, _ = run(cli_settings, argv, capsys, monkeypatch)
    assert code == 0 and json.loads(out) == {"opted_out": True, "new": True}
    code, out, _ = run(cli_settings, argv, capsys, monkeypatch)
    assert code == 0 and json.loads(out)["new"] is False

    code, out, _ = run(cli_settings, ["audit", "verify"], capsys, monkeypatch)
    assert code == 0
