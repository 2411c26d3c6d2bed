"""Every route × every role (and every API scope) → the answer permissions.json promises.

The matrix is generated: the routes come from the application the root builds, what
each needs from the marker on its handler, who holds what from the permission table.
A new route, or a changed grant, changes the expectations without editing this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from admin import flows
from admin.permissions import ROLES, load_table
from core.access import Access, access_of
from core.settings import ALL_ROLES, Settings
from siyu.app import create_app
from tests.admin.console import CLI, Console, make_operator, signed_in_client

TABLE = load_table()
# Routes that are not the console's or the API's: the WeCom callback (signed by
# WeCom), liveness/readiness/metrics (guarded by the ops token), static files.
INFRASTRUCTURE = {"/wecom/callback", "/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True)
class RouteCase:
    method: str
    path: str
    name: str
    access: Access | None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def url_path(self) -> str:
        # An id that exists nowhere: a refusal must not depend on existence.
        return re.sub(r"\{[^}]+\}", "999999", self.path)

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/")


def _app_routes(roles: tuple[str, ...]) -> list[tuple[str, str, str, Any]]:
    settings = Settings(
        _env_file=None,
        wecom={
            "corp_id": "x",
            "token": "t",
            "encoding_aes_key": "k" * 43,
            "app_secret": "s",
            "agent_id": 1,
        },
    )  # type: ignore[arg-type]
    app = create_app(settings, roles)  # type: ignore[arg-type]
    out = []
    for r in app.router.routes():
        if r.method == "HEAD" or r.resource is None:
            continue
        out.append((r.method, r.resource.canonical, r.name or "", r.handler))
    return out


def guarded_routes() -> list[RouteCase]:
    cases = []
    for method, path, name, handler in _app_routes(("admin",)):
        access = access_of(handler)
        if access is None and not path.startswith("/api/"):
            continue  # not the console's (static files); see the test below
        if access is not None and access.kind == "public":
            continue  # the sign-in form itself
        if path.startswith("/sidebar/"):
            continue  # WeCom's chat sidebar: its own sign-in (tests/admin/test_sidebar_access.py)
        # A route for every method ("*": the sign-in steps) is checked as GET and POST.
        for m in ("GET", "POST") if method == "*" else (method,):
            cases.append(RouteCase(m, path, name, access))
    return sorted(cases, key=lambda c: c.id)


CASES = guarded_routes()


def role_may(role: str, case: RouteCase) -> bool:
    if case.access is None:
        return False  # an undeclared API route: the bootstrap token only
    if case.access.kind == "signed_in":
        return True
    return TABLE.allows(role, case.access.permission)


def scope_may(scope: str, case: RouteCase) -> bool:
    if case.access is None:
        return False
    if case.access.kind == "signed_in":
        return True
    return case.access.permission == scope


def test_every_route_declares_who_may_call_it() -> None:
    """Authenticated by default: nothing reaches a handler undeclared but infrastructure."""
    undeclared = sorted(
        f"{m} {p}"
        for m, p, _n, h in _app_routes(ALL_ROLES)
        if access_of(h) is None and p not in INFRASTRUCTURE and not p.startswith("/static/")
    )
    assert undeclared == []


def test_every_declared_permission_is_in_the_table() -> None:
    for case in CASES:
        if case.access is not None and case.access.kind == "permission":
            assert case.access.permission in TABLE.permissions, case.id


def test_the_matrix_covers_the_console_and_the_api() -> None:
    names = {c.name for c in CASES}
    assert {"home", "users", "api_keys", "audit", "api_me", "api_openapi", "api_docs"} <= names
    assert {"review_queue", "review_case", "review_decide", "review_unmask", "review_bulk"} <= names
    assert {"sop_campaigns", "sop_new", "sop_create", "sop_review", "sop_approve"} <= names
    assert {"sop_reject", "sop_activate", "sop_results", "sop_results_csv"} <= names
    paths = {c.path for c in CASES}
    assert {"/api/v1/campaigns", "/api/v1/campaigns/{campaign_id}/approve"} <= paths
    assert "/api/v1/campaigns/{campaign_id}/stats" in paths
    # The advisor's SOP touches the chat sidebar opens and records (advisors only).
    assert {"api_touch", "api_touch_sent"} <= names
    assert any(c.path == "/api/v1/archive/messages" for c in CASES)
    # The lexicon compliance owns and the reply library (issue 11).
    assert {"lexicon", "lexicon_dry_run", "lexicon_publish", "lexicon_rollback"} <= names
    assert {"snippets", "snippet_create", "snippet_approve", "snippet_image"} <= names
    assert {"api_lexicon", "api_snippets", "api_snippet_used"} <= names
    assert {"customer_list", "customer_detail", "customer_timeline", "customer_unmask"} <= names
    assert "customer_search" in names
    assert {"api_customers", "api_customer"} <= names
    assert {"review_correct", "api_review_case", "api_review_correct"} <= names


async def _call(
    console: Console, client: aiohttp.ClientSession, case: RouteCase, headers: dict[str, str]
) -> tuple[int, str]:
    async with client.request(
        case.method,
        console.url(case.url_path),
        headers=headers,
        data={} if case.method != "GET" else None,
        allow_redirects=False,
    ) as resp:
        return resp.status, resp.headers.get("Location", "")


def _verdict(status: int, location: str, case: RouteCase | None = None) -> str:
    if status == 403:
        return "deny"
    if case is not None and case.name == "logout" and status == 303:
        return "allow"  # signing out sends you to the sign-in page
    if status == 401 or location.startswith("/login"):
        return "unauthenticated"
    return "allow"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_route_answers_each_role_as_the_table_says(console: Console, case: RouteCase) -> None:
    wrong = []
    for role in ROLES:
        await make_operator(role, name=f"{role}-{abs(hash(case.id)) % 10_000}")
    for role in ROLES:
        client, token = await signed_in_client(console, f"{role}-{abs(hash(case.id)) % 10_000}")
        async with client:
            status, location = await _call(console, client, case, {"X-CSRF-Token": token})
        want = "allow" if role_may(role, case) else "deny"
        if _verdict(status, location, case) != want:
            wrong.append((role, want, status))
    assert wrong == [], f"{case.id}: (role, expected, got)"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_route_refuses_the_anonymous(console: Console, case: RouteCase) -> None:
    async with console.client() as client:
        status, location = await _call(console, client, case, {})
    assert _verdict(status, location) == "unauthenticated", (status, location)
    if not case.is_api and case.method == "GET":
        assert status == 303


API_CASES = [c for c in CASES if c.is_api]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
async def test_api_route_answers_each_key_scope_as_the_table_says(
    console: Console, case: RouteCase
) -> None:
    wrong = []
    for scope in TABLE.scopes:
        created = await flows.do_create_api_key(
            actor=CLI, source="test", name=f"only-{scope}", scopes=[scope], table=TABLE
        )
        async with console.client() as client:
            status, location = await _call(
                console, client, case, {"Authorization": f"Bearer {created.plaintext}"}
            )
        want = "allow" if scope_may(scope, case) else "deny"
        if _verdict(status, location) != want:
            wrong.append((scope, want, status))
    # The deprecated bootstrap token keeps the reach it always had: every API route.
    async with console.client() as client:
        token = console.settings.api.token.get_secret_value()
        status, location = await _call(console, client, case, {"Authorization": f"Bearer {token}"})
    if (
        case.access is None
        or case.access.kind == "signed_in"
        or case.access.permission in TABLE.scopes
    ):
        if _verdict(status, location) != "allow":
            wrong.append(("SIYU_API__TOKEN", "allow", status))
    assert wrong == [], f"{case.id}: (scope, expected, got)"
