"""The compliant reply library: written by marketing, approved by compliance under the rules
in force, found by the sidebar's API, counted when used, withdrawn when a lexicon change
makes it a violation, its images kept valid as WeCom temporary media."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import time_machine
from pydantic import SecretStr

from admin import flows as admin_flows
from admin.flows import FieldError, NotFound
from admin.lexicon import flows as lexicon
from admin.permissions import load_table
from admin.snippets import flows as snippets
from admin.snippets import service
from bot.sandbox import SandboxState, start_fake_wecom
from compliance_nlp.pool import AnalyzerPool
from core import audit
from core.audit import Actor, AuditFilter
from core.settings import Settings
from tests.admin.console import Console, make_operator, signed_in_client, start_console
from tests.admin.test_lexicon import _dry_run, lex_console, pool

__all__ = ["lex_console", "pool"]  # fixtures shared with the lexicon tests

OPS = Actor("operator", "2", "wang-ops")
REVIEWER = Actor("operator", "3", "li-compliance")


def png(width: int = 2, height: int = 2) -> bytes:
    """A real (tiny, blue) PNG: what marketing uploads and the browser shows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x1a\x73\xe8" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def text_snippet(text: str, **kw: Any) -> snippets.SnippetInput:
    values: dict[str, Any] = {"kind": "text", "title": "开放申购提醒", "topic": "产品介绍"}
    values.update(kw)
    return snippets.SnippetInput(text=text, **values)


async def approved(data: snippets.SnippetInput, analyzer: AnalyzerPool) -> int:
    row = await snippets.do_create(actor=OPS, source="t", data=data)
    await snippets.do_approve(
        actor=REVIEWER, source="t", snippet_id=row.id, revision=row.revision, analyzer=analyzer
    )
    return row.id


# ------------------------------------------------------------------ writing and approving


async def test_a_snippet_is_checked_before_it_is_stored(db: None) -> None:
    cases = [
        (snippets.SnippetInput(kind="voice", title="t", topic="x"), "kind"),
        (text_snippet(""), "text"),
        (text_snippet("您好", title=""), "title"),
        (text_snippet("您好", segment="crypto"), "segment"),
        (
            snippets.SnippetInput(kind="link", title="t", topic="x", link_title="基金定投指南"),
            "link_url",
        ),
        (
            snippets.SnippetInput(
                kind="link", title="t", topic="x", link_title="指南", link_url="javascript:alert(1)"
            ),
            "link_url",
        ),
        (
            snippets.SnippetInput(
                kind="miniprogram", title="t", topic="x", mp_appid="wx1", mp_title="a", mp_page="p"
            ),
            "mp_appid",
        ),
        (
            # WeCom opens a mini-program page only by a path ending in .html.
            snippets.SnippetInput(
                kind="miniprogram",
                title="t",
                topic="x",
                mp_appid="wx1234567890abcdef",
                mp_title="a",
                mp_page="pages/open/index",
                image=png(),
            ),
            "mp_page",
        ),
        (snippets.SnippetInput(kind="image", title="t", topic="x"), "image"),
        (
            snippets.SnippetInput(
                kind="image", title="t", topic="x", image=b"GIF89a......", image_type="image/png"
            ),
            "image",
        ),
        (
            snippets.SnippetInput(
                kind="image",
                title="t",
                topic="x",
                image=b"\x89PNG\r\n\x1a\n" + b"0" * snippets.IMAGE_MAX_BYTES,
            ),
            "image",
        ),
    ]
    for data, field in cases:
        with pytest.raises(FieldError) as raised:
            await snippets.do_create(actor=OPS, source="t", data=data)
        assert raised.value.field == field, data
    assert await service.count(where=service.SnippetFilter()) == 0
    assert await audit.entries(where=AuditFilter(action="snippet."), limit=5) == []


