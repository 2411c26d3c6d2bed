"""The rows the case and customer pages write out in Python (admin.fragments) escape
every value, as the templates they replaced did, and draw the same markup."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup

from admin import fragments

AT = datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC)  # 09:02 in Beijing


@dataclass
class _CaseTurn:
    id: int
    flagged: bool
    side: str
    sender_label: str
    msgtype: str
    segments: list[tuple[str, str, str]]
    context_for: list[str] = field(default_factory=list)
    msgtime: datetime = AT


@dataclass
class _TimelineTurn:
    id: int
    side: str
    sender_label: str
    msgtype: str
    segments: list[tuple[str, str, str]]
    intent: str = ""
    intent_label: str = ""
    findings: list[tuple[str, str, str]] = field(default_factory=list)
    case_id: int | None = None
    in_group: bool = False
    msgtime: datetime = AT


def test_case_thread_escapes_text_names_and_titles() -> None:
    html = fragments.case_thread(
        [
            _CaseTurn(
                7,
                True,
                "advisor",
                '王"经理<b>',
                "text",
                [("<script>x</script>", "", ""), ("保本", "hl-violation", 'a"b<c>')],
            ),
            _CaseTurn(8, False, "customer", "周先生", "image", [], context_for=["承诺<收益>"]),
        ]
    )
    assert isinstance(html, Markup)
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert '<mark class="hl-violation" title="a&#34;b&lt;c&gt;">保本</mark>' in html
    assert '<li class="turn advisor flagged" id="msg-7">' in html
    assert "王&#34;经理&lt;b&gt;" in html and '<span class="mono muted">12-01 09:02</span>' in html
    assert '<div class="turn-note bad">被标记的消息</div>' in html
    assert '<li class="turn customer context" id="msg-8">' in html
    assert '<span class="muted">[image]</span>' in html and "「承诺&lt;收益&gt;」" in html


def test_timeline_turns_tag_findings_and_link_the_case_only_for_reviewers() -> None:
    turn = _TimelineTurn(
        3,
        "advisor",
        "赵经理",
        "text",
        [("稳赚<", "hl-violation", "承诺保本保收益")],
        intent="purchase_intent",
        intent_label="购买<意向>",
        findings=[("guaranteed_return", "承诺保本保收益", "violation")],
        case_id=12,
        in_group=True,
    )
    seen = fragments.timeline_turns([turn], can_review=True)
    assert '<li class="turn advisor flagged" id="msg-3">' in seen
    assert "客户经理 · 群聊" in seen and "2026-12-01 09:02" in seen
    assert "意图：购买&lt;意向&gt;" in seen
    assert '<span class="tag bad">承诺保本保收益</span>' in seen
    assert '<a class="small-text" href="/review/12">审核案件 #12</a>' in seen
    hidden = fragments.timeline_turns([turn], can_review=False)
    assert "href=" not in hidden and '<span class="muted small-text">审核案件 #12</span>' in hidden
    assert fragments.timeline_turns([], can_review=True) == ""


@dataclass
class _Earlier:
    id: int
    categories: list[str]
    status: str
    created_at: datetime = AT


@dataclass
class _Entry:
    actor_id: str
    actor_name: str
    action: str
    result: str
    detail: str
    at: datetime = AT


def test_tables_escape_and_say_when_empty() -> None:
    rows = fragments.earlier_cases(
        [_Earlier(4, ["guaranteed_return", "x<y"], "open")],
        categories={"guaranteed_return": "承诺保本保收益"},
        statuses={"open": "待审核"},
    )
    assert '<a href="/review/4">#4</a>' in rows and "x&lt;y" in rows and "待审核" in rows
    assert "没有其他案件" in fragments.earlier_cases([], categories={}, statuses={})
    audit = fragments.audit_rows(
        [_Entry("7", "", "review.decide", "refused:<x>", '{"a": "<b>"}')],
        time_format="%m-%d %H:%M:%S",
        detail_title=True,
        empty="尚无处理记录",
    )
    assert "<td>7</td>" in audit and "审核结论" in audit and "12-01 09:02:03" in audit
    assert 'title="{&#34;a&#34;: &#34;&lt;b&gt;&#34;}"' in audit
    assert '<span class="tag bad">拒绝 · &lt;x&gt;</span>' in audit
    assert "尚无处理记录" in fragments.audit_rows(
        [], time_format="%m-%d %H:%M", detail_title=False, empty="尚无处理记录"
    )
    assert fragments.audit_rows([], time_format="%m-%d %H:%M", detail_title=False) == ""
