"""Console pages of SOP campaigns (zh-CN): the list, the builder, a campaign, the approval
view for compliance and the results.  Parse → call one use case → render.

The pages extend the shell's ``base.html`` (its context reaches them through the
request, see ``admin.auth``); scripts and styles are static files under
``/static/sop`` (the CSP allows no inline code).  The builder works as a plain form —
adding or removing a step re-renders it — and htmx adds the live parts: the audience
count, each step's compliance check, and the 30-day calendar.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup
from pydantic import ValidationError

from bot.keys import ANALYZER
from core.access import menu, principal_of, requires
from core.audit import Actor
from sop import campaigns, preview, stats
from sop.campaigns import (
    INTENT_LABELS,
    STATUS_LABELS,
    VARIABLES,
    VERSION_STATUS_LABELS,
    CampaignError,
    CampaignInvalid,
    Problem,
)
from sop.diff import review_diff
from sop.models import Campaign, CampaignStatus, CampaignVersion, VersionStatus
from sop.schemas import CampaignIn, ContentIn
from tagging import service as tagging_service

SEGMENT_LABELS = {
    "all": "全部客群",
    "bank": "银行",
    "securities": "证券/基金",
    "insurance": "保险",
    "consumer_finance": "消费金融",
}
TRIGGER_LABELS = {
    "": "不设触发（仅按受众入组）",
    "customer_added": "添加客户（可限定渠道）",
    "tag_added": "打上标签",
    "tag_removed": "移除标签",
    "intent": "识别到客户意图",
    "attribute_date": "日期属性临近（到期日、生日）",
    "inactivity": "长期无互动",
    "manual": "手动入组（名单或受众快照）",
}
ATTRIBUTE_LABELS = {
    "maturity_date": "产品到期日（导入属性）",
    "holding.maturity_date": "持仓到期日（任一持仓）",
    "birthday": "生日（每年）",
}
REENTRY_LABELS = {
    "never": "不允许再次入组",
    "after_exit": "退出或完成后可再次入组",
    "always": "每次触发都入组",
}
EXIT_LABELS = {
    "replied": "客户回复",
    "opted_out": "客户退订",
    "relation_deleted": "好友关系解除",
    "goal": "达成活动目标",
    "tag_added": "打上标签",
    "tag_removed": "移除标签",
}
DELIVERY_LABELS = {
    "mass_send": "群发任务（客户经理在企业微信确认后发出）",
    "reminder": "提醒客户经理（汇总为摘要，附侧边栏链接）",
    "welcome": "欢迎语（添加后 20 秒内自动发送）",
}
DELIVERY_SHORT = {"mass_send": "群发", "reminder": "提醒", "welcome": "欢迎语"}
CONTENT_KIND_LABELS = {
    "text": "文本",
    "link": "链接卡片",
    "image": "图片",
    "file": "文件",
    "miniprogram": "小程序",
}
ANCHOR_LABELS = {"entry": "入组后", "previous": "上一步后"}
SEVERITY_LABELS = {"violation": "违规", "review": "需人工复核"}
CATEGORY_LABELS = {
    "guaranteed_return": "承诺保本保收益",
    "misleading_promotion": "误导性宣传",
    "off_book_dealing": "飞单/私下交易",
    "improper_inducement": "违规返利/利益输送",
    "suitability_evasion": "规避适当性管理",
    "account_custody": "代客操作/索要账户信息",
    "insider_tip": "内幕消息/确定性荐股",
    "disparagement": "诋毁同业",
}
FIELD_LABELS = {
    "text": "正文",
    "link.title": "链接标题",
    "link.desc": "链接摘要",
    "miniprogram.title": "小程序标题",
}
_FIELD_NAMES = {
    "name": "活动名称",
    "description": "说明",
    "segment": "客群",
    "trigger": "触发方式",
    "trigger.kind": "触发方式",
    "trigger.state": "触发 · 渠道 State",
    "trigger.tag": "触发 · 标签",
    "trigger.intent": "触发 · 客户意图",
    "trigger.attribute": "触发 · 日期属性",
    "trigger.days_before": "触发 · 提前天数",
    "trigger.days": "触发 · 无互动天数",
    "audience": "受众",
    "reentry": "再次入组",
    "goal": "目标",
    "goal.intent": "目标 · 客户意图",
    "goal.tag": "目标 · 标签",
    "product": "推广产品",
    "product.code": "产品代码",
    "product.name": "产品名称",
    "product.risk_level": "产品风险等级",
    "steps": "步骤",
    "comment": "审核意见",
    "name_": "步骤名称",
    "delivery": "触达方式",
    "anchor": "起算",
    "offset_days": "偏移天数",
    "offset_minutes": "偏移分钟",
    "at_time": "发送时刻",
    "window_start": "窗口开始",
    "window_end": "窗口结束",
    "skip_weekends": "跳过周末",
    "skip_holidays": "跳过节假日",
    "content.text": "正文",
    "content.link": "链接",
    "content.link.title": "链接标题",
    "content.link.url": "链接地址",
    "content.link.desc": "链接摘要",
    "content.link.picurl": "链接封面图",
    "content.media": "素材",
    "content.media.url": "素材地址",
    "content.miniprogram": "小程序",
    "content.miniprogram.title": "小程序标题",
    "content.miniprogram.appid": "小程序 AppID",
    "content.miniprogram.page": "小程序页面",
    "content.miniprogram.pic_url": "小程序封面图",
}
_STEP_FIELD = re.compile(r"^steps\[(\d+)\](?:\.(.+))?$")
_EXIT_FIELD = re.compile(r"^exit_conditions\[(\d+)\](?:\.tag)?$")


def field_label(field: str) -> str:
    """A problem's field as marketing reads it: ``steps[2].content.text`` → 第 2 步 · 正文."""
    m = _STEP_FIELD.match(field)
    if m:
        rest = m.group(2) or ""
        name = _FIELD_NAMES.get("name_" if rest == "name" else rest, rest)
        return f"第 {m.group(1)} 步" + (f" · {name}" if name else "")
    m = _EXIT_FIELD.match(field)
    if m:
        return f"退出条件 {m.group(1)}"
    return _FIELD_NAMES.get(field, field)