async def test_approval_names_who_when_and_the_rules_and_refuses_a_violation(
    db: None, pool: AnalyzerPool
) -> None:
    bad = await snippets.do_create(
        actor=OPS, source="t", data=text_snippet("这款理财保本保收益，年化5%稳赚")
    )
    with pytest.raises(FieldError) as refused:
        await snippets.do_approve(
            actor=REVIEWER, source="t", snippet_id=bad.id, revision=1, analyzer=pool
        )
    assert "保本保收益" in refused.value.message
    assert (await service.snippet(snippet_id=bad.id)).status == "pending"  # type: ignore[union-attr]

    good = await snippets.do_create(
        actor=OPS,
        source="t",
        data=text_snippet("本产品不保本，过往业绩不代表未来表现。欢迎到网点了解风险揭示书。"),
    )
    # A reviewer approves the revision they saw: a stale one is refused.
    with pytest.raises(FieldError):
        await snippets.do_approve(
            actor=REVIEWER, source="t", snippet_id=good.id, revision=7, analyzer=pool
        )
    checked = await snippets.do_approve(
        actor=REVIEWER, source="10.1.1.1", snippet_id=good.id, revision=1, analyzer=pool
    )
    row = await service.snippet(snippet_id=good.id)
    assert row is not None and row.status == "approved"
    assert row.approved_by == "li-compliance" and row.approved_at is not None
    assert row.approved_rules == checked.rules and "lexicon" in row.approved_rules
    entry = (await audit.entries(where=AuditFilter(action="snippet.approve"), limit=5))[0]
    assert entry.target == f"snippet:{good.id}" and entry.source == "10.1.1.1"

    # An edit is a new revision, back to review, its approval gone.
    await snippets.do_edit(
        actor=OPS,
        source="t",
        snippet_id=good.id,
        data=text_snippet("本产品不保本，过往业绩不代表未来表现。"),
    )
    row = await service.snippet(snippet_id=good.id)
    assert row is not None and (row.status, row.revision, row.approved_by) == ("pending", 2, "")


async def test_a_lexicon_publish_withdraws_what_now_breaks_a_rule(
    db: None, pool: AnalyzerPool
) -> None:
    stays = await approved(text_snippet("节日快乐，祝您阖家安康！", topic="节日问候"), pool)
    goes = await approved(text_snippet("鑫享系列本周开放申购，欢迎咨询"), pool)
    await lexicon.do_add_entry(
        actor=REVIEWER,
        source="t",
        data=lexicon.EntryInput(
            kind="term",
            text="鑫享",
            category="misleading_promotion",
            basis="LCXS_25",
            suggestion="鑫享系列已停售，请推介在售产品",
        ),
    )
    rows = await lexicon.draft_snapshot()
    published = await lexicon.do_publish(
        actor=REVIEWER,
        source="t",
        reason="鑫享系列停售，禁止推介",
        draft_hash=lexicon.snapshot_hash(rows),
        effect=(await _dry_run(pool, rows)).to_json(),
        analyzer=pool,
    )
    assert [w.snippet_id for w in published.withdrawn] == [goes]
    gone = await service.snippet(snippet_id=goes)
    kept = await service.snippet(snippet_id=stays)
    assert gone is not None and gone.status == "withdrawn"
    assert "鑫享" in gone.status_reason and "INST-" in gone.status_reason
    assert kept is not None and kept.status == "approved"
    assert "overlay 1" in kept.checked_rules  # re-checked under version 1, found clean
    entry = (await audit.entries(where=AuditFilter(action="snippet.withdraw"), limit=5))[0]
    assert entry.target == f"snippet:{goes}" and entry.actor_kind == "system"
    assert entry.detail_dict["lexicon_version"] == 1


# ------------------------------------------------------------------ the API the sidebar reads


