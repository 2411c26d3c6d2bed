"""Named API keys: shown once, stored hashed, scoped, expiring, address-bound, revocable."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from admin import flows
from admin.models import ApiKey
from admin.permissions import load_table
from core import audit
from core.audit import AuditFilter
from tests.admin.console import CLI, Console, make_operator, signed_in_client

TABLE = load_table()


async def _key(scopes: list[str], **kw: Any) -> flows.CreatedKey:
    return await flows.do_create_api_key(
        actor=CLI,
        source="test",
        name=kw.pop("name", "core-banking"),
        scopes=scopes,
        table=TABLE,
        **kw,
    )


async def _get(console: Console, path: str, key: str, **kw: Any) -> tuple[int, Any]:
    async with console.client() as client:
        async with client.get(
            console.url(path), headers={"Authorization": f"Bearer {key}", **kw}
        ) as r:
            return r.status, await r.json()


async def test_key_is_stored_hashed_and_its_use_is_recorded(console: Console) -> None:
    created = await _key(["compliance:check"])
    row = await ApiKey.get(id=created.key.id)
    secret = created.plaintext.split("_", 2)[2]
    assert secret not in row.secret_hash and created.plaintext not in json.dumps(
        await ApiKey.filter(id=row.id).values(), default=str
    )
    status, body = await _get(console, "/api/v1/me", created.plaintext)
    assert status == 200
    assert body == {
        "kind": "api_key",
        "id": created.key.key_id,
        "name": "core-banking",
        "role": None,
        "permissions": ["compliance:check"],
    }
    row = await ApiKey.get(id=created.key.id)
    assert row.last_used_at is not None and row.last_used_from == "127.0.0.1"
    uses = await audit.entries(where=AuditFilter(action="api_key.use"))
    assert [(u.actor_id, u.target, u.result) for u in uses] == [
        (created.key.key_id, "GET /api/v1/me", "ok")
    ]


async def test_scope_is_enforced_with_one_error_shape(console: Console) -> None:
    created = await _key(["compliance:check"])
    async with console.client() as client:
        async with client.post(
            console.url("/api/v1/archive/messages"),
            headers={"Authorization": f"Bearer {created.plaintext}"},
            json=[],
        ) as r:
            assert r.status == 403
            body = await r.json()
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == "forbidden"
    ok = await _key(["archive:write"], name="archive-puller")
    async with console.client() as client:
        async with client.post(
            console.url("/api/v1/archive/messages"),
            headers={"Authorization": f"Bearer {ok.plaintext}"},
            json=[],
        ) as r:
            assert r.status == 200


async def test_expired_key_is_refused(console: Console) -> None:
    with time_machine.travel("2026-12-01 09:00:00+08:00", tick=False) as clock:
        created = await _key(["compliance:check"], expires_at=datetime.now(UTC) + timedelta(days=1))
        status, _ = await _get(console, "/api/v1/me", created.plaintext)
        assert status == 200
        clock.shift(timedelta(days=1, seconds=1))
        status, body = await _get(console, "/api/v1/me", created.plaintext)
    assert status == 401 and body["error"]["code"] == "key_expired"
    refused = await audit.entries(where=AuditFilter(action="api_key.use", result="refused:expired"))
    assert len(refused) == 1


async def test_address_allow_list(console: Console) -> None:
    elsewhere = await _key(["compliance:check"], allowed_ips=["10.20.0.0/16"])
    status, body = await _get(console, "/api/v1/me", elsewhere.plaintext)
    assert status == 403 and body["error"]["code"] == "ip_not_allowed"
    here = await _key(["compliance:check"], name="local", allowed_ips=["127.0.0.1"])
    status, _ = await _get(console, "/api/v1/me", here.plaintext)
    assert status == 200
    # X-Forwarded-For is not believed from a peer that is not a trusted proxy.
    status, _ = await _get(
        console, "/api/v1/me", elsewhere.plaintext, **{"X-Forwarded-For": "10.20.1.1"}
    )
    assert status == 403
    console.settings.admin.trusted_proxies = ["127.0.0.1/32"]
    status, _ = await _get(
        console, "/api/v1/me", elsewhere.plaintext, **{"X-Forwarded-For": "10.20.1.1"}
    )
    assert status == 200


async def test_revoked_key_is_refused(console: Console) -> None:
    created = await _key(["compliance:check"])
    assert (await _get(console, "/api/v1/me", created.plaintext))[0] == 200
    await flows.do_revoke_api_key(actor=CLI, source="test", api_key_id=created.key.id)
    status, body = await _get(console, "/api/v1/me", created.plaintext)
    assert status == 401 and body["error"]["code"] == "key_revoked"


async def test_wrong_or_malformed_keys_are_401(console: Console) -> None:
    created = await _key(["compliance:check"])
    forged = created.plaintext[:-2] + ("AA" if not created.plaintext.endswith("AA") else "BB")
    for bad in (forged, "siyu_zzzzzzzzzzzz_x", "not-a-key", ""):
        status, body = await _get(console, "/api/v1/me", bad)
        assert status == 401 and body["error"]["code"] == "unauthorized", bad


async def test_bootstrap_token_still_works_and_is_deprecated(
    console_settings: Any, analyzer: Any, redis_client: Any, db: None, caplog: Any
) -> None:
    from tests.admin.console import start_console

    with caplog.at_level(logging.WARNING):
        c, closers = await start_console(console_settings, analyzer=analyzer)
    try:
        assert any("SIYU_API__TOKEN is deprecated" in r.getMessage() for r in caplog.records)
        token = console_settings.api.token.get_secret_value()
        status, body = await _get(c, "/api/v1/me", token)
        assert status == 200 and body["id"] == "bootstrap"
        uses = await audit.entries(where=AuditFilter(action="api_key.use"))
        assert uses[0].actor_id == "bootstrap"
    finally:
        for close in closers:
            await close()


async def test_invalid_key_requests_change_nothing(console: Console) -> None:
    for kw, field in (
        ({"scopes": []}, "scopes"),
        ({"scopes": ["nope:write"]}, "scopes"),
        ({"scopes": ["tags:write"], "allowed_ips": ["300.1.1.1"]}, "allowed_ips"),
        (
            {"scopes": ["tags:write"], "expires_at": datetime.now(UTC) - timedelta(days=1)},
            "expires_at",
        ),
    ):
        with pytest.raises(flows.FieldError) as exc:
            await _key(**kw)
        assert exc.value.field == field
    assert await ApiKey.all().count() == 0
    assert await audit.entries(where=AuditFilter()) == []


async def test_console_creates_a_key_shown_once_and_revokes_it(console: Console) -> None:
    await make_operator("admin", name="keyadmin")
    client, token = await signed_in_client(console, "keyadmin")
    async with client:
        async with client.post(
            console.url("/api-keys"),
            data={"_csrf": token, "name": "crm", "scopes": ["customers:read", "tags:write"]},
        ) as r:
            html = await r.text()
        assert r.status == 200
        shown = re.search(r'<code id="new-key">(siyu_[^<]+)</code>', html)
        assert shown
        async with client.get(console.url("/api-keys")) as r:
            assert shown.group(1) not in await r.text()  # once only
        status, body = await _get(console, "/api/v1/me", shown.group(1))
        assert status == 200 and body["permissions"] == ["customers:read", "tags:write"]
        key = await ApiKey.get(name="crm")
        async with client.post(
            console.url(f"/api-keys/{key.id}/revoke"), data={"_csrf": token}
        ) as r:
            assert r.status == 200 and "已吊销" in await r.text()
        assert (await _get(console, "/api/v1/me", shown.group(1)))[0] == 401
        async with client.post(
            console.url("/api-keys"), data={"_csrf": token, "name": "", "scopes": []}
        ) as r:
            assert r.status == 422 and "请填写名称" in await r.text()