NOTICES = {
    "created": ("ok", "活动已保存为草稿。"),
    "saved": ("ok", "已保存。"),
    "new_version": ("ok", "已保存为新版本草稿；运行中的版本不受影响，新版本经审批并启用后生效。"),
    "submitted": ("ok", "已提交合规审批。"),
    "approved": ("ok", "已批准。运营可启用该版本。"),
    "rejected": ("warn", "已驳回，活动退回草稿。"),
    "activated": ("ok", "已启用。"),
    "paused": ("warn", "已暂停：待发送的触达不再发出。"),
    "resumed": ("ok", "已恢复运行。"),
    "archived": ("warn", "已归档。"),
    "enrolled": ("ok", "已手动入组（无在职客户经理跟进的客户不入组）。"),
}
STATUS_TONES = {
    CampaignStatus.DRAFT: "",
    CampaignStatus.PENDING_APPROVAL: "info",
    CampaignStatus.ACTIVE: "ok",
    CampaignStatus.PAUSED: "warn",
    CampaignStatus.ARCHIVED: "",
}
VERSION_TONES = {
    VersionStatus.DRAFT: "",
    VersionStatus.PENDING_APPROVAL: "info",
    VersionStatus.APPROVED: "ok",
    VersionStatus.REJECTED: "bad",
    VersionStatus.ACTIVE: "ok",
    VersionStatus.SUPERSEDED: "",
}
STEP_FIELDS = (
    "name",
    "delivery",
    "anchor",
    "offset_days",
    "offset_minutes",
    "at_time",
    "window_start",
    "window_end",
    "kind",
    "text",
    "link_title",
    "link_url",
    "link_desc",
    "link_picurl",
    "media_url",
    "media_name",
    "mp_title",
    "mp_appid",
    "mp_page",
    "mp_pic_url",
)
MAX_FORM_STEPS = campaigns.MAX_STEPS


# ---------------------------------------------------------------- helpers


