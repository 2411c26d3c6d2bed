"""GET /api/v1/openapi.json: every /api/v1 route, its scopes and its schemas, generated
from the code; answers of the routes validate against the schemas it names; the rendered
reference at /api/docs (vendored Swagger UI) in headless Chromium."""

from __future__ import annotations

from typing import Any

import aiohttp

from admin import flows
from admin.permissions import load_table
from admin.schemas import ErrorOut, WhoAmIOut
from bot.schemas import AnalysisOut
from core.access import access_of
from core.apidoc import api_doc_of
from tests.admin.console import CLI, Console, make_operator, signed_in_client
from tests.admin.test_browser import browser, shot, sign_in

__all__ = ["browser"]
TABLE = load_table()


async def _key(scopes: list[str]) -> str:
    created = await flows.do_create_api_key(
        actor=CLI, source="test", name="integrator", scopes=scopes, table=TABLE
    )
    return created.plaintext


async def _get(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


async def test_every_api_route_is_in_the_document_with_its_scopes(console: Console) -> None:
    key = await _key(["compliance:check"])
    async with aiohttp.ClientSession() as http:
        status, doc = await _get(http, console.url("/api/v1/openapi.json"), key)
    assert status == 200 and doc["openapi"] == "3.1.0"
    routes = [
        r
        for r in console.app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        and r.resource.canonical.startswith("/api/v1")
    ]
    assert len(routes) >= 4
    for r in routes:
        op = doc["paths"][r.resource.canonical][r.method.lower()]  # type: ignore[union-attr]
        assert op["summary"], r.resource.canonical  # type: ignore[union-attr]
        access = access_of(r.handler)
        want = [access.permission] if access and access.kind == "permission" else []
        assert op["x-scopes"] == want
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    # The edge's and the console's routes declare what they take and answer.
    for path in ("/api/v1/compliance/check", "/api/v1/archive/messages", "/api/v1/me"):
        handler = next(r.handler for r in routes if r.resource.canonical == path)  # type: ignore[union-attr]
        assert api_doc_of(handler) is not None, path
    check = doc["paths"]["/api/v1/compliance/check"]["post"]
    assert check["security"] == [{"apiKey": ["compliance:check"]}]
    body = check["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == "#/components/schemas/ComplianceCheckIn"
    schemas = doc["components"]["schemas"]
    assert schemas["ComplianceCheckIn"]["properties"]["context"]["anyOf"][0]["maxItems"] == 50
    assert "FindingOut" in schemas and "ContextTurnIn" in schemas
    ingest = doc["paths"]["/api/v1/archive/messages"]["post"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert ingest["x-scopes"] == ["archive:write"]


async def test_answers_match_the_schemas_the_document_names(console: Console) -> None:
    key = await _key(["compliance:check"])
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        status, me = await _get(http, console.url("/api/v1/me"), key)
        assert status == 200
        WhoAmIOut.model_validate(me)
        async with http.post(
            console.url("/api/v1/compliance/check"),
            json={
                "text": "保本保收益，有事打我13812345678",
                "context": [{"role": "customer", "text": "会亏吗"}],
            },
            headers=headers,
        ) as r:
            assert r.status == 200
            AnalysisOut.model_validate(await r.json())
        # A field the schema refuses: 400 with the field named, in the one error body.
        async with http.post(
            console.url("/api/v1/compliance/check"),
            json={"text": "好的", "context": [{"role": "boss", "text": "x"}]},
            headers=headers,
        ) as r:
            assert r.status == 400
            error = ErrorOut.model_validate(await r.json()).error
            assert error.field == "context.0.role"
        async with http.post(
            console.url("/api/v1/compliance/check"), json={"role": "advisor"}, headers=headers
        ) as r:
            assert r.status == 400
            assert ErrorOut.model_validate(await r.json()).error.field == "text"


async def test_the_reference_page_renders_every_operation(console: Console, browser: Any) -> None:
    await make_operator("admin", name="it-admin")
    client, _ = await signed_in_client(console, "it-admin")
    async with client:
        async with client.get(console.url("/api/docs")) as r:
            html = await r.text()
            assert r.status == 200 and "/api/v1/openapi.json" in html
            assert "cdn" not in html.lower()
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await sign_in(page, console, "it-admin")
    await page.wait_for_url(console.url("/"))
    await page.click("nav >> text=API 文档")
    await page.wait_for_selector(".swagger-ui .opblock")
    summaries = await page.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
    assert {"/api/v1/compliance/check", "/api/v1/archive/messages", "/api/v1/me"} <= {
        s.replace("\u200b", "").strip() for s in summaries
    }
    assert not [e for e in errors if "Content Security Policy" in e], errors
    await shot(page, "api-docs")
    await context.close()
