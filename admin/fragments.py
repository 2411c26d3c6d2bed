"""The long, repeated parts of the busiest pages, written out as HTML in Python.

A case page draws its conversation (up to nineteen turns, each cut into highlighted
runs), the advisor's other cases and the case's audit trail; a customer page its
timeline.  In a template each row is a dozen filter, macro and attribute look-ups
through Jinja's runtime; written out here they are one f-string per row, every value
escaped (``markupsafe.escape``), the markup the same as the templates drew.  The
templates place the result (``{{ fragment }}``), so a page reads as before.

Also here: the time and audit helpers the templates and these fragments share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

SHANGHAI = ZoneInfo("Asia/Shanghai")

# The formats pages use, cut from the ISO form (timespec, start, end): the same text as
# strftime at a fraction of its cost — a case page formats some thirty times.
_ISO_CUTS = {
    "%Y-%m-%d %H:%M:%S": ("seconds", 0, 19),
    "%Y-%m-%d %H:%M": ("minutes", 0, 16),
    "%m-%d %H:%M:%S": ("seconds", 5, 19),
    "%m-%d %H:%M": ("minutes", 5, 16),
    "%Y-%m-%d": ("minutes", 0, 10),
}


def cst(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Stored in UTC, shown in Asia/Shanghai (the institution's and the regulator's clock)."""
    if value is None:
        return ""
    local = value.astimezone(SHANGHAI)
    cut = _ISO_CUTS.get(fmt)
    if cut is None or not 1000 <= local.year <= 9999:
        return local.strftime(fmt)
    timespec, start, end = cut
    return local.isoformat(" ", timespec)[start:end]


# How the console names audit actions; an action not listed shows as written.
ACTION_LABELS = {
    "auth.sign_in": "登录",
    "auth.sign_out": "退出登录",
    "auth.totp": "两步验证",
    "auth.totp_enrol": "绑定两步验证",
    "auth.password_change": "修改密码",
    "operator.create": "新建用户",
    "operator.enable": "启用用户",
    "operator.disable": "停用用户",
    "operator.role_change": "修改角色",
    "operator.password_reset": "重置密码",
    "operator.totp_reset": "重置两步验证",
    "api_key.create": "新建 API 密钥",
    "api_key.revoke": "吊销 API 密钥",
    "api_key.use": "调用 API",
    "audit.verify": "校验审计日志",
    "review.assign": "分派审核案件",
    "review.decide": "审核结论",
    "review.unmask": "查看消息原文",
    "review.correct_category": "更正违规类别",
    "review.export_labels": "导出审核标注",
    "lexicon.entry_add": "词库草稿：新增",
    "lexicon.entry_edit": "词库草稿：修改",
    "lexicon.entry_delete": "词库草稿：删除",
    "lexicon.segments": "词库草稿：行业包",
    "lexicon.discard_draft": "词库草稿：放弃修改",
    "lexicon.import_pack": "词库草稿：导入行业包示例",
    "lexicon.publish": "发布词库版本",
    "lexicon.rollback": "回滚词库版本",
    "snippet.create": "新建话术",
    "snippet.edit": "修改话术",
    "snippet.approve": "话术审核通过",
    "snippet.reject": "话术退回",
    "snippet.withdraw": "话术撤回",
    "snippet.disable": "话术停用",
    "snippet.use": "使用话术",
    "snippet.media_upload": "话术图片上传企业微信",
    "customer.unmask": "查看客户手机号原文",
    "sidebar.override": "侧边栏：违规内容仍发送（已说明理由）",
}
_RESULTS = {
    "ok": ("成功", "ok"),
    "failure": ("失败", "bad"),
    "locked": ("已锁定", "bad"),
    "disabled": ("账户已停用", "bad"),
}


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action)


def result_tag(result: str) -> Markup:
    label, tone = _RESULTS.get(result, ("", ""))
    if not label:
        if result.startswith("refused:"):
            label, tone = "拒绝 · " + result.split(":", 1)[1], "bad"
        elif result.startswith("http_"):
            label, tone = "HTTP " + result[5:], "warn"
        elif result.startswith("broken"):
            label, tone = "链已损坏", "bad"
        else:
            label, tone = result, ""
    return Markup('<span class="tag {}">{}</span>').format(tone, label)


# ------------------------------------------------------------------ conversation

SIDE_LABELS = {"advisor": "客户经理", "customer": "客户"}


def bubble(segments: Sequence[tuple[str, str, str]], msgtype: str) -> str:
    """A message's text, its highlighted runs marked; a message without text shows its
    type (「[image]」)."""
    if not segments:
        return f'<span class="muted">[{escape(msgtype)}]</span>'
    parts = []
    for text, cls, title in segments:
        if cls:
            parts.append(
                f'<mark class="{escape(cls)}" title="{escape(title)}">{escape(text)}</mark>'
            )
        else:
            parts.append(str(escape(text)))
    return "".join(parts)


class _CaseTurn(Protocol):
    id: int
    flagged: bool
    side: str
    sender_label: str
    msgtime: datetime
    msgtype: str
    segments: list[tuple[str, str, str]]
    context_for: list[str]


