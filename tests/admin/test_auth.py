"""Signing in: sessions, lockout, CSRF, TOTP, forced password change."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pyotp
import time_machine
from yarl import URL

from admin import flows
from admin.keys import CONSOLE
from admin.models import Operator
from admin.sessions import _digest, operator_hint
from core import audit
from core.audit import AuditFilter
from tests.admin.console import (
    PASSWORD,
    Console,
    csrf_in,
    make_operator,
    sign_in,
    signed_in_client,
)


async def test_sign_in_opens_the_home_page_with_real_counts(console: Console) -> None:
    await make_operator("compliance", name="lin")
    async with console.client() as client:
        resp = await sign_in(console, client, "lin")
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookie = resp.cookies["siyu_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with client.get(console.url("/")) as page:
            html = await page.text()
    assert page.status == 200
    assert "已存储消息" in html and 'id="stat-messages"' in html
    assert "合规" in html  # the role badge
    entries = await audit.entries(where=AuditFilter(action="auth.sign_in"))
    assert [(e.actor_name, e.result) for e in entries] == [("lin", "ok")]


async def test_secure_cookie_by_default(console: Console) -> None:
    console.settings.admin.cookie_secure = True
    await make_operator("advisor", name="wang")
    async with console.client() as client:
        async with client.get(console.url("/login")) as page:
            token = csrf_in(await page.text())
            assert page.cookies["siyu_login_csrf"]["secure"]
        # A client on plain HTTP does not send Secure cookies back; send it by hand.
        resp = await client.post(
            console.url("/login"),
            data={"_csrf": token, "name": "wang", "password": PASSWORD},
            headers={"Cookie": f"siyu_login_csrf={token}"},
            allow_redirects=False,
        )
    assert resp.status == 303
    assert resp.cookies["siyu_session"]["secure"]


async def test_wrong_password_and_unknown_name_get_the_same_answer(console: Console) -> None:
    await make_operator("advisor", name="zhao")
    async with console.client() as client:
        wrong = await sign_in(console, client, "zhao", "not the password!!")
        wrong_text = await wrong.text()
        unknown = await sign_in(console, client, "nobody", "not the password!!")
        unknown_text = await unknown.text()
    assert wrong.status == unknown.status == 401
    assert "登录名或密码不正确" in wrong_text and "登录名或密码不正确" in unknown_text
    results = [e.result for e in await audit.entries(where=AuditFilter(action="auth.sign_in"))]
    assert results == ["failure", "failure"]


async def test_account_locks_after_repeated_failures_and_unlocks_later(console: Console) -> None:
    await make_operator("advisor", name="qian")
    limit = console.settings.admin.login_max_failures
    with time_machine.travel("2026-12-01 09:00:00+08:00", tick=False) as clock:
        async with console.client() as client:
            for _ in range(limit):
                resp = await sign_in(console, client, "qian", "wrong password 123")
            assert resp.status == 429
            # Locked: even the right password is refused, and says so.
            resp = await sign_in(console, client, "qian")
            assert resp.status == 429 and "临时锁定" in await resp.text()
            # An unknown name locks the same way (the lock reveals nothing).
            for _ in range(limit):
                other = await sign_in(console, client, "ghost", "wrong password 123")
            assert other.status == 429
            clock.shift(timedelta(seconds=console.settings.admin.lockout_s + 1))
            resp = await sign_in(console, client, "qian")
            assert resp.status == 303
    locked = [
        e for e in await audit.entries(where=AuditFilter(action="auth.sign_in", result="failure"))
    ]
    assert any(e.detail_dict.get("locked") for e in locked)


async def test_one_address_trying_many_names_is_stopped(console: Console) -> None:
    console.settings.admin.address_max_failures = 3
    await make_operator("advisor", name="sun")
    async with console.client() as client:
        for i in range(3):
            await sign_in(console, client, f"guess{i}", "wrong password 123")
        resp = await sign_in(console, client, "sun")
    assert resp.status == 429


async def test_state_change_without_csrf_token_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    await make_operator("admin", name="root")
    client, token = await signed_in_client(console, "root")
    async with client:
        form = {"name": "mallory", "display_name": "", "role": "admin"}
        async with client.post(console.url("/users"), data=form) as resp:
            assert resp.status == 403
        async with client.post(console.url("/users"), data={**form, "_csrf": "forged"}) as resp:
            assert resp.status == 403
        assert not await Operator.filter(name="mallory").exists()
        # With the token (form field, or the header htmx sends) it works.
        async with client.post(console.url("/users"), data={**form, "_csrf": token}) as resp:
            assert resp.status == 200
        async with client.post(
            console.url("/users"),
            data={**form, "name": "mallory2"},
            headers={"X-CSRF-Token": token},
        ) as resp:
            assert resp.status == 200
    assert await Operator.filter(name__in=["mallory", "mallory2"]).count() == 2


async def test_login_form_needs_its_own_csrf_cookie(console: Console) -> None:
    await make_operator("advisor", name="li")
    async with console.client() as client:
        resp = await client.post(
            console.url("/login"),
            data={"_csrf": "x", "name": "li", "password": PASSWORD},
            allow_redirects=False,
        )
        assert resp.status == 403
        assert "siyu_session" not in resp.cookies


async def test_idle_session_ends_and_absolute_lifetime_holds(console: Console) -> None:
    await make_operator("advisor", name="zhou")
    idle = console.settings.admin.session_idle_s
    with time_machine.travel("2026-12-01 09:00:00+08:00", tick=False) as clock:
        client, _ = await signed_in_client(console, "zhou")
        async with client:
            clock.shift(timedelta(seconds=idle - 60))
            async with client.get(console.url("/"), allow_redirects=False) as r:
                assert r.status == 200
            clock.shift(timedelta(seconds=idle + 1))
            async with client.get(console.url("/"), allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login")
        client, _ = await signed_in_client(console, "zhou")
        async with client:
            # Active all along, but past the absolute lifetime.
            steps = console.settings.admin.session_max_s // (idle // 2) + 1
            status = 200
            for _ in range(steps):
                clock.shift(timedelta(seconds=idle // 2))
                async with client.get(console.url("/"), allow_redirects=False) as r:
                    status = r.status
            assert status == 303


async def test_logout_ends_the_session(console: Console) -> None:
    await make_operator("advisor", name="wu")
    client, token = await signed_in_client(console, "wu")
    async with client:
        stolen = client.cookie_jar.filter_cookies(URL(console.url("/")))["siyu_session"].value
        async with client.post(
            console.url("/logout"), data={"_csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 303
    async with console.client() as other:
        other.cookie_jar.update_cookies({"siyu_session": stolen})
        async with other.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 303


async def test_the_cookie_names_its_operator_and_no_other_name_opens_it(console: Console) -> None:
    """The session cookie starts with its operator's id, so the guard reads the operator
    while Redis finds the session; the id decides nothing — with another id in front, or
    none, the same random part opens no session.  A session whose cookie names no
    operator (one made before) still opens."""
    wu = await make_operator("advisor", name="wu")
    boss = await make_operator("admin", name="boss")
    client, _ = await signed_in_client(console, "wu")
    async with client:
        cookie = client.cookie_jar.filter_cookies(URL(console.url("/")))["siyu_session"].value
        async with client.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 200 and "wu" in await r.text()
    head, _, token = cookie.partition(".")
    assert head == str(wu.id) and operator_hint(cookie) == wu.id and len(token) >= 43
    for forged in (f"{boss.id}.{token}", token, f"{wu.id}.{token[:-1]}", f"x{cookie}"):
        async with console.client() as other:
            other.cookie_jar.update_cookies({"siyu_session": forged})
            async with other.get(console.url("/users"), allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login"), forged
    # A session stored under a cookie value without the operator in front.
    store = console.app[CONSOLE].sessions
    plain, _session = await store.create(operator_id=wu.id, epoch=wu.session_epoch, stage="full")
    old = plain.partition(".")[2]
    raw = await store.redis.get(store._key(_digest(plain)))
    await store.redis.set(store._key(_digest(old)), raw)
    async with console.client() as other:
        other.cookie_jar.update_cookies({"siyu_session": old})
        async with other.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 200 and "wu" in await r.text()


async def test_disable_and_password_reset_end_existing_sessions(console: Console) -> None:
    admin_op = await make_operator("admin", name="boss")
    target = await make_operator("marketing", name="ma")
    client, _ = await signed_in_client(console, "ma")
    async with client:
        await flows.do_reset_password(
            actor=flows.operator_actor(admin_op),
            source="test",
            operator_id=target.id,
            password="another long password 9",
            must_change_password=False,
        )
        async with client.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 303
    client, _ = await signed_in_client(console, "ma", "another long password 9")
    async with client:
        await flows.do_set_operator_status(
            actor=flows.operator_actor(admin_op), source="test", operator_id=target.id, active=False
        )
        async with client.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 303
    async with console.client() as c:
        assert (await sign_in(console, c, "ma", "another long password 9")).status == 401


async def test_next_is_kept_but_never_leaves_the_site(console: Console) -> None:
    await make_operator("admin", name="adm")
    async with console.client() as client:
        async with client.get(console.url("/audit?action=auth."), allow_redirects=False) as r:
            assert r.headers["Location"] == "/login?next=%2Faudit%3Faction%3Dauth."
        ok = await sign_in(console, client, "adm", next_path="/audit?action=auth.")
        assert ok.headers["Location"] == "/audit?action=auth."
    async with console.client() as client:
        evil = await sign_in(console, client, "adm", next_path="//evil.example/x")
        assert evil.headers["Location"] == "/"


def _current_code(html: str, offset: int = 0) -> str:
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html)
    assert secret
    totp = pyotp.TOTP(secret.group(1).replace(" ", ""))
    return totp.at(__import__("time").time(), counter_offset=offset)


async def test_required_totp_is_enrolled_then_asked_for(console: Console) -> None:
    console.settings.admin.totp_required_roles = ["compliance"]
    await make_operator("compliance", name="he")
    with time_machine.travel("2026-12-01 09:00:00+08:00", tick=False) as clock:
        async with console.client() as client:
            resp = await sign_in(console, client, "he")
            assert resp.headers["Location"] == "/account/totp"
            # Nothing else opens before enrolment.
            async with client.get(console.url("/"), allow_redirects=False) as r:
                assert r.headers["Location"] == "/account/totp"
            async with client.get(console.url("/account/totp")) as page:
                html = await page.text()
            assert "<svg" in html and "两步验证二维码" in html
            token = csrf_in(html)
            async with client.post(
                console.url("/account/totp"),
                data={"_csrf": token, "code": "000000"},
                allow_redirects=False,
            ) as r:
                assert r.status == 422
            code = _current_code(html)
            async with client.post(
                console.url("/account/totp"),
                data={"_csrf": token, "code": code},
                allow_redirects=False,
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
        op = await Operator.get(name="he")
        assert op.totp_sealed and code not in op.totp_sealed

        clock.shift(timedelta(seconds=60))
        async with console.client() as client:
            resp = await sign_in(console, client, "he")
            assert resp.headers["Location"] == "/login/totp"
            async with client.get(console.url("/"), allow_redirects=False) as r:
                assert r.headers["Location"] == "/login/totp"
            async with client.get(console.url("/login/totp")) as page:
                token = csrf_in(await page.text())
            from core.appkit import KEYRING

            secret = console.app[KEYRING].open_text(op.totp_sealed, aad=f"admin.totp:{op.id}")
            code = pyotp.TOTP(secret).now()
            async with client.post(
                console.url("/login/totp"),
                data={"_csrf": token, "code": code},
                allow_redirects=False,
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
            async with client.get(console.url("/"), allow_redirects=False) as r:
                assert r.status == 200
        # The same code a second time (seen over a shoulder) is refused.
        async with console.client() as client:
            await sign_in(console, client, "he")
            async with client.get(console.url("/login/totp")) as page:
                token = csrf_in(await page.text())
            async with client.post(
                console.url("/login/totp"),
                data={"_csrf": token, "code": code},
                allow_redirects=False,
            ) as r:
                assert r.status == 422


async def test_generated_password_must_be_changed_first(console: Console) -> None:
    admin_op = await make_operator("admin", name="it")
    await flows.do_create_operator(
        actor=flows.operator_actor(admin_op),
        source="test",
        name="newbie",
        role="advisor",
        password="temporary password 1",
        must_change_password=True,
    )
    async with console.client() as client:
        resp = await sign_in(console, client, "newbie", "temporary password 1")
        assert resp.headers["Location"] == "/account/password"
        async with client.get(console.url("/"), allow_redirects=False) as r:
            assert r.headers["Location"] == "/account/password"
        async with client.get(console.url("/account/password")) as page:
            token = csrf_in(await page.text())
        bad: Any = {
            "_csrf": token,
            "current": "temporary password 1",
            "new": "short",
            "confirm": "short",
        }
        async with client.post(console.url("/account/password"), data=bad) as r:
            assert r.status == 422 and "至少 12 个字符" in await r.text()
        good = {**bad, "new": "my own long password", "confirm": "my own long password"}
        async with client.post(
            console.url("/account/password"), data=good, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
        async with client.get(console.url("/"), allow_redirects=False) as r:
            assert r.status == 200
    op = await Operator.get(name="newbie")
    assert not op.must_change_password


async def test_unknown_console_path_is_a_404_page(console: Console) -> None:
    async with console.client() as client:
        async with client.get(console.url("/no/such/page")) as r:
            assert r.status == 404 and "页面不存在" in await r.text()