async def _json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_advisors_find_approved_snippets_and_their_use_is_counted(
    lex_console: Console, pool: AnalyzerPool
) -> None:
    insurance = await approved(
        text_snippet(
            "保险的现金价值以合同为准，退保可能有损失。", topic="风险提示", segment="insurance"
        ),
        pool,
    )
    general = await approved(text_snippet("节日快乐，祝您阖家安康！", topic="节日问候"), pool)
    await snippets.do_create(actor=OPS, source="t", data=text_snippet("还没审核的话术"))
    link = await approved(
        snippets.SnippetInput(
            kind="link",
            title="基金定投指南",
            topic="投资者教育",
            link_title="定投是什么？三分钟看懂",
            link_url="https://example.com/edu/dingtou",
            link_desc="投资有风险，定投不能保证收益",
        ),
        pool,
    )
    await make_operator("advisor", name="adv")
    client, token = await signed_in_client(lex_console, "adv")
    async with client:
        items = (await _json(client, lex_console.url("/api/v1/snippets")))["items"]
        assert sorted(i["id"] for i in items) == sorted([insurance, general, link])
        by_id = {i["id"]: i for i in items}
        assert by_id[link]["link"] == {
            "title": "定投是什么？三分钟看懂",
            "url": "https://example.com/edu/dingtou",
            "desc": "投资有风险，定投不能保证收益",
            "picurl": "",
        }
        assert by_id[general]["kind"] == "text" and "media_id" not in by_id[general]
        found = await _json(client, lex_console.url("/api/v1/snippets?q=退保"))
        assert [i["id"] for i in found["items"]] == [insurance]
        found = await _json(client, lex_console.url("/api/v1/snippets?topic=节日问候"))
        assert [i["id"] for i in found["items"]] == [general]
        # A segment's snippets and the ones for every segment.
        found = await _json(client, lex_console.url("/api/v1/snippets?segment=bank"))
        assert sorted(i["id"] for i in found["items"]) == sorted([general, link])
        async with client.get(lex_console.url("/api/v1/snippets?segment=crypto")) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["field"] == "segment"

        for _ in range(2):
            async with client.post(
                lex_console.url(f"/api/v1/snippets/{general}/used"),
                headers={"X-CSRF-Token": token},
            ) as resp:
                assert resp.status == 200
        pending = await service.snippets(
            where=service.SnippetFilter(statuses=("pending",)), limit=1
        )
        async with client.post(
            lex_console.url(f"/api/v1/snippets/{pending[0].id}/used"),
            headers={"X-CSRF-Token": token},
        ) as resp:
            assert resp.status == 404  # only approved snippets are sent
        items = (await _json(client, lex_console.url("/api/v1/snippets")))["items"]
        assert items[0]["id"] == general and items[0]["use_count"] == 2  # most used first
    uses = await audit.entries(where=AuditFilter(action="snippet.use"), limit=5)
    assert [u.target for u in uses] == [f"snippet:{general}"] * 2
    assert uses[0].actor_name == "adv"
    with pytest.raises(NotFound):
        await snippets.do_count_use(actor=OPS, source="t", snippet_id=999_999)


