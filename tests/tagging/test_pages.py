"""The tagging console pages over HTTP: who sees what, forms, validation, htmx fragments."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import aiohttp
import pytest

from admin.models import Operator
from bot import models as bot_models
from core.models import AuditEntry
from tagging import pages, rules
from tagging.models import AttributeImport, CustomerTag, Tag, TagGroup, TagRule
from tests.admin.console import Console, make_operator, signed_in_client
from tests.tagging import seed


async def _client(
    console: Console, role: str, name: str, *, wecom_userid: str = ""
) -> tuple[aiohttp.ClientSession, str]:
    op = await make_operator(role, name=name)
    if wecom_userid:
        await Operator.filter(id=op.id).update(wecom_userid=wecom_userid)
    return await signed_in_client(console, name)


async def _get(client: aiohttp.ClientSession, console: Console, path: str) -> tuple[int, str]:
    async with client.get(console.url(path), allow_redirects=False) as r:
        return r.status, await r.text()


async def _post(
    client: aiohttp.ClientSession, console: Console, path: str, token: str, data: Any
) -> tuple[int, str, str]:
    fields = list(data.items()) if isinstance(data, dict) else list(data)
    async with client.post(
        console.url(path), data=[("_csrf", token), *fields], allow_redirects=False
    ) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


def _rows(html: str, table_id: str) -> list[str]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [re.sub(r"<[^>]+>", " ", row.split(">", 1)[1]) for row in body.split("<tr")[2:]]


async def test_the_library_shows_groups_counts_and_sync_state_by_reach(console: Console) -> None:
    book = await seed.book()
    ops, _ = await _client(console, "marketing", "ops")
    async with ops:
        status, html = await _get(ops, console, "/tags")
        assert status == 200
        assert "客户画像" in html and "仅本地" in html and "尚未运行" in html
        rows = {r.split()[0]: r for r in _rows(html, "group-" + str(book.tags["高净值"].group_id))}
        assert rows["高净值"].split()[1] == "3"  # every customer with it
        assert 'fill="#C0392B"' in html  # the tag's colour, as an SVG fill (no style attribute)
        assert "style=" not in html
        assert 'href="/tags/new"' not in html and "添加标签" in html  # marketing edits
    adv, _ = await _client(console, "advisor", "zhao", wecom_userid="adv-zhao")
    async with adv:
        status, html = await _get(adv, console, "/tags")
        assert status == 200
        rows = {r.split()[0]: r for r in _rows(html, "group-" + str(book.tags["高净值"].group_id))}
        assert rows["高净值"].split()[1] == "2"  # only zhao's customers
        assert "添加标签" not in html and "新建标签组" not in html
        assert "您（或您团队）跟进" in html
        # Rules and audiences are not an advisor's.
        assert (await _get(adv, console, "/tags/rules"))[0] == 403
        assert (await _get(adv, console, "/tags/audiences"))[0] == 403


async def test_a_tags_customers_are_paged_masked_and_within_reach(console: Console) -> None:
    book = await seed.book()
    tag = book.tags["高净值"]
    ops, _ = await _client(console, "marketing", "ops")
    async with ops:
        status, html = await _get(ops, console, f"/tags/{tag.id}")
        assert status == 200
        rows = _rows(html, "tag-customers")
        assert len(rows) == 3
        text = " ".join(rows)
        assert "周**" in text and "周大福" not in text  # marketing sees names masked
        assert "wmBO…0001" in text and "电话回访确认" in text and "手动" in text
        assert (await _get(ops, console, "/tags/999999"))[0] == 404
    adv, _ = await _client(console, "advisor", "qian", wecom_userid="adv-qian")
    async with adv:
        status, html = await _get(adv, console, f"/tags/{tag.id}")
        text = " ".join(_rows(html, "tag-customers"))
        assert "王老板" in text  # their own customer, in full
        assert "周大福" not in text and "周**" not in text  # zhao's: not there at all
        status, html = await _get(adv, console, f"/tags/{tag.id}?source=rule")
        assert "没有带此标签的客户" in html
    compliance, _ = await _client(console, "compliance", "reviewer")
    async with compliance:
        _, html = await _get(compliance, console, f"/tags/{tag.id}")
        assert "周大福" in html  # a compliance reviewer sees names (customers:sensitive)
        assert "编辑标签" not in html


async def test_marketing_creates_edits_and_deletes_through_the_forms(console: Console) -> None:
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        status, location, _ = await _post(
            ops,
            console,
            "/tags/groups",
            token,
            {"name": "活动", "colour": "#112233", "order": "2", "sync_to_wecom": "1"},
        )
        assert status == 303 and location.startswith("/tags?notice=")
        group = await TagGroup.get(name="活动")
        assert group.sync_to_wecom and group.colour == "#112233"
        # A new tag of a synced group goes to WeCom through the outbox.
        status, _, _ = await _post(
            ops, console, "/tags/new", token, {"group_id": str(group.id), "name": "双十一"}
        )
        assert status == 303
        tag = await Tag.get(name="双十一")
        assert tag.push_pending
        assert await bot_models.OutboxItem.filter(origin__startswith="tagging.tag:").count() == 1
        # Bad input: a clear message, nothing changed.
        status, _, html = await _post(
            ops, console, "/tags/new", token, {"group_id": str(group.id), "name": "长" * 31}
        )
        assert status == 422 and "名称至多 30 个字符" in html
        status, _, html = await _post(
            ops, console, "/tags/new", token, {"group_id": str(group.id), "name": "双十一"}
        )
        assert status == 409 and "已有同名" in html
        status, _, html = await _post(
            ops, console, "/tags/groups", token, {"name": "x", "colour": "red"}
        )
        assert status == 422 and "#RRGGBB" in html
        assert await Tag.filter(deleted_at=None).count() == 1
        # Edit: only what changed is saved (and pushed); then delete.
        status, location, _ = await _post(
            ops,
            console,
            f"/tags/{tag.id}",
            token,
            {"name": "双十二", "colour": tag.colour, "order": "0", "description": ""},
        )
        assert status == 303 and "notice" in location
        assert (await Tag.get(id=tag.id)).name == "双十二"
        edits = await AuditEntry.filter(action="tagging.tag.edit").all()
        assert [json.loads(e.detail) for e in edits] == [{"fields": ["name"]}]
        status, location, _ = await _post(ops, console, f"/tags/{tag.id}/delete", token, {})
        assert status == 303
        assert (await Tag.get(id=tag.id)).deleted_at is not None
        status, _, _ = await _post(ops, console, f"/tags/groups/{group.id}/delete", token, {})
        assert status == 303 and (await TagGroup.get(id=group.id)).deleted_at is not None
    reviewer, token = await _client(console, "compliance", "reviewer")
    async with reviewer:
        status, _, _ = await _post(reviewer, console, "/tags/groups", token, {"name": "合规组"})
        assert status == 403
    assert not await TagGroup.filter(name="合规组").exists()


def _rule_form(tag_id: int, **over: str) -> list[tuple[str, str]]:
    form = {
        "name": "养老意向",
        "trigger": "schedule",
        "audience": 'tag:"关注养老" AND attr.risk_level >= C3',
        "intent": "",
        "sentiment": "",
        "keywords": "",
        "sender_role": "customer",
        "min_count": "1",
        "within_days": "14",
        "change_type": "add_external_contact",
        "state": "",
        "expires_after_days": "",
        **over,
    }
    return [*form.items(), ("add", str(tag_id))]


async def test_the_rule_editor_validates_dry_runs_saves_and_enables(console: Console) -> None:
    book = await seed.book()
    target = book.tags["养老客群"].id
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        assert (await _get(ops, console, "/tags/rules/new"))[0] == 200
        # The dry run, as htmx posts it: count and masked sample.
        status, _, html = await _post(
            ops, console, "/tags/rules/dry-run", token, _rule_form(target)
        )
        assert status == 200 and 'id="dry-run-count">1<' in html  # 周大福: 关注养老 and C4
        assert "wmBO…0001" in html and "周大福" not in html
        # An error in the audience shows its position.
        unclosed = 'tag:"关注养老" AND (attr.risk_level >= C3'
        bad = _rule_form(target, audience=unclosed)
        status, _, html = await _post(ops, console, "/tags/rules/dry-run", token, bad)
        assert "表达式不完整" in html and f"第 {len(unclosed) + 1} 个字符" in html
        # Saving validates the same way and changes nothing when refused.
        status, _, html = await _post(
            ops, console, "/tags/rules/save", token, _rule_form(target, audience='tag:"无此标签"')
        )
        assert status == 422 and "未知标签「无此标签」" in html
        assert not await TagRule.exists()
        status, _, html = await _post(
            ops, console, "/tags/rules/save", token, _rule_form(target, name="")
        )
        assert status == 422 and "请填写规则名称" in html
        # A rule that would tag everyone is flagged.
        status, _, html = await _post(
            ops,
            console,
            "/tags/rules/dry-run",
            token,
            _rule_form(target, audience='NOT tag:"已退订" OR tag:"已退订"'),
        )
        assert 'id="dry-run-warning"' in html
        # Saved, then enabled from the list; the job tags the customer with the reason.
        status, location, _ = await _post(
            ops, console, "/tags/rules/save", token, _rule_form(target)
        )
        assert status == 303 and "notice=" in location
        rule = await TagRule.get(name="养老意向")
        assert not rule.enabled
        status, _, _ = await _post(
            ops, console, f"/tags/rules/{rule.id}/enabled", token, {"enabled": "1"}
        )
        assert status == 303 and (await TagRule.get(id=rule.id)).enabled
        assert await AuditEntry.filter(action="tagging.rule.enable").count() == 1
        _, html = await _get(ops, console, "/tags/rules")
        assert "已启用" in " ".join(_rows(html, "rules"))
    assert await rules.rules_tick() == 1
    applied = await CustomerTag.get(tag_id=target).prefetch_related("customer")
    assert applied.customer.external_userid == "wmBOOK00000000000000001"
    assert applied.source == "rule" and applied.reason["rule_id"] == rule.id
    reviewer, token = await _client(console, "compliance", "reviewer")
    async with reviewer:
        status, html = await _get(reviewer, console, f"/tags/rules/{rule.id}")
        assert status == 200 and "只读" in html and 'id="save-rule"' not in html
        status, _, html = await _post(
            reviewer, console, "/tags/rules/dry-run", token, _rule_form(target)
        )
        assert 'id="dry-run-count"' in html
        status, _, _ = await _post(reviewer, console, "/tags/rules/save", token, _rule_form(target))
        assert status == 403


async def test_the_audience_builder_counts_previews_and_points_at_errors(console: Console) -> None:
    await seed.book()
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        assert (await _get(ops, console, "/tags/audiences"))[0] == 200
        expr = 'tag:"高净值" AND NOT tag:"已退订"'
        status, html = await _get(ops, console, "/tags/audiences/preview?" + _q(expr=expr))
        assert status == 200 and 'id="audience-count">3<' in html
        assert "周**" in html and "周大福" not in html
        _, html = await _get(ops, console, "/tags/audiences/preview?" + _q(expr='tag:"高净" OR x'))
        assert "此处不应出现「x」" in html and '<mark class="caret">x</mark>' in html
        _, html = await _get(ops, console, "/tags/audiences/preview?" + _q(expr='tag:"高净"'))
        assert "未知标签「高净」" in html and "第 1 个字符" in html
        sealed = 'tag:"高净值" AND attr.aum > 5'
        _, html = await _get(ops, console, "/tags/audiences/preview?" + _q(expr=sealed))
        at = sealed.index("attr.aum") + 1
        assert "aum 为加密保存的敏感属性" in html and f"第 {at} 个字符" in html
        assert '<mark class="caret">a</mark>ttr.aum' in html
        status, location, _ = await _post(
            ops, console, "/tags/audiences", token, {"name": "高净值在册", "expr": expr}
        )
        assert status == 303
        status, _, html = await _post(
            ops, console, "/tags/audiences", token, {"name": "坏的", "expr": "tag:("}
        )
        assert status == 422 and "第" in html
        _, html = await _get(ops, console, "/tags/audiences")
        assert "高净值在册" in " ".join(_rows(html, "saved-audiences"))


def _q(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


async def test_custom_fields_from_the_console(console: Console) -> None:
    admin, token = await _client(console, "admin", "it-admin")
    async with admin:
        status, html = await _get(admin, console, "/tags/attributes")
        assert status == 200 and "加密存储" in html and 'id="add-field"' in html
        status, location, _ = await _post(
            admin,
            console,
            "/tags/attributes",
            token,
            {
                "name": "vip_grade",
                "label": "会员等级",
                "type": "enum",
                "values": "普通，白金，钻石",
                "max_length": "64",
                "masked_by_role": "1",
            },
        )
        assert status == 303
        _, html = await _get(admin, console, "/tags/attributes")
        assert "普通 &lt; 白金 &lt; 钻石" in html and "按角色脱敏" in html
        status, _, html = await _post(
            admin, console, "/tags/attributes", token, {"name": "vip_grade", "type": "int"}
        )
        assert status == 422 and "已存在" in html
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        _, html = await _get(ops, console, "/tags/attributes")
        assert "vip_grade" in html and 'id="add-field"' not in html
        status, _, _ = await _post(ops, console, "/tags/attributes", token, {"name": "x"})
        assert status == 403


async def test_an_upload_is_imported_recorded_and_its_rejects_downloadable(
    console: Console,
) -> None:
    await seed.book()
    admin, token = await _client(console, "admin", "it-admin")
    body = (
        b"external_userid,risk_level,aum\r\n"
        b"wmBOOK00000000000000001,C5,3200000\r\n"
        b"wmBOOK00000000000000002,C9,100\r\n"
        b"wmNOBODY0000000000000009,C1,\r\n"
    )
    form = aiohttp.FormData()
    form.add_field("_csrf", token)
    form.add_field("file", body, filename="core-2026-12-01.csv", content_type="text/csv")
    async with admin:
        async with admin.post(console.url("/tags/imports"), data=form, allow_redirects=False) as r:
            assert r.status == 303
            location = r.headers["Location"]
        batch = await AttributeImport.get(filename="core-2026-12-01.csv")
        assert (batch.source, batch.rows, batch.accepted, batch.rejected) == ("console", 3, 1, 2)
        _, html = await _get(admin, console, location)
        assert "更新 1 行" in html and "risk_level: must be one of" in html
        async with admin.get(console.url(f"/tags/imports/{batch.id}/rejects.csv")) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
            text = (await r.read()).decode("utf-8-sig")
        lines = list(csv.reader(io.StringIO(text)))
        assert lines[0] == ["行号", "标识类型", "客户标识（脱敏）", "原因"]
        assert [line[0] for line in lines[1:]] == ["3", "4"]
        assert "100" not in text.split("\r\n", 1)[1].replace("wmBO", "")  # no values kept
        _, html = await _get(admin, console, "/tags/imports")
        assert "控制台上传" in html and "core-2026-12-01.csv" in html
        # The page sends it with htmx (token in a header, the file streamed): the same
        # file again changes nothing.
        again = aiohttp.FormData()
        again.add_field("file", body, filename="core-2026-12-01.csv", content_type="text/csv")
        headers = {"X-CSRF-Token": token, "HX-Request": "true"}
        async with admin.post(console.url("/tags/imports"), data=again, headers=headers) as r:
            assert r.status == 200 and r.headers["HX-Redirect"].startswith("/tags/imports/")
        rerun = await AttributeImport.all().order_by("-id").first()
        assert rerun is not None and (rerun.accepted, rerun.unchanged, rerun.rejected) == (0, 1, 2)
    stored = await bot_models.Customer.get(external_userid="wmBOOK00000000000000001")
    assert stored.attributes["aum_band"] == "300万-1000万" and "aum" not in stored.attributes
    reviewer, token = await _client(console, "compliance", "reviewer")
    async with reviewer:
        assert (await _get(reviewer, console, "/tags/imports"))[0] == 200
        status, _, _ = await _post(reviewer, console, "/tags/imports", token, {})
        assert status == 403


async def test_the_customer_panel_shows_tags_reasons_and_history(console: Console) -> None:
    book = await seed.book()
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        await _post(ops, console, f"/tags/{book.tags['已退订'].id}/delete", token, {})
    request = _request(console)
    viewer = _principal("marketing")
    html = await pages.tags_panel(request, book.customers["wmBOOK00000000000000003"], viewer)
    assert html is not None
    assert "暂无标签" in html  # the only tag was deleted …
    assert "移除" in html and "已退订" in html and "标签已删除" in html  # … and that is recorded
    html = await pages.tags_panel(request, book.customers["wmBOOK00000000000000001"], viewer)
    assert html is not None and "高净值" in html and "电话回访确认" in html
    assert 'href="/tags/' in html


async def test_who_applied_a_tag_is_shown_by_name(console: Console) -> None:
    """The operator's display name, the rule's name, the advisor's name — never
    「用户 #N」 — on the customer's tag panel and history, a tag's customers and the
    API, looked up once per kind however many rows name them."""
    from tortoise.transactions import in_transaction

    from core.audit import Actor
    from tagging import flows
    from tagging.models import TagSource

    op = await make_operator("marketing", name="qian", display_name="钱运营")
    book = await seed.book()  # its tags were applied by operator:1 — qian
    assert op.id == 1
    rule = await TagRule.create(name="养老意向", trigger="schedule", spec={})
    await bot_models.Advisor.filter(userid="adv-zhao").update(name="赵经理")
    zhou = "wmBOOK00000000000000001"
    async with in_transaction() as conn:
        for tag, source, by in (
            (book.tags["养老客群"], TagSource.RULE, f"rule:{rule.id}"),
            (book.tags["已退订"], TagSource.WECOM, "wecom:adv-zhao"),
        ):
            await flows.tag_customer(
                conn=conn, external_userid=zhou, tag=tag, source=source, applied_by=by, push=False
            )
    await flows.do_untag_customer(
        external_userid=zhou, tag_id=book.tags["关注养老"].id, actor=Actor("operator", "1", "qian")
    )

    calls: list[list[str]] = []
    real = console.app[pages.ACTOR_NAMES]

    async def counting(refs: Any) -> dict[str, str]:
        calls.append(list(refs))
        return await real(calls[-1])

    console.app._state[pages.ACTOR_NAMES] = counting  # type: ignore[attr-defined]
    html = await pages.tags_panel(_request(console), book.customers[zhou], _principal("admin"))
    assert html is not None and "用户 #" not in html
    assert (
        "钱运营" in html and "规则「养老意向」" in html and "企业微信 · 赵经理（adv-zhao）" in html
    )
    assert calls == [["operator:1"]]  # one lookup for every row and history entry

    ops, _ = await signed_in_client(console, "qian")
    async with ops:
        status, page = await _get(ops, console, f"/tags/{book.tags['高净值'].id}")
        assert status == 200 and "钱运营" in page and "用户 #" not in page
        async with ops.get(console.url(f"/api/v1/customers/{zhou}/tags")) as r:
            body = await r.json()
    names = {t["tag"]: t["applied_by_name"] for t in body["tags"]}
    assert names == {"高净值": "钱运营", "养老客群": "养老意向", "已退订": "赵经理"}
    assert {h["actor_name"] for h in body["history"]} == {"钱运营", "养老意向", "赵经理"}


def _principal(role: str) -> Any:
    from admin.permissions import load_table
    from core.access import Principal

    return Principal(
        kind="operator", id="9", name=role, role=role, permissions=load_table().granted(role)
    )


def _request(console: Console) -> Any:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request("GET", "/customers/1", app=console.app)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("unknown tag 'x'", "未知标签「x」"),
        ("unexpected end (an unclosed parenthesis or a missing term?)", "表达式不完整"),
        (
            "aum is sealed (sensitive) and cannot be compared; compare attr.aum_band instead",
            "attr.aum_band",
        ),
        ("something new", "something new"),
    ],
)
def test_expression_errors_read_in_chinese(message: str, expected: str) -> None:
    assert expected in pages.zh_expression_error(message)


async def test_the_attributes_panel_masks_and_opens_sealed_values_with_an_audit(
    console: Console,
) -> None:
    from core.appkit import KEYRING
    from tagging import attributes
    from tests.tagging.test_sealed_attributes import OPS

    book = await seed.book()
    await attributes.do_add_field(
        spec=attributes.FieldIn(name="nickname_pref", type="string", label="称呼偏好"),
        actor=OPS,
    )
    await attributes.do_add_field(
        spec=attributes.FieldIn(
            name="vip_since", type="date", label="贵宾日期", masked_by_role=True
        ),
        actor=OPS,
    )
    report = await attributes.do_import_attributes(
        rows=[
            {
                "external_userid": "wmBOOK00000000000000001",
                "attributes": {
                    "aum": "4200000",
                    "nickname_pref": "周总",
                    "vip_since": "2020-01-02",
                },
            }
        ],
        actor=OPS,
        keyring=console.app[KEYRING],
    )
    assert report.accepted == 1
    zhou = book.customers["wmBOOK00000000000000001"]
    request = _request(console)
    html = await pages.attributes_panel(request, zhou, _principal("marketing"))
    assert html is not None
    assert "周总" in html and "2020-01-02" not in html and "****-**-**" in html
    assert "已加密" in html and "4200000" not in html and 'id="open-sealed"' not in html
    html = await pages.attributes_panel(request, zhou, _principal("advisor"))
    assert html is not None and "2020-01-02" in html and 'id="open-sealed"' in html
    # Nothing custom or sealed: no panel.
    assert (
        await pages.attributes_panel(
            request, book.customers["wmBOOK00000000000000004"], _principal("advisor")
        )
        is None
    )

    adv, token = await _client(console, "advisor", "zhao", wecom_userid="adv-zhao")
    async with adv:
        # Both panels on the customer page (admin's), drawn from tagging's record.
        status, html = await _get(adv, console, f"/customers/{zhou}")
        assert status == 200
        assert 'id="customer-tags"' in html and 'id="customer-attributes"' in html
        assert "电话回访确认" in html and "4200000" not in html
        status, _, html = await _post(adv, console, f"/tags/customers/{zhou}/sealed", token, {})
        assert status == 200 and "4200000" in html
    entry = await AuditEntry.get(action="tagging.attributes.open")
    assert entry.target == f"customer:{zhou}"
    other, token = await _client(console, "advisor", "qian", wecom_userid="adv-qian")
    async with other:
        status, _, _ = await _post(other, console, f"/tags/customers/{zhou}/sealed", token, {})
        assert status == 404  # not their customer: as if there were none
    ops, token = await _client(console, "marketing", "ops")
    async with ops:
        status, _, _ = await _post(ops, console, f"/tags/customers/{zhou}/sealed", token, {})
        assert status == 403
    assert await AuditEntry.filter(action="tagging.attributes.open").count() == 1


async def test_the_customer_tags_api_keeps_an_advisor_within_reach(console: Console) -> None:
    """GET /api/v1/customers/{id}/tags on an advisor's session: their own customer's tags;
    another advisor's customer answers as an unknown one would (404, nothing revealed)."""
    await seed.book()
    adv, _ = await _client(console, "advisor", "qian", wecom_userid="adv-qian")
    async with adv:
        status, body = await _get(adv, console, "/api/v1/customers/wmBOOK00000000000000004/tags")
        assert status == 200 and [t["tag"] for t in json.loads(body)["tags"]] == ["高净值"]
        status, body = await _get(adv, console, "/api/v1/customers/wmBOOK00000000000000001/tags")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        assert "tags" not in json.loads(body)
        unknown = await _get(adv, console, "/api/v1/customers/wmNOBODY/tags")
        assert unknown[0] == 404
    ops, _ = await _client(console, "marketing", "ops")
    async with ops:
        status, body = await _get(ops, console, "/api/v1/customers/wmBOOK00000000000000001/tags")
        assert status == 200 and "高净值" in [t["tag"] for t in json.loads(body)["tags"]]