class Loose(dict[str, Any]):
    """A JSON object for templates: a member it lacks reads as None (not an error)."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def loose(value: Any) -> Any:
    if isinstance(value, dict):
        return Loose({k: loose(v) for k, v in value.items()})
    if isinstance(value, list):
        return [loose(v) for v in value]
    return value


def _actor(request: web.Request) -> Actor:
    p = principal_of(request)
    assert p is not None  # the guard let a signed-in operator through
    return Actor(p.kind, p.id, p.name)


def _may(request: web.Request, permission: str) -> bool:
    p = principal_of(request)
    return p is not None and permission in p.permissions


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


async def _campaign(request: web.Request) -> Campaign:
    try:
        return await campaigns.get_campaign(_campaign_id(request))
    except campaigns.NotFound:
        raise web.HTTPNotFound() from None


def _go(request: web.Request, name: str, notice: str = "", **parts: str) -> web.HTTPSeeOther:
    url = request.app.router[name].url_for(**parts)
    if notice:
        url = url.with_query({"done": notice})
    return web.HTTPSeeOther(str(url))


def _render(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    base = {
        "labels": {
            "status": {k.value: v for k, v in STATUS_LABELS.items()},
            "status_tone": {k.value: v for k, v in STATUS_TONES.items()},
            "version_status": {k.value: v for k, v in VERSION_STATUS_LABELS.items()},
            "version_tone": {k.value: v for k, v in VERSION_TONES.items()},
            "segment": SEGMENT_LABELS,
            "trigger": TRIGGER_LABELS,
            "attribute": ATTRIBUTE_LABELS,
            "reentry": REENTRY_LABELS,
            "exit": EXIT_LABELS,
            "delivery": DELIVERY_LABELS,
            "delivery_short": DELIVERY_SHORT,
            "content_kind": CONTENT_KIND_LABELS,
            "anchor": ANCHOR_LABELS,
            "intent": INTENT_LABELS,
            "severity": SEVERITY_LABELS,
            "category": CATEGORY_LABELS,
            "field": FIELD_LABELS,
        },
        "may_write": _may(request, "campaigns:write"),
        "may_approve": _may(request, "campaigns:approve"),
        "sop_static": sop_static_url,
        "field_label": field_label,
        "notice": NOTICES.get(request.query.get("done", "")),
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


@functools.cache
def _asset_version(filename: str) -> str:
    data = resources.files("sop").joinpath("static", filename).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def sop_static_url(filename: str) -> str:
    return f"/static/sop/{filename}?v={_asset_version(filename)}"


def highlight(text: str, findings: list[dict[str, Any]]) -> Markup:
    """``text`` with each finding's span marked (violations over reviews where they meet)."""
    marks: list[str | None] = [None] * len(text)
    titles: list[str] = [""] * len(text)
    for f in sorted(findings, key=lambda f: f.get("severity") == "violation"):
        start, end = int(f.get("start", 0)), int(f.get("end", 0))
        cls = "hl-violation" if f.get("severity") == "violation" else "hl-review"
        label = CATEGORY_LABELS.get(str(f.get("category")), str(f.get("category")))
        for i in range(max(0, start), min(len(text), end)):
            marks[i] = cls
            titles[i] = f"{SEVERITY_LABELS.get(str(f.get('severity')), '')}：{label}"
    out = Markup("")
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and marks[j] == marks[i] and titles[j] == titles[i]:
            j += 1
        piece = text[i:j]
        if marks[i]:
            out += Markup('<mark class="{}" title="{}">{}</mark>').format(
                marks[i], titles[i], piece
            )
        else:
            out += Markup("{}").format(piece)
        i = j
    return out


def _step_texts(
    content: Mapping[str, Any], findings: list[dict[str, Any]], step: int
) -> list[dict[str, Any]]:
    """Each text a customer reads in a step, highlighted, with that text's findings."""
    out = []
    for fld, text in campaigns.content_texts(dict(content)):
        mine = [f for f in findings if f.get("step") == step and f.get("field") == fld]
        out.append(
            {
                "field": fld,
                "label": FIELD_LABELS.get(fld, fld),
                "html": highlight(text, mine),
                "findings": mine,
            }
        )
    return out


# ---------------------------------------------------------------- form ⇄ spec