async def test_console_roles(lex_console: Console, pool: AnalyzerPool) -> None:
    """Marketing writes (multipart, with an image), compliance approves, advisors read."""
    await make_operator("marketing", name="ops")
    await make_operator("compliance", name="reviewer")
    await make_operator("advisor", name="adv")
    ops, ops_token = await signed_in_client(lex_console, "ops")
    async with ops:
        form = aiohttp.FormData()
        for key, value in {
            "_csrf": ops_token,
            "kind": "image",
            "title": "网点地址",
            "topic": "服务信息",
            "segment": "bank",
        }.items():
            form.add_field(key, value)
        form.add_field("image", png(), filename="map.png", content_type="image/png")
        async with ops.post(lex_console.url("/snippets"), data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            location = resp.headers["Location"]
        snippet_id = int(location.split("/")[2].split("?")[0])
        async with ops.post(
            lex_console.url(f"/snippets/{snippet_id}/approve"),
            data={"_csrf": ops_token, "revision": "1"},
        ) as resp:
            assert resp.status == 403  # marketing does not approve its own copy
    reviewer, rev_token = await signed_in_client(lex_console, "reviewer")
    async with reviewer:
        async with reviewer.post(
            lex_console.url(f"/snippets/{snippet_id}/approve"),
            data={"_csrf": rev_token, "revision": "1"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
    adv, _ = await signed_in_client(lex_console, "adv")
    async with adv:
        async with adv.get(lex_console.url(f"/snippets/{snippet_id}/image")) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            assert await resp.read() == png()
        async with adv.get(lex_console.url("/snippets/new")) as resp:
            assert resp.status == 403


# ------------------------------------------------------------------ WeCom temporary media


@pytest.fixture
async def wecom_console(
    console_settings: Settings, pool: AnalyzerPool, redis_client: object, db: None
) -> AsyncIterator[tuple[Console, SandboxState, str]]:
    state = SandboxState()
    runner, base_url = await start_fake_wecom(state)
    console_settings.wecom.corp_id = state.corp_id
    console_settings.wecom.agent_id = state.agent_id
    console_settings.wecom.app_secret = SecretStr(state.secrets["app"])
    console_settings.wecom.api_base_url = base_url
    c, closers = await start_console(console_settings, analyzer=pool)
    try:
        yield c, state, base_url
    finally:
        for close in closers:
            await close()
        await runner.cleanup()


async def _media_valid(base_url: str, media_id: str) -> tuple[bool, int]:
    async with aiohttp.ClientSession() as s, s.get(f"{base_url}/sandbox/media/{media_id}") as r:
        body = await r.json()
    return bool(body["valid"]), int(body["errcode"])


async def test_media_ids_are_renewed_before_wecom_forgets_them(
    wecom_console: tuple[Console, SandboxState, str], pool: AnalyzerPool
) -> None:
    console, state, base_url = wecom_console
    image = await approved(
        snippets.SnippetInput(
            kind="image", title="网点地址", topic="服务信息", image=png(), image_name="map.png"
        ),
        pool,
    )
    mp = await approved(
        snippets.SnippetInput(
            kind="miniprogram",
            title="预约开户",
            topic="服务信息",
            mp_appid="wx1234567890abcdef",
            mp_title="线上预约开户",
            mp_page="pages/open/index.html",
            image=png(4, 3),
            image_name="cover.png",
        ),
        pool,
    )
    # A system's key, not a console session: sessions end long before 3 days pass.
    key = await admin_flows.do_create_api_key(
        actor=Actor.system("test"),
        source="test",
        name="sidebar",
        scopes=["snippets:read"],
        table=load_table(),
    )
    start = datetime.now(UTC)
    client = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key.plaintext}"})
    async with client:

        async def media() -> dict[int, Any]:
            items = (await _json(client, console.url("/api/v1/snippets")))["items"]
            return {
                i["id"]: (i.get("media_id") or (i.get("miniprogram") or {}).get("pic_media_id"))
                for i in items
            }

        first = await media()
        assert first[image] and first[mp] and first[image] != first[mp]
        assert await _media_valid(base_url, first[image]) == (True, 0)
        assert await media() == first  # fresh: not uploaded again
        assert state.calls["media/upload"] == 2

        with time_machine.travel(start + timedelta(hours=61), tick=True):
            second = await media()  # older than 60 h: uploaded again
            assert second[image] != first[image] and second[mp] != first[mp]
            assert await _media_valid(base_url, first[image]) == (True, 0)  # WeCom: 3 days
        with time_machine.travel(start + timedelta(hours=73), tick=True):
            # WeCom has forgotten the first upload; the library hands out the second.
            assert await _media_valid(base_url, first[image]) == (False, 40007)
            assert await _media_valid(base_url, second[image]) == (True, 0)
            assert await media() == second
        with time_machine.travel(start + timedelta(hours=140), tick=True):
            state.outage_status = 503  # WeCom unreachable: the rest is still served
            items = (await _json(client, console.url("/api/v1/snippets")))["items"]
            failed = {i["id"]: i for i in items}
            assert failed[image]["media_id"] is None and "失败" in failed[image]["media_error"]
            state.outage_status = None
    uploads = await audit.entries(where=AuditFilter(action="snippet.media_upload"), limit=10)
    assert len(uploads) == 4 and {u.target for u in uploads} == {
        f"snippet:{image}",
        f"snippet:{mp}",
    }


async def test_a_mini_program_cover_is_served_while_its_snippet_is_approved(
    wecom_console: tuple[Console, SandboxState, str], pool: AnalyzerPool
) -> None:
    """sendChatMessage takes the cover as an http(s) URL the WeCom client fetches itself."""
    console, _state, _base_url = wecom_console
    data = snippets.SnippetInput(
        kind="miniprogram",
        title="预约开户",
        topic="服务信息",
        mp_appid="wx1234567890abcdef",
        mp_title="线上预约开户",
        mp_page="pages/open/index.html",
        image=png(5, 4),
        image_name="cover.png",
    )
    mp = await approved(data, pool)
    key = await admin_flows.do_create_api_key(
        actor=Actor.system("test"),
        source="test",
        name="sidebar",
        scopes=["snippets:read"],
        table=load_table(),
    )
    api = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key.plaintext}"})
    anyone = aiohttp.ClientSession()  # no session, no key: as the WeCom client fetches it
    async with api, anyone:

        async def cover_url() -> str:
            items = (await _json(api, console.url("/api/v1/snippets")))["items"]
            (item,) = [i for i in items if i["id"] == mp]
            url: str = item["miniprogram"]["picurl"]
            return url

        async def fetch(url: str) -> tuple[int, bytes, str]:
            async with anyone.get(url, allow_redirects=False) as resp:
                return resp.status, await resp.read(), resp.content_type

        url = await cover_url()
        assert url.startswith(console.url("/snippets/covers/")) and url.endswith(".png")
        assert await cover_url() == url  # stable while the snippet is unchanged
        status, body, kind = await fetch(url)
        assert (status, kind) == (200, "image/png") and body == png(5, 4)
        # Another revision or a forged token: nothing.
        forged = url.rsplit("/", 1)[0] + "/k000000000000." + "0" * 32 + ".png"
        assert (await fetch(forged))[0] == 404
        assert (await fetch(url.replace(f"/{mp}/1/", f"/{mp}/2/")))[0] == 404
        assert (await fetch(url[: -len("png")] + "jpg"))[0] == 404

        # Edited: back to review, the old URL serves nothing; approved again, a new URL.
        await snippets.do_edit(
            actor=OPS,
            source="t",
            snippet_id=mp,
            data=dataclasses.replace(data, image=png(10, 8)),
        )
        assert (await fetch(url))[0] == 404
        await snippets.do_approve(
            actor=REVIEWER, source="t", snippet_id=mp, revision=2, analyzer=pool
        )
        renewed = await cover_url()
        assert renewed != url
        status, body, _ = await fetch(renewed)
        assert status == 200 and body == png(10, 8)
        await snippets.do_withdraw(
            actor=REVIEWER, source="t", snippet_id=mp, revision=2, reason="封面需更新"
        )
        assert (await fetch(renewed))[0] == 404


async def test_the_sandbox_takes_uploads_by_wecoms_rules(
    wecom_console: tuple[Console, SandboxState, str],
) -> None:
    _console, state, base_url = wecom_console
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{base_url}/cgi-bin/gettoken",
            params={"corpid": state.corp_id, "corpsecret": state.secrets["app"]},
        ) as r:
            token = (await r.json())["access_token"]

        async def upload(kind: str, content: bytes, name: str = "a.png") -> dict[str, Any]:
            form = aiohttp.FormData()
            form.add_field("media", content, filename=name, content_type="image/png")
            async with s.post(
                f"{base_url}/cgi-bin/media/upload",
                params={"access_token": token, "type": kind},
                data=form,
            ) as r:
                body: dict[str, Any] = await r.json()
                return body

        assert (await upload("sticker", png()))["errcode"] == 40004
        assert (await upload("image", b"GIF89a-not-png-or-jpeg"))["errcode"] == 40005
        assert (await upload("image", b"\x89PNG"))["errcode"] == 40006  # 5 bytes or fewer
        assert (await upload("image", png() + b"0" * (10 * 1024 * 1024)))["errcode"] == 40009
        ok = await upload("image", png())
        assert ok["errcode"] == 0 and ok["type"] == "image" and ok["media_id"]
        assert await _media_valid(base_url, ok["media_id"]) == (True, 0)
        assert await _media_valid(base_url, "no-such-id") == (False, 40007)


