"""The approval view shows what a version changes: against the running version when there
is one, else against the version before it — entry, exits, goal, product, and steps
added, removed or changed (name, delivery, timing, content kind, a character diff)."""

from __future__ import annotations

import re
from typing import Any

from sop import campaigns
from sop.diff import Segment, review_diff, text_segments
from sop.models import Campaign, CampaignVersion
from tests.admin.console import Console, make_operator, signed_in_client
from tests.sop.seed import OPS, REVIEWER, maturity_spec


def test_a_text_diff_keeps_deletes_and_inserts_characters() -> None:
    assert text_segments("到期资金将划回", "到期本金将按约定划回") == [
        Segment("equal", "到期"),
        Segment("delete", "资"),
        Segment("insert", "本"),
        Segment("equal", "金将"),
        Segment("insert", "按约定"),
        Segment("equal", "划回"),
    ]
    assert text_segments("", "新") == [Segment("insert", "新")]
    assert text_segments("同", "同") == [Segment("equal", "同")]


def _edited() -> Any:
    raw = maturity_spec(audience=None).model_dump(mode="json")
    raw["trigger"]["days_before"] = 5
    raw["audience"] = "attr.risk_level >= C2"
    raw["exit_conditions"] = [{"kind": "replied"}, {"kind": "opted_out"}]
    one, two = raw["steps"]
    one["content"]["text"] = (
        "{customer_name}您好，您持有的{product_name}将于{maturity_date}到期，"
        "如需了解续作安排，欢迎随时联系我。"
    )
    one["at_time"] = "09:30"
    two["content"]["link"]["title"] = "到期资金安排"
    raw["steps"] = [
        one,
        two,
        {
            "name": "到期后回访",
            "anchor": "previous",
            "offset_days": 3,
            "at_time": "10:00",
            "delivery": "reminder",
            "content": {"kind": "text", "text": "到期资金已划回，可为您介绍续作产品。"},
        },
    ]
    return type(maturity_spec()).model_validate(raw)


async def test_the_approval_view_diffs_a_new_version_against_the_running_one(
    console: Console, analyzer: Any
) -> None:
    saved = await campaigns.do_create_campaign(
        spec=maturity_spec(audience=None), actor=OPS, analyzer=analyzer
    )
    cid = saved.campaign.id
    # The first version has nothing to compare with.
    c = await Campaign.get(id=cid)
    assert await review_diff(c, await campaigns.get_version(c)) is None
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
    await campaigns.do_approve(campaign_id=cid, version=1, comment="", actor=REVIEWER)
    await campaigns.do_activate(campaign_id=cid, actor=OPS)
    await campaigns.do_update_campaign(
        campaign_id=cid, spec=_edited(), actor=OPS, analyzer=analyzer
    )
    await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)

    c = await Campaign.get(id=cid)
    diff = await review_diff(c, await campaigns.get_version(c))
    assert diff is not None and diff.base_role == "running" and diff.base.version == 1
    assert diff.fields == ["trigger", "audience", "exit_conditions"]
    assert [(s.position, s.change) for s in diff.steps] == [
        (1, "changed"),
        (2, "changed"),
        (3, "added"),
    ]
    one, two, _ = diff.steps
    assert one.fields == ["timing"] and [t.field for t in one.texts] == ["text"]
    assert two.fields == [] and [t.field for t in two.texts] == ["link.title"]
    assert two.texts[0].segments == [Segment("equal", "到期资金安排"), Segment("delete", "说明")]

    await make_operator("compliance", name="hg-diff")
    client, _ = await signed_in_client(console, "hg-diff")
    async with client:
        async with client.get(console.url(f"/campaigns/{cid}/review")) as r:
            html = await r.text()
            assert r.status == 200
    box = html.split('id="review-diff"', 1)[1].split("</section>", 1)[0]
    assert "与 v1（运行中）相比" in box and "6 处改动" in box
    trigger = box.split('id="diff-trigger"', 1)[1].split("</tr>", 1)[0]
    assert "前 7 天" in trigger and "前 5 天" in trigger
    audience = box.split('id="diff-audience"', 1)[1].split("</tr>", 1)[0]
    assert '<ins class="diff-ins" title="新增">attr.risk_level &gt;= C2</ins>' in audience
    exits = box.split('id="diff-exits"', 1)[1].split("</tr>", 1)[0]
    assert exits.count("达成活动目标") == 1  # the old side only
    step1 = box.split('id="diff-step-1"', 1)[1].split('class="sop-diff-step"', 1)[0]
    assert "10:00" in step1 and "09:30" in step1
    # The text: what was deleted struck through, what is new marked, the rest as is.
    text = re.sub(r"\s+", " ", step1.split('class="diff-field-text"', 1)[1])
    assert '<del class="diff-del" title="删除">可</del>' in text
    assert '<ins class="diff-ins" title="新增">，欢迎</ins>' in text
    assert "{customer_name}您好，您持有的{product_name}" in text
    step3 = box.split('id="diff-step-3"', 1)[1]
    assert "新增" in step3 and "到期后回访" in step3
    # The step panels below carry the same marks.
    head = r'id="review-step-{}">\s*<div class="sop-panel-title"><h2>[^<]+</h2>\s*<span class="tag '
    assert re.search(head.format(1) + 'warn">已修改', html)
    assert re.search(head.format(3) + 'ok">新增', html)


async def test_once_the_new_version_runs_it_is_compared_with_the_one_before(
    db: None, analyzer: Any
) -> None:
    saved = await campaigns.do_create_campaign(
        spec=maturity_spec(audience=None), actor=OPS, analyzer=analyzer
    )
    cid = saved.campaign.id
    for version in (1, 2):
        if version == 2:
            raw = maturity_spec(audience=None).model_dump(mode="json")
            raw["steps"] = raw["steps"][:1]
            raw["goal"] = {"intent": "product_inquiry"}
            raw["product"]["risk_level"] = "R3"
            spec = type(maturity_spec()).model_validate(raw)
            await campaigns.do_update_campaign(
                campaign_id=cid, spec=spec, actor=OPS, analyzer=analyzer
            )
        await campaigns.do_submit(campaign_id=cid, actor=OPS, analyzer=analyzer)
        await campaigns.do_approve(campaign_id=cid, version=version, comment="", actor=REVIEWER)
        await campaigns.do_activate(campaign_id=cid, actor=OPS)
    c = await Campaign.get(id=cid)
    assert c.current_version == 2
    diff = await review_diff(c, await campaigns.get_version(c))
    assert diff is not None and diff.base_role == "previous" and diff.base.version == 1
    assert diff.fields == ["goal", "product"]
    assert [(s.position, s.change) for s in diff.steps] == [(1, "same"), (2, "removed")]
    assert (await CampaignVersion.get(campaign_id=cid, version=1)).status.value == "superseded"