def _s(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _form_int(form: Mapping[str, Any], name: str, field: str, errors: list[Problem]) -> int:
    raw = _s(form, name)
    if raw == "":
        return 0
    try:
        return int(raw)
    except ValueError:
        errors.append(Problem(field, "invalid_input", "请填写整数"))
        return 0


def _step_from_form(form: Mapping[str, Any], i: int, errors: list[Problem]) -> dict[str, Any]:
    def g(name: str) -> str:
        return _s(form, f"s{i}_{name}")

    kind = g("kind") or "text"
    content: dict[str, Any] = {"kind": kind, "text": g("text")}
    if kind == "link":
        content["link"] = {
            "title": g("link_title"),
            "url": g("link_url"),
            "desc": g("link_desc"),
            "picurl": g("link_picurl"),
        }
    elif kind in ("image", "file"):
        content["media"] = {"url": g("media_url"), "name": g("media_name")}
    elif kind == "miniprogram":
        content["miniprogram"] = {
            "title": g("mp_title"),
            "appid": g("mp_appid"),
            "page": g("mp_page"),
            "pic_url": g("mp_pic_url"),
        }
    return {
        "name": g("name"),
        "delivery": g("delivery") or "mass_send",
        "anchor": g("anchor") or "entry",
        "offset_days": _form_int(form, f"s{i}_offset_days", f"steps[{i}].offset_days", errors),
        "offset_minutes": _form_int(
            form, f"s{i}_offset_minutes", f"steps[{i}].offset_minutes", errors
        ),
        "at_time": g("at_time") or None,
        "window_start": g("window_start") or "08:00",
        "window_end": g("window_end") or "21:00",
        "skip_weekends": bool(g("skip_weekends")),
        "skip_holidays": bool(g("skip_holidays")),
        "content": content,
    }


def form_to_raw(form: Mapping[str, Any], errors: list[Problem]) -> dict[str, Any]:
    """The builder's form as the JSON shape of :class:`CampaignIn` (not yet validated)."""
    kind = _s(form, "trigger_kind")
    trigger: dict[str, Any] | None = None
    if kind:
        trigger = {"kind": kind}
        if kind == "customer_added" and _s(form, "trigger_state"):
            trigger["state"] = _s(form, "trigger_state")
        if kind in ("tag_added", "tag_removed"):
            trigger["tag"] = _s(form, "trigger_tag")
        if kind == "intent":
            trigger["intent"] = _s(form, "trigger_intent")
        if kind == "attribute_date":
            trigger["attribute"] = _s(form, "trigger_attribute") or None
            trigger["days_before"] = _form_int(
                form, "trigger_days_before", "trigger.days_before", errors
            )
        if kind == "inactivity":
            trigger["days"] = _form_int(form, "trigger_days", "trigger.days", errors) or None
    exits: list[dict[str, Any]] = [
        {"kind": k}
        for k in ("replied", "opted_out", "relation_deleted", "goal")
        if _s(form, f"exit_{k}")
    ]
    for k in ("tag_added", "tag_removed"):
        if _s(form, f"exit_{k}"):
            exits.append({"kind": k, "tag": _s(form, f"exit_{k}")})
    goal: dict[str, Any] | None = None
    if _s(form, "goal_intent"):
        goal = {"intent": _s(form, "goal_intent")}
    elif _s(form, "goal_tag"):
        goal = {"tag": _s(form, "goal_tag")}
    product: dict[str, Any] | None = None
    if any(_s(form, f"product_{k}") for k in ("code", "name", "risk_level")):
        product = {
            "code": _s(form, "product_code"),
            "name": _s(form, "product_name"),
            "risk_level": _s(form, "product_risk_level"),
        }
    count = _form_int(form, "step_count", "steps", errors)
    count = max(0, min(count, MAX_FORM_STEPS))
    return {
        "name": _s(form, "name"),
        "description": _s(form, "description"),
        "segment": _s(form, "segment") or "all",
        "trigger": trigger,
        "audience": _s(form, "audience") or None,
        "reentry": _s(form, "reentry") or "never",
        "timezone": _s(form, "timezone") or "Asia/Shanghai",
        "exit_conditions": exits,
        "goal": goal,
        "product": product,
        "steps": [_step_from_form(form, i, errors) for i in range(1, count + 1)],
    }


def _loc_field(loc: tuple[Any, ...]) -> str:
    """A pydantic error location in the builder's field names: ``steps[2].content.text``."""
    out = ""
    parts = list(loc)
    while parts:
        p = parts.pop(0)
        if isinstance(p, int):
            out += f"[{p + 1}]"
        elif p in ("TriggerIn", "GoalIn", "ProductIn"):
            continue
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def validate_raw(raw: dict[str, Any]) -> tuple[CampaignIn | None, list[Problem]]:
    try:
        return CampaignIn.model_validate(raw), []
    except ValidationError as exc:
        return None, [
            Problem(_loc_field(tuple(e["loc"])), "invalid_input", _zh_pydantic(e))
            for e in exc.errors()
        ]


def _zh_pydantic(e: Any) -> str:
    kind = e.get("type", "")
    if kind in ("string_too_short", "missing"):
        return "请填写此项"
    if kind == "string_too_long":
        return f"内容过长（最多 {e.get('ctx', {}).get('max_length', '')} 个字符）"
    if kind in ("literal_error", "enum"):
        return "请选择有效的选项"
    if kind in ("greater_than_equal", "less_than_equal"):
        return "数值超出允许范围"
    return str(e.get("msg", "输入有误"))


def new_step() -> dict[str, Any]:
    return {
        "name": "",
        "delivery": "mass_send",
        "anchor": "entry",
        "offset_days": 0,
        "offset_minutes": 0,
        "at_time": "10:00",
        "window_start": "08:00",
        "window_end": "21:00",
        "skip_weekends": False,
        "skip_holidays": False,
        "content": {"kind": "text", "text": ""},
    }


def blank_raw() -> dict[str, Any]:
    return {
        "name": "",
        "description": "",
        "segment": "all",
        "trigger": None,
        "audience": None,
        "reentry": "never",
        "timezone": "Asia/Shanghai",
        "exit_conditions": [
            {"kind": "replied"},
            {"kind": "opted_out"},
            {"kind": "relation_deleted"},
        ],
        "goal": None,
        "product": None,
        "steps": [new_step()],
    }


def _errors_by_field(problems: list[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in problems:
        out.setdefault(p.field, p.message)
    return out


async def _builder_context(
    request: web.Request,
    raw: dict[str, Any],
    *,
    campaign: Campaign | None,
    problems: list[Problem] | None = None,
    warnings: list[Problem] | None = None,
    findings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    problems = problems or []
    tags = sorted({t.name for t in await tagging_service.live_tags()})
    exits = {e.get("kind"): e.get("tag") or True for e in raw.get("exit_conditions") or []}
    steps = []
    for i, step in enumerate(raw.get("steps") or [], 1):
        content = step.get("content") or {}
        steps.append(
            {
                "i": i,
                "s": step,
                "c": content,
                "texts": _step_texts(content, findings or [], i) if findings is not None else [],
            }
        )
    return {
        "empty": Loose(),
        "t": loose(raw.get("trigger") or {}),
        "g": loose(raw.get("goal") or {}),
        "p": loose(raw.get("product") or {}),
        "raw": loose(raw),
        "campaign": campaign,
        "steps": loose(steps),
        "exits": exits,
        "tags": tags,
        "variables": VARIABLES,
        "problems": problems,
        "warnings": warnings or [],
        "errors": _errors_by_field(problems),
        "findings": findings,
        "limits": {
            "text": campaigns.TEXT_MAX_BYTES,
            "link_title": campaigns.LINK_TITLE_MAX_BYTES,
            "link_desc": campaigns.LINK_DESC_MAX_BYTES,
            "mp_title": campaigns.MINIPROGRAM_TITLE_MAX_BYTES,
        },
    }


# ---------------------------------------------------------------- the list


@requires("campaigns:read")
@menu("SOP 运营", group="运营", order=30)
async def campaign_list(request: web.Request) -> web.StreamResponse:
    status = request.query.get("status", "")
    if status and status not in {s.value for s in CampaignStatus}:
        status = ""
    rows = await campaigns.list_campaigns(status=status or None)
    every = await campaigns.list_campaigns()
    counts: dict[str, int] = {}
    for r in every:
        counts[r.campaign.status.value] = counts.get(r.campaign.status.value, 0) + 1
    versions = {
        (v.campaign_id, v.version): v  # type: ignore[attr-defined]
        for v in await CampaignVersion.filter(campaign_id__in=[r.campaign.id for r in rows])
    }
    return _render(
        "sop_list.html",
        request,
        {
            "rows": rows,
            "status": status,
            "counts": counts,
            "total": len(every),
            "triggers": {
                r.campaign.id: loose(
                    {"trigger": v.trigger, "audience": v.audience}
                    if (v := versions.get((r.campaign.id, r.campaign.latest_version)))
                    else {}
                )
                for r in rows
            },
        },
    )


# ---------------------------------------------------------------- the builder


@requires("campaigns:write")
async def campaign_new(request: web.Request) -> web.StreamResponse:
    if request.method == "POST":
        return await _builder_post(request, campaign=None)
    return _render(
        "sop_builder.html", request, await _builder_context(request, blank_raw(), campaign=None)
    )


@requires("campaigns:write")
async def campaign_edit(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    if request.method == "POST":
        return await _builder_post(request, campaign=campaign)
    if campaign.status == CampaignStatus.ARCHIVED:
        raise _go(request, "sop_campaign", campaign_id=str(campaign.id))
    version = await campaigns.get_version(campaign)
    spec = campaigns.spec_of(campaign, version, await campaigns.steps_of(version))
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw.setdefault("trigger", None)
    raw.setdefault("goal", None)
    raw.setdefault("product", None)
    raw.setdefault("audience", None)
    return _render(
        "sop_builder.html",
        request,
        await _builder_context(request, raw, campaign=campaign, findings=version.findings or []),
    )


async def _builder_post(request: web.Request, *, campaign: Campaign | None) -> web.Response:
    form = await request.post()
    parse_errors: list[Problem] = []
    raw = form_to_raw(form, parse_errors)
    op = _s(form, "op")
    # Adding or removing a step only re-renders the form: nothing is saved.
    if op == "add_step":
        if len(raw["steps"]) < MAX_FORM_STEPS:
            step = new_step()
            if raw["steps"]:
                step["anchor"] = "previous"
                step["offset_days"] = 1
            raw["steps"].append(step)
        return _render(
            "sop_builder.html", request, await _builder_context(request, raw, campaign=campaign)
        )
    if op.startswith("remove_step_"):
        index = op.removeprefix("remove_step_")
        if index.isdigit() and 1 <= int(index) <= len(raw["steps"]):
            raw["steps"].pop(int(index) - 1)
        return _render(
            "sop_builder.html", request, await _builder_context(request, raw, campaign=campaign)
        )
    spec, shape_problems = validate_raw(raw)
    problems = parse_errors + shape_problems
    analyzer = request.app[ANALYZER]
    if spec is None or problems:
        return _render(
            "sop_builder.html",
            request,
            await _builder_context(request, raw, campaign=campaign, problems=problems),
            status=400,
        )
    actor = _actor(request)
    source = request.remote or ""
    try:
        if campaign is None:
            saved = await campaigns.do_create_campaign(
                spec=spec, actor=actor, analyzer=analyzer, source=source
            )
            notice = "created"
        else:
            saved = await campaigns.do_update_campaign(
                campaign_id=campaign.id, spec=spec, actor=actor, analyzer=analyzer, source=source
            )
            notice = "new_version" if saved.new_version and saved.version.version > 1 else "saved"
    except CampaignInvalid as exc:
        findings, _ = await _findings_quietly(spec, analyzer)
        return _render(
            "sop_builder.html",
            request,
            await _builder_context(
                request, raw, campaign=campaign, problems=exc.problems, findings=findings
            ),
            status=400,
        )
    except CampaignError as exc:
        return _render(
            "sop_builder.html",
            request,
            await _builder_context(
                request,
                raw,
                campaign=campaign,
                problems=[Problem(exc.field or "campaign", exc.code, exc.message)],
            ),
            status=exc.status,
        )
    if op == "submit":
        try:
            await campaigns.do_submit(
                campaign_id=saved.campaign.id, actor=actor, analyzer=analyzer, source=source
            )
        except CampaignError as exc:
            problems = (
                exc.problems
                if isinstance(exc, CampaignInvalid)
                else [Problem(exc.field or "campaign", exc.code, exc.message)]
            )
            version = await campaigns.get_version(saved.campaign)
            return _render(
                "sop_builder.html",
                request,
                await _builder_context(
                    request,
                    raw,
                    campaign=saved.campaign,
                    problems=problems,
                    findings=version.findings or [],
                ),
                status=exc.status,
            )
        notice = "submitted"
    raise _go(request, "sop_campaign", notice, campaign_id=str(saved.campaign.id))


async def _findings_quietly(
    spec: CampaignIn, analyzer: Any
) -> tuple[list[dict[str, Any]], list[Problem]]:
    try:
        return await campaigns.analyze_contents([s.content for s in spec.steps], analyzer=analyzer)
    except campaigns.ComplianceUnavailable:
        return [], []


@requires("campaigns:write")
async def builder_audience_count(request: web.Request) -> web.StreamResponse:
    expr = request.query.get("audience", "").strip()
    alone = request.query.get("trigger_kind", "") in ("", "manual")
    context: dict[str, Any] = {"expr": expr, "alone": alone, "n": None, "total": None, "error": ""}
    if expr:
        n, problem = await campaigns.audience_size(expr[:2000])
        context.update(n=n, total=await campaigns.customers_total())
        if problem is not None:
            context["error"] = problem.message
    return _render("sop_audience_count.html", request, context)


@requires("campaigns:write")
async def builder_check_step(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    raw_i = _s(form, "step")
    i = int(raw_i) if raw_i.isdigit() and 0 < int(raw_i) <= MAX_FORM_STEPS else 1
    errors: list[Problem] = []
    step = _step_from_form(form, i, errors)
    has_product = any(_s(form, f"product_{k}") for k in ("code", "name"))
    try:
        content = ContentIn.model_validate(step["content"])
    except ValidationError as exc:
        problems = [
            Problem(
                f"steps[{i}].content." + _loc_field(tuple(e["loc"])),
                "invalid_input",
                _zh_pydantic(e),
            )
            for e in exc.errors()
        ]
        return _render(
            "sop_step_check.html",
            request,
            {"i": i, "problems": problems, "texts": [], "unavailable": False},
        )
    problems = campaigns.check_content(
        content, prefix=f"steps[{i}].content", has_product=has_product
    )
    unavailable = False
    try:
        findings, pii = await campaigns.analyze_contents([content], analyzer=request.app[ANALYZER])
    except campaigns.ComplianceUnavailable:
        findings, pii, unavailable = [], [], True
    # analyze_contents numbers the one content it was given 1: renumber to this step.
    for f in findings:
        f["step"] = i
    problems += [
        Problem(p.field.replace("steps[1]", f"steps[{i}]", 1), p.code, p.message) for p in pii
    ]
    return _render(
        "sop_step_check.html",
        request,
        {
            "i": i,
            "problems": problems,
            "texts": _step_texts(content.model_dump(mode="json", exclude_none=True), findings, i),
            "unavailable": unavailable,
        },
    )


@requires("campaigns:write")
async def builder_calendar(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    errors: list[Problem] = []
    raw = form_to_raw(form, errors)
    spec, problems = validate_raw(raw)
    if spec is None or errors:
        first = (errors + problems)[0]
        return _render(
            "sop_calendar.html",
            request,
            {"cal": None, "error": f"填写有误，暂无法预览（{first.field}：{first.message}）"},
        )
    cal = await preview.calendar(spec)
    return _render("sop_calendar.html", request, {"cal": cal, "error": cal.error})


# ---------------------------------------------------------------- a campaign


@requires("campaigns:read")
async def campaign_view(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    versions = await campaigns.versions_of(campaign)
    latest = next(v for v in versions if v.version == campaign.latest_version)
    steps = await campaigns.steps_of(latest)
    findings = latest.findings or []
    result = await stats.campaign_stats(campaign)
    running = next((v for v in versions if v.version == campaign.current_version), None)
    return _render(
        "sop_campaign.html",
        request,
        {
            "c": campaign,
            "versions": versions,
            "v": latest,
            "steps": [
                {
                    "s": s,
                    "content": loose(s.content),
                    "texts": _step_texts(s.content, findings, s.position),
                }
                for s in steps
            ],
            "json": loose(
                {
                    "trigger": latest.trigger,
                    "goal": latest.goal,
                    "product": latest.product,
                    "exits": latest.exit_conditions or [],
                }
            ),
            "json_current": loose(
                {"trigger": running.trigger, "audience": running.audience} if running else {}
            ),
            "violations": campaigns.violations_of(findings),
            "reviews": campaigns.reviews_of(findings),
            "totals": result.totals(),
        },
    )


async def _action(request: web.Request, name: str, notice: str) -> web.StreamResponse:
    campaign = await _campaign(request)
    do = getattr(campaigns, f"do_{name}")
    kwargs: dict[str, Any] = {
        "campaign_id": campaign.id,
        "actor": _actor(request),
        "source": request.remote or "",
    }
    if name == "submit":
        kwargs["analyzer"] = request.app[ANALYZER]
    try:
        await do(**kwargs)
    except CampaignError as exc:
        problems = (
            exc.problems
            if isinstance(exc, CampaignInvalid)
            else [Problem(exc.field or "campaign", exc.code, exc.message)]
        )
        return _render(
            "sop_refused.html",
            request,
            {"c": campaign, "problems": problems, "action": name},
            status=exc.status,
        )
    raise _go(request, "sop_campaign", notice, campaign_id=str(campaign.id))


@requires("campaigns:write")
async def campaign_submit(request: web.Request) -> web.StreamResponse:
    return await _action(request, "submit", "submitted")


@requires("campaigns:write")
async def campaign_activate(request: web.Request) -> web.StreamResponse:
    return await _action(request, "activate", "activated")


@requires("campaigns:write")
async def campaign_pause(request: web.Request) -> web.StreamResponse:
    return await _action(request, "pause", "paused")


@requires("campaigns:write")
async def campaign_resume(request: web.Request) -> web.StreamResponse:
    return await _action(request, "resume", "resumed")


@requires("campaigns:write")
async def campaign_archive(request: web.Request) -> web.StreamResponse:
    return await _action(request, "archive", "archived")


@requires("campaigns:write")
async def campaign_enrol(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    form = await request.post()
    listed = [line for line in _s(form, "customers").splitlines() if line.strip()]
    try:
        n = await campaigns.do_enrol_manual(
            campaign_id=campaign.id,
            customers=listed if _s(form, "mode") != "audience" else None,
            actor=_actor(request),
            source=request.remote or "",
        )
    except CampaignError as exc:
        problems = (
            exc.problems
            if isinstance(exc, CampaignInvalid)
            else [Problem(exc.field or "campaign", exc.code, exc.message)]
        )
        return _render(
            "sop_refused.html",
            request,
            {"c": campaign, "problems": problems, "action": "enrol"},
            status=exc.status,
        )
    url = request.app.router["sop_campaign"].url_for(campaign_id=str(campaign.id))
    raise web.HTTPSeeOther(str(url.with_query({"done": "enrolled", "n": str(n)})))


# ---------------------------------------------------------------- approval


@requires("campaigns:approve")
@menu("SOP 审批", group="合规", order=52)
async def approval_queue(request: web.Request) -> web.StreamResponse:
    pending = await campaigns.pending_approvals()
    rows = []
    for c, v in pending:
        findings = v.findings or []
        rows.append(
            {
                "c": c,
                "v": v,
                "violations": len(campaigns.violations_of(findings)),
                "reviews": len(campaigns.reviews_of(findings)),
            }
        )
    return _render("sop_approvals.html", request, {"rows": rows})


@requires("campaigns:approve")
async def campaign_review(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    return await _review_page(request, campaign)


async def _review_page(
    request: web.Request,
    campaign: Campaign,
    *,
    errors: dict[str, str] | None = None,
    comment: str = "",
    status: int = 200,
) -> web.Response:
    version = await campaigns.get_version(campaign)
    steps = await campaigns.steps_of(version)
    findings = version.findings or []
    current = None
    if campaign.current_version and campaign.current_version != version.version:
        current = await campaigns.get_version(campaign, campaign.current_version)
    p = principal_of(request)
    own = p is not None and p.ref in (version.submitted_by, version.created_by)
    changes = await review_diff(campaign, version)
    return _render(
        "sop_review.html",
        request,
        {
            "c": campaign,
            "v": version,
            "current": current,
            "diff": changes,
            "base": loose(
                {
                    "trigger": changes.base.trigger,
                    "goal": changes.base.goal,
                    "product": changes.base.product,
                    "exits": changes.base.exit_conditions or [],
                }
            )
            if changes
            else None,
            "steps": [
                {
                    "s": s,
                    "content": loose(s.content),
                    "texts": _step_texts(s.content, findings, s.position),
                }
                for s in steps
            ],
            "json": loose(
                {
                    "trigger": version.trigger,
                    "goal": version.goal,
                    "product": version.product,
                    "exits": version.exit_conditions or [],
                }
            ),
            "violations": campaigns.violations_of(findings),
            "reviews": campaigns.reviews_of(findings),
            "findings": findings,
            "errors": errors or {},
            "comment": comment,
            "own": own,
        },
        status=status,
    )


async def _decide(request: web.Request, *, approve: bool) -> web.StreamResponse:
    campaign = await _campaign(request)
    form = await request.post()
    comment = _s(form, "comment")[:2000]
    raw_version = _s(form, "version")
    version = int(raw_version) if raw_version.isdigit() and len(raw_version) < 9 else None
    do = campaigns.do_approve if approve else campaigns.do_reject
    try:
        await do(
            campaign_id=campaign.id,
            version=version,
            comment=comment,
            actor=_actor(request),
            source=request.remote or "",
        )
    except CampaignError as exc:
        return await _review_page(
            request,
            campaign,
            errors={exc.field or "decision": exc.message},
            comment=comment,
            status=exc.status,
        )
    raise _go(
        request, "sop_campaign", "approved" if approve else "rejected", campaign_id=str(campaign.id)
    )


@requires("campaigns:approve")
async def campaign_approve(request: web.Request) -> web.StreamResponse:
    return await _decide(request, approve=True)


@requires("campaigns:approve")
async def campaign_reject(request: web.Request) -> web.StreamResponse:
    return await _decide(request, approve=False)


# ---------------------------------------------------------------- results


@requires("campaigns:read")
async def campaign_results(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    result = await stats.campaign_stats(campaign)
    funnel = result.funnel()
    chart = {
        "funnel": [{"name": label, "value": value} for _, label, value in funnel],
        "steps": {
            "x": [f"v{v.version}·第{s.position}步" for v in result.versions for s in v.steps],
            "series": [
                {"name": "已发送", "data": [s.sent for v in result.versions for s in v.steps]},
                {"name": "已确认", "data": [s.confirmed for v in result.versions for s in v.steps]},
                {
                    "name": "跳过",
                    "data": [sum(s.skipped.values()) for v in result.versions for s in v.steps],
                },
                {
                    "name": "3 天内回复",
                    "data": [s.replied for v in result.versions for s in v.steps],
                },
            ],
        },
    }
    return _render(
        "sop_results.html",
        request,
        {
            "c": campaign,
            "result": result,
            "totals": result.totals(),
            "funnel": funnel,
            "chart": chart,
            "reason_label": stats.reason_label,
            "generated_at": datetime.now(UTC),
        },
    )


@requires("campaigns:read")
async def campaign_results_csv(request: web.Request) -> web.StreamResponse:
    campaign = await _campaign(request)
    result = await stats.campaign_stats(campaign)
    body = "\ufeff" + stats.to_csv(result)  # a BOM, so spreadsheet programs read UTF-8
    return web.Response(
        body=body.encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-results.csv"'
        },
    )


def add_pages(app: web.Application) -> None:
    static_dir = resources.files("sop").joinpath("static")
    app.router.add_static("/static/sop", str(static_dir), name="sop_static")
    app.router.add_get("/campaigns", campaign_list, name="sop_campaigns")
    app.router.add_route("GET", "/campaigns/new", campaign_new, name="sop_new")
    app.router.add_post("/campaigns/new", campaign_new, name="sop_create")
    app.router.add_get("/campaigns/approvals", approval_queue, name="sop_approvals")
    app.router.add_get(
        "/campaigns/builder/audience-count", builder_audience_count, name="sop_audience_count"
    )
    app.router.add_post("/campaigns/builder/check-step", builder_check_step, name="sop_check_step")
    app.router.add_post("/campaigns/builder/calendar", builder_calendar, name="sop_calendar")
    app.router.add_get("/campaigns/{campaign_id}", campaign_view, name="sop_campaign")
    app.router.add_get("/campaigns/{campaign_id}/edit", campaign_edit, name="sop_edit")
    app.router.add_post("/campaigns/{campaign_id}/edit", campaign_edit, name="sop_save")
    app.router.add_post("/campaigns/{campaign_id}/submit", campaign_submit, name="sop_submit")
    app.router.add_post("/campaigns/{campaign_id}/activate", campaign_activate, name="sop_activate")
    app.router.add_post("/campaigns/{campaign_id}/pause", campaign_pause, name="sop_pause")
    app.router.add_post("/campaigns/{campaign_id}/resume", campaign_resume, name="sop_resume")
    app.router.add_post("/campaigns/{campaign_id}/archive", campaign_archive, name="sop_archive")
    app.router.add_post("/campaigns/{campaign_id}/enrol", campaign_enrol, name="sop_enrol")
    app.router.add_get("/campaigns/{campaign_id}/review", campaign_review, name="sop_review")
    app.router.add_post("/campaigns/{campaign_id}/approve", campaign_approve, name="sop_approve")
    app.router.add_post("/campaigns/{campaign_id}/reject", campaign_reject, name="sop_reject")
    app.router.add_get("/campaigns/{campaign_id}/results", campaign_results, name="sop_results")
    app.router.add_get(
        "/campaigns/{campaign_id}/results.csv", campaign_results_csv, name="sop_results_csv"
    )
