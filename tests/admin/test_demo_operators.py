"""`siyu demo` seeds one operator per kind of console user, with printed passwords."""

from __future__ import annotations

import json
from pathlib import Path

from admin import flows
from admin.models import Operator
from admin.sessions import LoginThrottle
from core.settings import Settings
from siyu.demo import DEMO_OPERATORS, _seed_operators


async def test_demo_operators_are_seeded_once_and_can_sign_in(
    settings: Settings, redis_client: object, db: None, tmp_path: Path
) -> None:
    demo: dict[str, object] = {"api_token": "t"}
    printed = await _seed_operators(tmp_path, demo)
    roles = {op.name: op.role for op in await Operator.all()}
    assert roles == {name: role for name, role, _ in DEMO_OPERATORS}
    stored = json.loads((tmp_path / "demo-secrets.json").read_text())["operators"]
    assert set(stored) == set(roles)
    for name, password in stored.items():
        assert password in printed
        result = await flows.do_sign_in(
            name=name,
            password=password,
            source="127.0.0.1",
            throttle=LoginThrottle(redis_client, settings=settings.admin),  # type: ignore[arg-type]
        )
        assert result.outcome == "ok"
    # A restart prints the same passwords and creates nobody twice.
    again = await _seed_operators(
        tmp_path, json.loads((tmp_path / "demo-secrets.json").read_text())
    )
    assert again == printed and await Operator.all().count() == len(DEMO_OPERATORS)
