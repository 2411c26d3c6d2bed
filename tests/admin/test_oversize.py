"""A body over the size limit (SIYU_HTTP__MAX_BODY_BYTES) gets the house answer, never
aiohttp's plain-text 413: the API's JSON error, the console's error page — whether the
guard reads the body (a form's CSRF token) or the handler does — and nothing changes.
"""

from __future__ import annotations

import pytest

from admin import flows as admin_flows
from admin.permissions import load_table
from bot import models as bot_models
from core.appkit import KEYRING
from tests.admin import review_seed as seed
from tests.admin.console import CLI, Console, make_operator, signed_in_client

BIG = 1024 * 1024 + 10


@pytest.fixture
async def key(console: Console) -> str:
    table = load_table()
    created = await admin_flows.do_create_api_key(
        actor=CLI, source="test", name="all", scopes=list(table.scopes), table=table
    )
    return created.plaintext


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/api/v1/compliance/check", "application/json"),
        ("/api/v1/archive/messages", "application/x-ndjson"),
        ("/api/v1/tags/groups", "application/json"),
        ("/api/v1/customers/attributes", "application/json"),
    ],
)
async def test_api_answers_json(console: Console, key: str, path: str, ctype: str) -> None:
    async with console.client() as client:
        async with client.post(
            console.url(path),
            data=b"[" + b" " * BIG + b"]",
            headers={"Authorization": f"Bearer {key}", "Content-Type": ctype},
        ) as r:
            assert r.status == 413
            assert r.content_type == "application/json"
            body = await r.json()
    assert body["error"]["code"] in ("payload_too_large", "too_large")
    assert body["error"]["message"] and "field" in body["error"]


async def test_api_with_a_session_answers_json(console: Console) -> None:
    await make_operator("admin", name="root")
    client, token = await signed_in_client(console, "root")
    async with (
        client,
        client.post(
            console.url("/api/v1/tags/groups"),
            data=b"x" * BIG,
            headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 413 and r.content_type == "application/json"
        assert (await r.json())["error"]["code"] == "payload_too_large"


async def test_console_answers_its_error_page(console: Console) -> None:
    zhao = await seed.advisor("adv-zhao", "赵经理")
    customer = await seed.customer("wmCust0001", "周先生")
    case = (
        await seed.conversation(
            keyring=console.app[KEYRING],
            advisor_row=zhao,
            customer_row=customer,
            turns=[("customer", "能保本吗"), ("advisor", "保本保收益，放心")],
        )
    ).cases[0]
    await make_operator("compliance", name="reviewer")
    client, token = await signed_in_client(console, "reviewer")
    async with client:
        # The guard reads the form for its CSRF token: the body is too large there.
        async with client.post(
            console.url(f"/review/{case.id}/decide"),
            data={"_csrf": token, "decision": "confirmed", "comment": "x" * BIG},
        ) as r:
            html = await r.text()
            assert r.status == 413 and r.content_type == "text/html"
            assert "内容过大" in html and "<html" in html
        # With the token in the header the handler reads the body: the same page.
        async with client.post(
            console.url(f"/review/{case.id}/decide"),
            data={"decision": "confirmed", "comment": "x" * BIG},
            headers={"X-CSRF-Token": token},
        ) as r:
            assert r.status == 413 and "内容过大" in await r.text()
        # The sign-in form (public) too.
        async with console.client() as anonymous:
            async with anonymous.post(console.url("/login"), data={"name": "x" * BIG}) as r:
                assert r.status == 413 and "内容过大" in await r.text()
    assert (await bot_models.ReviewCase.get(id=case.id)).status == "open"
