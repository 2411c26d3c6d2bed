"""Every /api/v1 refusal that one field causes names it: ``{"error": {"code", "message",
"field"}}`` — across the edge's, tagging's and the console's routes.  A refusal of the
body as a whole (not JSON) says so with ``field`` null, but the key is always there.
"""

from __future__ import annotations

from typing import Any

import pytest

from admin import flows as admin_flows
from admin.permissions import load_table
from tests.admin.console import CLI, Console

# (method, path, query, JSON body, status, field)
CASES: list[tuple[str, str, dict[str, str] | None, Any, int, str | None]] = [
    ("POST", "/api/v1/compliance/check", None, {"text": 5, "role": "advisor"}, 400, "text"),
    ("POST", "/api/v1/compliance/check", None, {"text": "您好", "role": "boss"}, 400, "role"),
    (
        "POST",
        "/api/v1/compliance/check",
        None,
        {"text": "好" * 100_001, "role": "advisor"},
        413,
        "text",
    ),
    (
        "POST",
        "/api/v1/compliance/check",
        None,
        {"text": "好", "role": "advisor", "context": [{"role": "customer", "text": 3}]},
        400,
        "context.0.text",
    ),
    ("POST", "/api/v1/compliance/check", None, "not json", 400, None),
    ("POST", "/api/v1/tags/groups", None, {}, 400, "name"),
    ("POST", "/api/v1/tags/groups", None, {"name": "客群", "order": -1}, 400, "order"),
    ("POST", "/api/v1/tags", None, {"name": "高净值"}, 400, "group_id"),
    (
        "POST",
        "/api/v1/customer-tags",
        None,
        {"external_userid": "wm1", "tag_id": "x"},
        400,
        "tag_id",
    ),
    ("POST", "/api/v1/audiences", None, {"name": "a", "expr": "tag:((("}, 400, "expr"),
    ("GET", "/api/v1/audiences/count", {"expr": "risk_level >>"}, None, 400, "expr"),
    ("GET", "/api/v1/audiences/preview", {"expr": "tag:x", "limit": "many"}, None, 400, "limit"),
    ("GET", "/api/v1/audiences/preview", {"expr": "tag:x", "limit": "0"}, None, 400, "limit"),
    (
        "POST",
        "/api/v1/tag-rules",
        None,
        {"name": "r", "trigger": "message", "when": {"intent": 7}, "then": {"add": [1]}},
        400,
        "when.intent",
    ),
    ("GET", "/api/v1/customers", {"page": "0"}, None, 400, "page"),
    ("GET", "/api/v1/customers", {"per_page": "1000"}, None, 400, "per_page"),
    ("GET", "/api/v1/customers", {"q": "长" * 65}, None, 400, "q"),
]


@pytest.fixture
async def every_scope(console: Console) -> str:
    table = load_table()
    created = await admin_flows.do_create_api_key(
        actor=CLI, source="test", name="all-scopes", scopes=list(table.scopes), table=table
    )
    return created.plaintext


async def test_each_single_field_refusal_names_the_field(
    console: Console, every_scope: str
) -> None:
    wrong = []
    async with console.client() as client:
        for method, path, query, body, status, field in CASES:
            kw: dict[str, Any] = {"params": query} if query else {}
            if isinstance(body, str):
                kw["data"] = body
                kw["headers"] = {"Content-Type": "application/json"}
            elif body is not None:
                kw["json"] = body
            headers = {"Authorization": f"Bearer {every_scope}", **kw.pop("headers", {})}
            async with client.request(method, console.url(path), headers=headers, **kw) as r:
                answer = await r.json()
            error = answer.get("error", {})
            got = (r.status, error.get("field", "absent"))
            if got != (status, field) or not error.get("code") or not error.get("message"):
                wrong.append((method, path, (status, field), got, error.get("message")))
    assert wrong == []