async def test_snippets_judged_under_an_older_release_are_judged_again(
    db: None, pool: AnalyzerPool
) -> None:
    """A release changes the shipped rules without any lexicon publish: the job catches up."""
    from admin.snippets.models import Snippet

    old_rules = "lexicon 2025.01-1 / bases 2025.06-1"
    fine = await approved(text_snippet("节日快乐，祝您阖家安康！", topic="节日问候"), pool)
    # Approved under an older release whose lexicon did not know 稳赚 (rows as it left them).
    before = await snippets.do_create(
        actor=OPS, source="t", data=text_snippet("这款产品稳赚，放心买")
    )
    await Snippet.filter(id=before.id).update(
        status="approved", approved_rules=old_rules, checked_rules=old_rules
    )
    await Snippet.filter(id=fine).update(checked_rules=old_rules)

    withdrawn = await snippets.do_recheck_stale(analyzer=pool, lexicon_version=0)
    assert [w.snippet_id for w in withdrawn] == [before.id]
    row = await service.snippet(snippet_id=before.id)
    assert row is not None and row.status == "withdrawn"
    assert row.status_reason.startswith("规则版本更新后复核发现违规")
    assert "稳赚" in row.status_reason
    kept = await service.snippet(snippet_id=fine)
    assert kept is not None and kept.status == "approved" and kept.checked_rules != old_rules
    # Caught up: the next tick has nothing to judge.
    assert await snippets.do_recheck_stale(analyzer=pool, lexicon_version=0) == []
    entry = (await audit.entries(where=AuditFilter(action="snippet.withdraw"), limit=5))[0]
    assert entry.source == "job:snippets-recheck" and entry.actor_name == "snippets"