def case_thread(turns: Iterable[_CaseTurn]) -> Markup:
    """The case page's conversation: one ``<li class="turn …">`` per turn."""
    out = []
    for t in turns:
        notes = ""
        if t.flagged:
            notes += '<div class="turn-note bad">被标记的消息</div>'
        if t.context_for:
            notes += (
                '<div class="turn-note context-note">判定依据的语境：客户此句使上面的回答构成「'
                f"{escape('、'.join(t.context_for))}」</div>"
            )
        out.append(
            f'<li class="turn {escape(t.side)}{" flagged" if t.flagged else ""}'
            f'{" context" if t.context_for else ""}" id="msg-{int(t.id)}">'
            f'<div class="who">{escape(t.sender_label)} '
            f'<span class="muted">{SIDE_LABELS.get(t.side, "")}</span> '
            f'<span class="mono muted">{cst(t.msgtime, "%m-%d %H:%M")}</span></div>'
            f'<div class="bubble">{bubble(t.segments, t.msgtype)}</div>{notes}</li>'
        )
    return Markup("\n".join(out))  # noqa: S704 - every value above is escaped


class _TimelineTurn(Protocol):
    id: int
    side: str
    sender_label: str
    in_group: bool
    msgtime: datetime
    msgtype: str
    segments: list[tuple[str, str, str]]
    intent: str
    intent_label: str
    findings: list[tuple[str, str, str]]
    case_id: int | None


def timeline_turns(turns: Iterable[_TimelineTurn], *, can_review: bool) -> Markup:
    """The customer page's timeline turns (oldest first), as ``customers/timeline.html``
    drew them: who and when, the text with findings marked, intent and finding tags and
    the review case."""
    out = []
    for t in turns:
        tags = ""
        if t.intent or t.findings:
            inner = []
            if t.intent:
                inner.append(f'<span class="tag info intent">意图：{escape(t.intent_label)}</span>')
            for _cat, label, sev in t.findings:
                tone = "bad" if sev == "violation" else "warn"
                inner.append(f'<span class="tag {tone}">{escape(label)}</span>')
            if t.case_id:
                case_id = int(t.case_id)
                inner.append(
                    f'<a class="small-text" href="/review/{case_id}">审核案件 #{case_id}</a>'
                    if can_review
                    else f'<span class="muted small-text">审核案件 #{case_id}</span>'
                )
            tags = f'<div class="turn-tags">{" ".join(inner)}</div>'
        out.append(
            f'<li class="turn {escape(t.side)}{" flagged" if t.findings else ""}" '
            f'id="msg-{int(t.id)}">'
            f'<div class="who">{escape(t.sender_label)} '
            f'<span class="muted">{SIDE_LABELS.get(t.side, "")}{" · 群聊" if t.in_group else ""}'
            f'</span> <span class="mono muted">{cst(t.msgtime, "%Y-%m-%d %H:%M")}</span></div>'
            f'<div class="bubble">{bubble(t.segments, t.msgtype)}</div>{tags}</li>'
        )
    return Markup("\n".join(out))  # noqa: S704 - every value above is escaped


# ------------------------------------------------------------------ tables


class _Earlier(Protocol):
    id: int
    categories: list[str]
    status: str
    created_at: datetime


def earlier_cases(
    earlier: Iterable[_Earlier], *, categories: Mapping[str, str], statuses: Mapping[str, str]
) -> Markup:
    """The rows of a case page's 「该客户经理的其他案件」."""
    out = []
    for e in earlier:
        tags = "".join(
            f'<span class="tag">{escape(categories.get(cat, cat))}</span>' for cat in e.categories
        )
        out.append(
            f'<tr><td class="mono"><a href="/review/{int(e.id)}">#{int(e.id)}</a></td>'
            f"<td>{tags}</td><td>{escape(statuses.get(e.status, e.status))}</td>"
            f'<td class="mono">{cst(e.created_at, "%Y-%m-%d %H:%M")}</td></tr>'
        )
    if not out:
        return Markup('<tr><td colspan="4" class="empty">没有其他案件</td></tr>')
    return Markup("\n".join(out))  # noqa: S704 - every value above is escaped


class _Entry(Protocol):
    at: datetime
    actor_id: str
    actor_name: str
    action: str
    result: str
    detail: str


def audit_rows(
    entries: Iterable[_Entry], *, time_format: str, detail_title: bool, empty: str = ""
) -> Markup:
    """An audit trail's rows: time (Beijing), who, what (the detail as its title on a case
    page), the result's tag."""
    out = []
    for e in entries:
        title = f' title="{escape(e.detail)}"' if detail_title else ""
        out.append(
            f'<tr><td class="mono">{cst(e.at, time_format)}</td>'
            f"<td>{escape(e.actor_name or e.actor_id)}</td>"
            f"<td{title}>{escape(action_label(e.action))}</td><td>{result_tag(e.result)}</td></tr>"
        )
    if not out and empty:
        return Markup(f'<tr><td colspan="4" class="empty">{escape(empty)}</td></tr>')  # noqa: S704 - escaped
    return Markup("\n".join(out))  # noqa: S704 - every value above is escaped
