"""Campaigns as marketing builds them and compliance approves them: checks and use cases.

``check_*`` functions validate and change nothing; ``do_*`` functions change state in
one transaction together with their audit entry.  The engine (``sop.engine``) never
writes what is here; it reads ``Campaign.status`` / ``current_version`` and the
version's steps.

The life of a campaign::

    draft ──submit──▶ pending_approval ──approve──▶ (approved) ──activate──▶ active
      ▲                     │reject                                     │  ▲
      └─────────────────────┘                                     pause │  │ resume
                                                                        ▼  │
    any but archived ──archive──▶ archived                             paused

Every version needs a compliance approval before it runs — a financial institution's
marketing material is signed off by compliance whatever the analyzer found; a version
with ``review`` findings needs the approver to say why it may go out anyway, and one with
a ``violation`` cannot be submitted.  The approver must not be the person who submitted it.

Editing an active (or paused) campaign writes version n+1 as a draft while version n
keeps running; once n+1 is approved and activated it becomes ``current_version`` and
the engine plans from it for every touch not yet due.  Touches keep the version that
planned them, so results stay attributable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from bot import media as bot_media
from bot.models import Customer
from compliance_nlp.types import INTENTS
from core import audit
from core.audit import Actor
from sop.engine import holidays, specs, timing
from sop.engine import media as sop_media
from sop.models import (
    Anchor,
    Campaign,
    CampaignStatus,
    CampaignStep,
    CampaignVersion,
    Delivery,
    Enrolment,
    EnrolmentState,
    OptOut,
    OptOutSource,
    Touch,
    TouchState,
    VersionStatus,
)
from sop.schemas import CampaignIn, ContentIn, ExitIn, GoalIn, ProductIn, StepIn, TriggerIn, dump
from tagging import audience as tagging_audience
from tagging import service as tagging_service

# ---------------------------------------------------------------- WeCom's limits

#: ``externalcontact/add_msg_template`` (and ``send_welcome_msg``) parameter limits, in
#: UTF-8 bytes as WeCom counts them: text.content 4000, link.title 128, link.desc 512,
#: link.url 2048, miniprogram.title 64; miniprogram.page must end in ".html".
TEXT_MAX_BYTES = 4000
LINK_TITLE_MAX_BYTES = 128
LINK_DESC_MAX_BYTES = 512
LINK_URL_MAX_BYTES = 2048
MINIPROGRAM_TITLE_MAX_BYTES = 64
#: The channel ``State`` of a contact way (add_contact_way "state": 不超过30个字符).
STATE_MAX_CHARS = 30
MAX_STEPS = 20

#: Variables a step's text may use: the engine's (``sop.engine.specs.VARIABLES``, what it
#: fills at send time), each with the most bytes it can expand to (the stored column
#: widths, three bytes a CJK character) — the size check assumes the longest, so a long
#: name never pushes a sent message over WeCom's limit.
_VARIABLE_MAX_BYTES = {
    "customer_name": 128 * 3,
    "advisor_name": 64 * 3,
    "product_name": 64 * 3,
    "maturity_date": len("2026年12月31日".encode()),
}
VARIABLES: dict[str, tuple[str, int]] = {
    name: (label, _VARIABLE_MAX_BYTES.get(name, 64 * 3)) for name, label in specs.VARIABLES.items()
}
_VARIABLE = re.compile(r"\{([^{}\s]{0,40})\}")

INTENT_LABELS = {
    "product_inquiry": "产品咨询",
    "purchase_intent": "购买意向",
    "redemption_intent": "赎回/退保/转出意向",
    "complaint": "投诉/不满",
    "account_service": "账户服务",
    "claim_service": "理赔服务",
    "risk_assessment": "风险测评",
    "chitchat": "闲聊",
}

STATUS_LABELS = {
    CampaignStatus.DRAFT: "草稿",
    CampaignStatus.PENDING_APPROVAL: "待审批",
    CampaignStatus.ACTIVE: "运行中",
    CampaignStatus.PAUSED: "已暂停",
    CampaignStatus.ARCHIVED: "已归档",
}
VERSION_STATUS_LABELS = {
    VersionStatus.DRAFT: "草稿",
    VersionStatus.PENDING_APPROVAL: "待审批",
    VersionStatus.APPROVED: "已批准，待启用",
    VersionStatus.REJECTED: "已驳回",
    VersionStatus.ACTIVE: "运行中",
    VersionStatus.SUPERSEDED: "已被新版本取代",
}

# ---------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a campaign, named by the field a form or an API client shows."""

    field: str  # "name", "trigger.tag", "steps[2].content.text", ...
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class CampaignError(Exception):
    """A use case refused; nothing changed."""

    status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class CampaignInvalid(CampaignError):
    """The campaign as given cannot be saved or submitted: every problem, by field."""

    def __init__(self, problems: Sequence[Problem], *, code: str = "invalid_campaign") -> None:
        first = problems[0]
        super().__init__(code, first.message, field=first.field)
        self.problems = list(problems)


class NotFound(CampaignError):
    status = 404


class StateConflict(CampaignError):
    """The action does not fit the campaign's (or version's) state right now."""

    status = 409


class NotAllowed(CampaignError):
    """Separation of duties: who built or submitted a version does not approve it."""

    status = 403


class ComplianceUnavailable(CampaignError):
    """The analyzer cannot check content now; saving waits rather than skipping the check."""

    status = 503


# ---------------------------------------------------------------- checks (no side effects)


@dataclass
class CheckReport:
    """What ``check_campaign`` found: blocking problems, warnings, the audience's size."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    audience_count: int | None = None
    customers_total: int | None = None


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _hhmm(value: str | None) -> time | None:
    if value is None or value == "":
        return None
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if not m:
        raise ValueError(value)
    return time(int(m.group(1)), int(m.group(2)))


def _clock(value: str | None) -> str | None:
    """A checked clock as the engine reads it: two-digit ``HH:MM``."""
    parsed = _hhmm(value)
    return parsed.strftime("%H:%M") if parsed is not None else None


def expanded_bytes(text: str) -> int:
    """The most bytes ``text`` can take once its variables are filled in."""
    total = _bytes(text)
    for m in _VARIABLE.finditer(text):
        spec = VARIABLES.get(m.group(1))
        if spec is not None:
            total += spec[1] - _bytes(m.group(0))
    return total


def check_variables(text: str, *, where: str, has_product: bool) -> list[Problem]:
    problems = []
    if "{" in _VARIABLE.sub("", text) or "}" in _VARIABLE.sub("", text):
        problems.append(
            Problem(where, "stray_brace", "花括号 { } 只能用于变量，例如 {customer_name}")
        )
    for m in _VARIABLE.finditer(text):
        name = m.group(1)
        if name not in VARIABLES:
            allowed = "、".join("{" + v + "}" for v in VARIABLES)
            problems.append(
                Problem(where, "unknown_variable", f"未知变量 {m.group(0)}；可用的变量：{allowed}")
            )
        elif name == "product_name" and not has_product:
            problems.append(
                Problem(
                    where,
                    "variable_without_product",
                    f"使用了 {m.group(0)}，但活动未设置推广产品",
                )
            )
    return problems


def _check_url(url: str, *, where: str) -> list[Problem]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return [Problem(where, "invalid_url", "链接须以 http:// 或 https:// 开头")]
    if _bytes(url) > LINK_URL_MAX_BYTES:
        return [
            Problem(where, "too_long", f"链接最长 {LINK_URL_MAX_BYTES} 字节，当前 {_bytes(url)}")
        ]
    return []


def check_content(content: ContentIn, *, prefix: str, has_product: bool) -> list[Problem]:
    """WeCom's limits and the variables of one step's content (no database, no analyzer)."""
    problems: list[Problem] = []
    text = content.text
    if text:
        problems += check_variables(text, where=f"{prefix}.text", has_product=has_product)
        size = expanded_bytes(text)
        if size > TEXT_MAX_BYTES:
            problems.append(
                Problem(
                    f"{prefix}.text",
                    "too_long",
                    f"正文最长 {TEXT_MAX_BYTES} 字节（企业微信的限制，变量按最长展开计），"
                    f"当前最多 {size} 字节",
                )
            )
    kind = content.kind
    if kind == "text" and not text:
        problems.append(Problem(f"{prefix}.text", "required", "请填写正文"))
    if kind in ("image", "file"):
        if content.media is None:
            problems.append(
                Problem(f"{prefix}.media.url", "required", "请填写图片或文件的地址（发送时上传）")
            )
        else:
            problems += _check_url(content.media.url, where=f"{prefix}.media.url")
    if kind == "link":
        link = content.link
        if link is None or not link.title:
            problems.append(Problem(f"{prefix}.link.title", "required", "请填写链接标题"))
        if link is None or not link.url:
            problems.append(Problem(f"{prefix}.link.url", "required", "请填写链接地址"))
        if link is not None:
            if link.title:
                problems += check_variables(
                    link.title, where=f"{prefix}.link.title", has_product=has_product
                )
                if expanded_bytes(link.title) > LINK_TITLE_MAX_BYTES:
                    problems.append(
                        Problem(
                            f"{prefix}.link.title",
                            "too_long",
                            f"链接标题最长 {LINK_TITLE_MAX_BYTES} 字节，"
                            f"当前最多 {expanded_bytes(link.title)} 字节",
                        )
                    )
            if link.url:
                problems += _check_url(link.url, where=f"{prefix}.link.url")
            if link.desc:
                problems += check_variables(
                    link.desc, where=f"{prefix}.link.desc", has_product=has_product
                )
                if expanded_bytes(link.desc) > LINK_DESC_MAX_BYTES:
                    problems.append(
                        Problem(
                            f"{prefix}.link.desc",
                            "too_long",
                            f"链接摘要最长 {LINK_DESC_MAX_BYTES} 字节，"
                            f"当前最多 {expanded_bytes(link.desc)} 字节",
                        )
                    )
            if link.picurl:
                problems += _check_url(link.picurl, where=f"{prefix}.link.picurl")
    if kind == "miniprogram":
        mp = content.miniprogram
        if mp is None or not mp.title:
            problems.append(Problem(f"{prefix}.miniprogram.title", "required", "请填写小程序标题"))
        if mp is None or not mp.appid:
            problems.append(
                Problem(f"{prefix}.miniprogram.appid", "required", "请填写小程序 AppID")
            )
        elif not bot_media.APPID.match(mp.appid):
            problems.append(
                Problem(
                    f"{prefix}.miniprogram.appid",
                    "invalid_appid",
                    "小程序 AppID 应为 wx 加 16 位十六进制字符（在小程序后台「开发管理」查看）",
                )
            )
        if mp is None or not mp.page:
            problems.append(Problem(f"{prefix}.miniprogram.page", "required", "请填写小程序页面"))
        if mp is not None:
            if mp.title and expanded_bytes(mp.title) > MINIPROGRAM_TITLE_MAX_BYTES:
                problems.append(
                    Problem(
                        f"{prefix}.miniprogram.title",
                        "too_long",
                        f"小程序标题最长 {MINIPROGRAM_TITLE_MAX_BYTES} 字节，"
                        f"当前最多 {expanded_bytes(mp.title)} 字节",
                    )
                )
            if mp.page and not mp.page.split("?", 1)[0].endswith(".html"):
                problems.append(
                    Problem(
                        f"{prefix}.miniprogram.page",
                        "invalid_page",
                        "小程序页面路径须以 .html 结尾（企业微信的要求）",
                    )
                )
            if not mp.pic_url:
                problems.append(
                    Problem(
                        f"{prefix}.miniprogram.pic_url",
                        "required",
                        "请填写小程序封面图地址（发送时上传为素材）",
                    )
                )
            else:
                problems += _check_url(mp.pic_url, where=f"{prefix}.miniprogram.pic_url")
    # An attachment of another kind than the step's is a leftover of the form: refused,
    # so what compliance approves is exactly what is sent.
    extra = {"media": content.media, "link": content.link, "miniprogram": content.miniprogram}
    wanted = {"image": "media", "file": "media", "link": "link", "miniprogram": "miniprogram"}
    for name, value in extra.items():
        if value is not None and wanted.get(kind) != name:
            problems.append(
                Problem(f"{prefix}.{name}", "unexpected", f"内容类型为 {kind}，不应包含 {name}")
            )
    return problems


def step_timing(step: StepIn | CampaignStep, tz: ZoneInfo = timing.SHANGHAI) -> timing.StepTiming:
    """The engine's view of a step's timing in the version's zone (``_hhmm`` raises
    ValueError on bad clocks)."""
    return timing.StepTiming(
        offset_days=step.offset_days,
        offset_minutes=step.offset_minutes,
        at_time=_hhmm(step.at_time),
        window_start=_hhmm(step.window_start) or timing.DEFAULT_WINDOW[0],
        window_end=_hhmm(step.window_end) or timing.DEFAULT_WINDOW[1],
        skip_weekends=step.skip_weekends,
        skip_holidays=step.skip_holidays,
        tz=tz,
    )


def zone_of(spec: CampaignIn) -> ZoneInfo:
    """The spec's zone, Asia/Shanghai when it names none the zone database knows (that
    is a problem of its own, ``check_campaign``)."""
    try:
        return timing.zone(spec.timezone)
    except ValueError:
        return timing.SHANGHAI


# Reference entries for the ordering checks: a morning, an afternoon and a late
# evening (customers are added at any hour) on an ordinary Monday.
_REFERENCE_ENTRIES = tuple(
    datetime(2025, 3, 3, h, m, tzinfo=timing.SHANGHAI) for h, m in ((9, 0), (14, 30), (22, 30))
)


def plan_offsets(
    steps: Sequence[StepIn | CampaignStep],
    entry: datetime,
    tz: ZoneInfo = timing.SHANGHAI,
    *,
    missing: set[int] | None = None,
) -> list[datetime]:
    """When each step would be due for a customer entering at ``entry`` (engine's rules).

    A step that skips holidays in a year the calendar lacks raises
    :class:`holidays.HolidayCalendarMissing`, unless ``missing`` is given: then it is
    planned as the engine plans it (without the holiday rule, reason
    ``calendar_missing``) and the year is added to ``missing``.
    """
    out: list[datetime] = []
    for i, step in enumerate(steps):
        anchor = entry if step.anchor == Anchor.ENTRY or i == 0 else out[-1]
        rule = step_timing(step, tz)
        try:
            out.append(timing.due_at(anchor, rule))
        except holidays.HolidayCalendarMissing as exc:
            if missing is None:
                raise
            missing.add(exc.year)
            out.append(timing.due_at(anchor, replace(rule, skip_holidays=False)))
    return out


def check_steps(spec: CampaignIn) -> tuple[list[Problem], list[Problem]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not spec.steps:
        return [Problem("steps", "required", "至少需要一个步骤")], []
    if len(spec.steps) > MAX_STEPS:
        problems.append(Problem("steps", "too_many", f"最多 {MAX_STEPS} 个步骤"))
    has_product = spec.product is not None
    for i, step in enumerate(spec.steps, 1):
        p = f"steps[{i}]"
        clocks_ok = True
        for name in ("at_time", "window_start", "window_end"):
            try:
                _hhmm(getattr(step, name))
            except ValueError:
                problems.append(Problem(f"{p}.{name}", "invalid_time", "时间格式应为 HH:MM"))
                clocks_ok = False
        if clocks_ok:
            try:
                step_timing(step, zone_of(spec)).check()
            except timing.TimingError as exc:
                problems.append(Problem(f"{p}.{exc.field}", "impossible_timing", _zh_timing(exc)))
        if step.delivery == Delivery.WELCOME:
            problems += _check_welcome(spec, step, i)
        problems += check_content(step.content, prefix=f"{p}.content", has_product=has_product)
    if not problems:
        p2, w2 = _check_order(spec.steps, zone_of(spec))
        problems += p2
        warnings += w2
    return problems, warnings


def _zh_timing(exc: timing.TimingError) -> str:
    messages = {
        "offset_days": f"偏移天数须在 0 到 {timing.MAX_OFFSET_DAYS} 之间（不能早于锚点）",
        "offset_minutes": "偏移分钟须为 0 或正数；设置了发送时刻时偏移分钟须为 0",
        "window_end": "发送窗口的结束时间须晚于开始时间（同一天内）",
        "at_time": "发送时刻落在免打扰时段（发送窗口之外），永远无法发送",
        "skip_holidays": "跳过周末与节假日后找不到可发送的日子",
    }
    return messages.get(exc.field, exc.message)


def _check_welcome(spec: CampaignIn, step: StepIn, i: int) -> list[Problem]:
    # send_welcome_msg takes the WelcomeCode of add_external_contact, valid 20 s, once
    # (41051 after): only a first step fired by the add itself can use it.
    p = f"steps[{i}].delivery"
    if i != 1 or spec.trigger is None or spec.trigger.kind != "customer_added":
        return [
            Problem(
                p,
                "welcome_needs_add",
                "欢迎语只能用于「添加客户」触发的第一步（WelcomeCode 20 秒内有效，仅一次）",
            )
        ]
    if step.offset_days or step.offset_minutes or step.at_time:
        return [
            Problem(p, "welcome_delayed", "欢迎语须在添加后立即发送：偏移须为 0，且不设发送时刻")
        ]
    if step.skip_weekends or step.skip_holidays:
        return [Problem(p, "welcome_delayed", "欢迎语须在添加后立即发送，不能跳过周末或节假日")]
    return []


def _check_order(
    steps: Sequence[StepIn], tz: ZoneInfo = timing.SHANGHAI
) -> tuple[list[Problem], list[Problem]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    try:
        plans = [plan_offsets(steps, entry.replace(tzinfo=tz), tz) for entry in _REFERENCE_ENTRIES]
    except timing.TimingError as exc:
        return [Problem("steps", "impossible_timing", _zh_timing(exc))], []
    except holidays.HolidayCalendarMissing:
        return [], []  # the reference days are covered; a missing year is the engine's
    for i in range(1, len(steps)):
        earlier = [plan[i] < plan[i - 1] for plan in plans]
        where = f"steps[{i + 1}].offset_days"
        if all(earlier):
            problems.append(
                Problem(where, "out_of_order", f"第 {i + 1} 步总是早于第 {i} 步，请调整偏移")
            )
        elif any(earlier):
            warnings.append(
                Problem(where, "out_of_order", f"对部分入组时间，第 {i + 1} 步会早于第 {i} 步")
            )
    # Each customer receives at most one mass-send a day (WeCom's rule, stricter when
    # the corp sets it): two mass-send steps on one day would have the second refused.
    mass = [i for i, s in enumerate(steps) if s.delivery == Delivery.MASS_SEND]
    for a, b in zip(mass, mass[1:], strict=False):
        same = [
            plan[a].astimezone(timing.SHANGHAI).date() == plan[b].astimezone(timing.SHANGHAI).date()
            for plan in plans
        ]
        if any(same):
            problems.append(
                Problem(
                    f"steps[{b + 1}].offset_days",
                    "mass_send_same_day",
                    f"第 {a + 1} 步与第 {b + 1} 步可能在同一天群发；"
                    "企业微信每位客户每天最多接收一条群发，请相隔至少一天或改为提醒客户经理",
                )
            )
    return problems, warnings


def check_trigger(trigger: TriggerIn | None, known_tags: set[str]) -> list[Problem]:
    if trigger is None:
        return []
    k = trigger.kind
    problems: list[Problem] = []
    if k == "customer_added" and trigger.state and len(trigger.state) > STATE_MAX_CHARS:
        problems.append(
            Problem("trigger.state", "too_long", f"渠道 State 最长 {STATE_MAX_CHARS} 个字符")
        )
    if k in ("tag_added", "tag_removed"):
        if not trigger.tag:
            problems.append(Problem("trigger.tag", "required", "请选择触发的标签"))
        elif trigger.tag not in known_tags:
            problems.append(Problem("trigger.tag", "unknown_tag", f"标签库中没有「{trigger.tag}」"))
    if k == "intent":
        if not trigger.intent:
            problems.append(Problem("trigger.intent", "required", "请选择触发的客户意图"))
        elif trigger.intent not in INTENTS:
            problems.append(Problem("trigger.intent", "unknown_intent", "未知的客户意图"))
    if k == "attribute_date":
        if trigger.attribute is None:
            problems.append(Problem("trigger.attribute", "required", "请选择日期属性"))
        if trigger.days_before is None:
            problems.append(Problem("trigger.days_before", "required", "请填写提前天数"))
    if k == "inactivity" and trigger.days is None:
        problems.append(Problem("trigger.days", "required", "请填写无互动天数"))
    # Parameters of another kind are leftovers of a form: refused rather than ignored.
    used = {
        "customer_added": {"state"},
        "tag_added": {"tag"},
        "tag_removed": {"tag"},
        "intent": {"intent"},
        "attribute_date": {"attribute", "days_before"},
        "inactivity": {"days"},
        "manual": set(),
    }[k]
    for name in ("state", "tag", "intent", "attribute", "days_before", "days"):
        if getattr(trigger, name) is not None and name not in used:
            problems.append(
                Problem(f"trigger.{name}", "unexpected", f"触发方式 {k} 不使用参数 {name}")
            )
    return problems


def check_exits(
    exits: Sequence[ExitIn], goal: GoalIn | None, known_tags: set[str]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str | None]] = set()
    for i, e in enumerate(exits, 1):
        p = f"exit_conditions[{i}]"
        if (e.kind, e.tag) in seen:
            problems.append(Problem(p, "duplicate", "重复的退出条件"))
        seen.add((e.kind, e.tag))
        if e.kind in ("tag_added", "tag_removed"):
            if not e.tag:
                problems.append(Problem(f"{p}.tag", "required", "请选择标签"))
            elif e.tag not in known_tags:
                problems.append(Problem(f"{p}.tag", "unknown_tag", f"标签库中没有「{e.tag}」"))
        elif e.tag is not None:
            problems.append(Problem(f"{p}.tag", "unexpected", f"退出条件 {e.kind} 不使用标签"))
        if e.kind == "goal" and goal is None:
            problems.append(Problem(p, "goal_missing", "「达成目标」退出需要先设置活动目标"))
    if goal is not None:
        if (goal.intent is None) == (goal.tag is None):
            problems.append(Problem("goal", "invalid_goal", "目标须是一个客户意图或一个标签"))
        elif goal.intent is not None and goal.intent not in INTENTS:
            problems.append(Problem("goal.intent", "unknown_intent", "未知的客户意图"))
        elif goal.tag is not None and goal.tag not in known_tags:
            problems.append(Problem("goal.tag", "unknown_tag", f"标签库中没有「{goal.tag}」"))
    return problems


async def customers_total() -> int:
    return await Customer.all().count()


async def audience_size(expr: str) -> tuple[int | None, Problem | None]:
    """The audience's size now, or the parse problem (with the character position)."""
    try:
        node = tagging_audience.parse(expr)
        return await tagging_audience.count(node), None
    except tagging_audience.ExpressionError as exc:
        return None, Problem(
            "audience",
            "invalid_expression",
            f"受众表达式有误（第 {exc.position + 1} 个字符）：{exc.message}",
        )


async def check_campaign(spec: CampaignIn) -> CheckReport:
    """Everything but compliance: what would make the campaign never run, or run wrong."""
    report = CheckReport()
    names = _tag_names(spec)
    known = set(await tagging_service.tags_named(names=sorted(names))) if names else set()
    if not spec.name.strip():
        report.problems.append(Problem("name", "required", "请填写活动名称"))
    if spec.trigger is None and not spec.audience:
        report.problems.append(
            Problem("trigger", "required", "请设置入组触发方式或受众（至少一项）")
        )
    report.problems += check_trigger(spec.trigger, known)
    if spec.audience:
        n, problem = await audience_size(spec.audience)
        if problem is not None:
            report.problems.append(problem)
        else:
            total = await customers_total()
            report.audience_count, report.customers_total = n, total
            # Enrolled from the audience alone (no trigger, or a manual snapshot), an
            # audience of nobody or of everybody is a mistake; as a trigger's filter it
            # may legitimately match nobody yet.
            alone = spec.trigger is None or spec.trigger.kind == "manual"
            bucket = report.problems if alone else report.warnings
            if not n:
                bucket.append(Problem("audience", "audience_empty", "受众当前没有匹配任何客户"))
            elif total > 0 and n is not None and n >= total:
                bucket.append(
                    Problem(
                        "audience",
                        "audience_everyone",
                        f"受众匹配了全部 {total} 位客户；请收窄条件（例如排除已退订）",
                    )
                )
    report.problems += check_exits(spec.exit_conditions, spec.goal, known)
    try:
        timing.zone(spec.timezone)
    except ValueError:
        report.problems.append(
            Problem(
                "timezone",
                "unknown_timezone",
                f"未知时区 {spec.timezone!r}："
                "请填写 IANA 时区名，例如 Asia/Shanghai、Asia/Hong_Kong",
            )
        )
    # The engine's own reading of the stored shapes: what passes here it can run.
    for name, check, value in (
        ("trigger", specs.check_trigger, dump(spec.trigger)),
        ("exit_conditions", specs.check_exits, [dump(e) for e in spec.exit_conditions]),
        ("goal", specs.check_goal, dump(spec.goal)),
    ):
        try:
            check(value)
        except ValueError as exc:
            if not any(p.field.startswith(name) for p in report.problems):
                report.problems.append(Problem(name, "not_runnable", str(exc)))
    steps_problems, steps_warnings = check_steps(spec)
    report.problems += steps_problems
    report.warnings += steps_warnings
    report.problems += await check_media_files(spec, skip={p.field for p in report.problems})
    return report


async def check_media_files(spec: CampaignIn, *, skip: set[str]) -> list[Problem]:
    """Each image, file and mini-program cover fetched once, as the send will fetch it:
    an allowed source (``SIYU_SOP__MEDIA_HOSTS``; others are refused unfetched as
    ``media_source_refused``), WeCom's size limits (image 10 MB, file 20 MB), JPG/PNG
    for an image, an address that answers.  Fields already refused (``skip``) are not
    fetched."""
    problems: list[Problem] = []
    for i, step in enumerate(spec.steps, 1):
        refs = sop_media.refs_of(dump(step.content))
        if not refs:
            continue
        kind = step.content.kind
        where = f"steps[{i}].content." + (
            "miniprogram.pic_url" if kind == "miniprogram" else "media.url"
        )
        if where in skip:
            continue
        if (found := await sop_media.probe(refs[0])) is not None:
            problems.append(Problem(where, *found))
    return problems


def _tag_names(spec: CampaignIn) -> set[str]:
    names: set[str] = set()
    if spec.trigger is not None and spec.trigger.tag:
        names.add(spec.trigger.tag)
    for e in spec.exit_conditions:
        if e.tag:
            names.add(e.tag)
    if spec.goal is not None and spec.goal.tag:
        names.add(spec.goal.tag)
    return names


# ---------------------------------------------------------------- compliance at save


def content_texts(content: ContentIn | dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, text)`` of everything a customer reads in a step's content."""
    c = content if isinstance(content, ContentIn) else ContentIn.model_validate(content)
    out = []
    if c.text:
        out.append(("text", c.text))
    if c.link is not None:
        out += [("link.title", c.link.title), ("link.desc", c.link.desc)]
    if c.miniprogram is not None:
        out.append(("miniprogram.title", c.miniprogram.title))
    return [(f, t) for f, t in out if t]


async def analyze_contents(
    contents: Sequence[ContentIn], *, analyzer: Any
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """compliance_nlp's findings for each step's texts, and PII found in them.

    The texts are checked as an advisor's lines (the advisor sends them).  Findings keep
    the offsets into the text as written, so the builder and the approval view highlight
    them where marketing typed them.  A personal number in campaign content is refused
    outright: one customer's data must never go out to a whole audience.
    """
    from compliance_nlp.pool import AnalyzerUnavailable

    items: list[tuple[int, str, str]] = []
    for i, content in enumerate(contents, 1):
        for fld, text in content_texts(content):
            items.append((i, fld, text))
    if not items:
        return [], []
    try:
        results = await analyzer.analyze_many([(t, "advisor") for _, _, t in items])
    except AnalyzerUnavailable:
        raise ComplianceUnavailable(
            "compliance_unavailable", "合规检查暂不可用，请稍后再保存（未做合规检查的内容不能保存）"
        ) from None
    findings: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for (step, fld, _text), analysis in zip(items, results, strict=True):
        for f in analysis.violations:
            findings.append(
                {
                    "step": step,
                    "field": fld,
                    "severity": f.severity,
                    "category": f.category,
                    "start": f.start,
                    "end": f.end,
                    "evidence": f.evidence,
                    "basis": f.basis,
                    "rule_id": f.rule_id,
                    "source": f.source,
                    "score": f.score,
                }
            )
        if analysis.pii:
            kinds = sorted({p.type for p in analysis.pii})
            problems.append(
                Problem(
                    f"steps[{step}].content.{fld}",
                    "personal_data",
                    f"内容含个人号码（{'、'.join(kinds)}），群发内容不得包含任何个人信息",
                )
            )
    return findings, problems


def violations_of(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("severity") == "violation"]


def reviews_of(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("severity") == "review"]


# ---------------------------------------------------------------- reading


async def get_campaign(campaign_id: int) -> Campaign:
    found = await Campaign.get_or_none(id=campaign_id)
    if found is None:
        raise NotFound("not_found", f"没有编号为 {campaign_id} 的活动")
    return found


async def get_version(campaign: Campaign, version: int | None = None) -> CampaignVersion:
    number = version or campaign.latest_version
    found = await CampaignVersion.get_or_none(campaign_id=campaign.id, version=number)
    if found is None:
        raise NotFound("not_found", f"活动 {campaign.id} 没有第 {number} 版")
    return found


async def steps_of(version: CampaignVersion) -> list[CampaignStep]:
    return await CampaignStep.filter(version_id=version.id).order_by("position")


async def versions_of(campaign: Campaign) -> list[CampaignVersion]:
    return await CampaignVersion.filter(campaign_id=campaign.id).order_by("-version")


def spec_of(
    campaign: Campaign, version: CampaignVersion, steps: Sequence[CampaignStep]
) -> CampaignIn:
    """A stored version as the builder edits it."""
    return CampaignIn(
        name=campaign.name,
        description=campaign.description,
        segment=campaign.segment,
        trigger=TriggerIn.model_validate(version.trigger) if version.trigger else None,
        audience=version.audience,
        reentry=version.reentry,
        exit_conditions=[ExitIn.model_validate(e) for e in version.exit_conditions or []],
        goal=GoalIn.model_validate(version.goal) if version.goal else None,
        product=ProductIn.model_validate(version.product) if version.product else None,
        timezone=version.timezone or "Asia/Shanghai",
        steps=[
            StepIn(
                name=s.name,
                anchor=s.anchor,
                offset_days=s.offset_days,
                offset_minutes=s.offset_minutes,
                at_time=s.at_time,
                window_start=s.window_start,
                window_end=s.window_end,
                skip_weekends=s.skip_weekends,
                skip_holidays=s.skip_holidays,
                delivery=s.delivery,
                content=ContentIn.model_validate(s.content),
            )
            for s in steps
        ],
    )


@dataclass(frozen=True)
class CampaignRow:
    """A campaign as the list shows it: what it is and how far it got."""

    campaign: Campaign
    latest_status: VersionStatus
    enrolled: int
    active: int
    sent: int
    planned: int


async def list_campaigns(*, status: str | None = None, limit: int = 200) -> list[CampaignRow]:
    q = Campaign.all()
    if status:
        q = q.filter(status=status)
    campaigns = await q.order_by("-updated_at").limit(limit)
    if not campaigns:
        return []
    ids = [c.id for c in campaigns]
    from sop import stats

    counts = await stats.campaign_counts(ids)
    latest = {
        (v.campaign_id, v.version): v.status  # type: ignore[attr-defined]
        for v in await CampaignVersion.filter(campaign_id__in=ids)
    }
    rows = []
    for c in campaigns:
        n = counts.get(c.id, {})
        rows.append(
            CampaignRow(
                campaign=c,
                latest_status=latest.get((c.id, c.latest_version), VersionStatus.DRAFT),
                enrolled=n.get("enrolled", 0),
                active=n.get("active", 0),
                sent=n.get("sent", 0),
                planned=n.get("planned", 0),
            )
        )
    return rows


async def pending_approvals() -> list[tuple[Campaign, CampaignVersion]]:
    versions = await CampaignVersion.filter(status=VersionStatus.PENDING_APPROVAL).order_by(
        "submitted_at"
    )
    out = []
    for v in versions:
        c = await Campaign.get(id=v.campaign_id)  # type: ignore[attr-defined]
        if c.status != CampaignStatus.ARCHIVED:
            out.append((c, v))
    return out


# ---------------------------------------------------------------- use cases


async def _locked(conn: BaseDBAsyncClient, campaign_id: int) -> Campaign:
    # FOR UPDATE on PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers):
    # two operators acting on one campaign at once take turns and the second sees
    # the first one's state.
    found = await Campaign.filter(id=campaign_id).using_db(conn).select_for_update().first()
    if found is None:
        raise NotFound("not_found", f"没有编号为 {campaign_id} 的活动")
    return found


async def _version(conn: BaseDBAsyncClient, campaign: Campaign, number: int) -> CampaignVersion:
    found = (
        await CampaignVersion.filter(campaign_id=campaign.id, version=number)
        .using_db(conn)
        .select_for_update()
        .first()
    )
    if found is None:
        raise NotFound("not_found", f"活动 {campaign.id} 没有第 {number} 版")
    return found


async def _write_steps(conn: BaseDBAsyncClient, version: CampaignVersion, spec: CampaignIn) -> None:
    await CampaignStep.filter(version_id=version.id).using_db(conn).delete()
    for i, s in enumerate(spec.steps, 1):
        await CampaignStep.create(
            using_db=conn,
            version=version,
            position=i,
            name=s.name,
            anchor=s.anchor,
            offset_days=s.offset_days,
            offset_minutes=s.offset_minutes,
            at_time=_clock(s.at_time),
            window_start=_clock(s.window_start) or "08:00",
            window_end=_clock(s.window_end) or "21:00",
            skip_weekends=s.skip_weekends,
            skip_holidays=s.skip_holidays,
            delivery=s.delivery,
            content=dump(s.content),
        )


def _version_fields(spec: CampaignIn, findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "trigger": dump(spec.trigger),
        "audience": spec.audience or None,
        "reentry": spec.reentry,
        "exit_conditions": [dump(e) for e in spec.exit_conditions],
        "goal": dump(spec.goal),
        "product": dump(spec.product),
        "timezone": spec.timezone,
        "findings": findings,
    }


@dataclass(frozen=True)
class Saved:
    campaign: Campaign
    version: CampaignVersion
    report: CheckReport
    findings: list[dict[str, Any]]
    new_version: bool = False


async def _checked(spec: CampaignIn, analyzer: Any) -> tuple[CheckReport, list[dict[str, Any]]]:
    report = await check_campaign(spec)
    findings, pii = await analyze_contents([s.content for s in spec.steps], analyzer=analyzer)
    report.problems += pii
    if report.problems:
        raise CampaignInvalid(report.problems)
    return report, findings


async def do_create_campaign(
    *, spec: CampaignIn, actor: Actor, analyzer: Any, source: str = ""
) -> Saved:
    """A new campaign (draft, version 1); refused whole if anything is wrong."""
    report, findings = await _checked(spec, analyzer)
    async with in_transaction() as conn:
        campaign = await Campaign.create(
            using_db=conn,
            name=spec.name,
            description=spec.description,
            owner=actor.ref,
            owner_name=actor.name,
            segment=spec.segment,
            status=CampaignStatus.DRAFT,
            current_version=0,
            latest_version=1,
        )
        version = await CampaignVersion.create(
            using_db=conn,
            campaign=campaign,
            version=1,
            status=VersionStatus.DRAFT,
            created_by=actor.ref,
            **_version_fields(spec, findings),
        )
        await _write_steps(conn, version, spec)
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.campaign.create",
            target=f"campaign:{campaign.id}",
            source=source,
            detail={"version": 1, "steps": len(spec.steps), "findings": len(findings)},
        )
    return Saved(campaign, version, report, findings, new_version=True)


async def do_update_campaign(
    *, campaign_id: int, spec: CampaignIn, actor: Actor, analyzer: Any, source: str = ""
) -> Saved:
    """Save the builder's edit.

    A draft or rejected version is edited in place; one waiting for approval or
    approved goes back to draft (its approval no longer covers what is saved); a
    running version is never edited — a new version is written beside it.
    """
    report, findings = await _checked(spec, analyzer)
    async with in_transaction() as conn:
        campaign = await _locked(conn, campaign_id)
        if campaign.status == CampaignStatus.ARCHIVED:
            raise StateConflict("archived", "活动已归档，不能再编辑")
        latest = await _version(conn, campaign, campaign.latest_version)
        created = latest.status in (VersionStatus.ACTIVE, VersionStatus.SUPERSEDED)
        if created:
            number = campaign.latest_version + 1
            version = await CampaignVersion.create(
                using_db=conn,
                campaign=campaign,
                version=number,
                status=VersionStatus.DRAFT,
                created_by=actor.ref,
                **_version_fields(spec, findings),
            )
            campaign.latest_version = number
        else:
            version = latest
            for name, value in _version_fields(spec, findings).items():
                setattr(version, name, value)
            version.status = VersionStatus.DRAFT
            version.submitted_by = version.submitted_at = None
            version.approved_by = version.approved_at = None
            version.approval_comment = ""
            await version.save(using_db=conn)
            if campaign.status == CampaignStatus.PENDING_APPROVAL:
                campaign.status = CampaignStatus.DRAFT
        await _write_steps(conn, version, spec)
        campaign.name = spec.name
        campaign.description = spec.description
        campaign.segment = spec.segment
        await campaign.save(using_db=conn)
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.campaign.edit",
            target=f"campaign:{campaign.id}",
            source=source,
            detail={
                "version": version.version,
                "new_version": created,
                "steps": len(spec.steps),
                "findings": len(findings),
            },
        )
    return Saved(campaign, version, report, findings, new_version=created)


async def do_submit(
    *, campaign_id: int, actor: Actor, analyzer: Any, source: str = ""
) -> CampaignVersion:
    """Send the latest version to compliance; content is checked again (the lexicon may
    have changed since it was saved), and a violation refuses the submission."""
    campaign = await get_campaign(campaign_id)
    version = await get_version(campaign)
    steps = await steps_of(version)
    spec = spec_of(campaign, version, steps)
    report = await check_campaign(spec)
    findings, pii = await analyze_contents([s.content for s in spec.steps], analyzer=analyzer)
    report.problems += pii
    violations = violations_of(findings)
    for f in violations:
        report.problems.append(
            Problem(
                f"steps[{f['step']}].content.{f['field']}",
                "compliance_violation",
                f"内容违规：「{f['evidence']}」（{f['basis'] or f['category']}）",
            )
        )
    async with in_transaction() as conn:
        campaign = await _locked(conn, campaign_id)
        version = await _version(conn, campaign, campaign.latest_version)
        if campaign.status == CampaignStatus.ARCHIVED:
            raise StateConflict("archived", "活动已归档")
        if version.status not in (VersionStatus.DRAFT, VersionStatus.REJECTED):
            raise StateConflict(
                "not_draft",
                f"第 {version.version} 版{VERSION_STATUS_LABELS[version.status]}，不能提交",
            )
        # The findings of this check are what compliance will see, kept even when the
        # submission is refused, so the builder shows why.
        version.findings = findings
        if report.problems:
            await version.save(using_db=conn, update_fields=["findings", "updated_at"])
            failed = CampaignInvalid(
                report.problems,
                code="compliance_violation" if violations else "invalid_campaign",
            )
        else:
            failed = None
            version.status = VersionStatus.PENDING_APPROVAL
            version.submitted_by = actor.ref
            version.submitted_at = datetime.now(UTC)
            await version.save(using_db=conn)
            if campaign.status == CampaignStatus.DRAFT:
                campaign.status = CampaignStatus.PENDING_APPROVAL
                await campaign.save(using_db=conn)
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.campaign.submit",
            target=f"campaign:{campaign.id}",
            result="ok" if failed is None else f"refused:{failed.code}",
            source=source,
            detail={
                "version": version.version,
                "violations": len(violations),
                "reviews": len(reviews_of(findings)),
            },
        )
    if failed is not None:
        raise failed
    return version


async def _decide(
    *,
    campaign_id: int,
    version_number: int | None,
    approve: bool,
    comment: str,
    actor: Actor,
    source: str,
) -> CampaignVersion:
    comment = comment.strip()
    async with in_transaction() as conn:
        campaign = await _locked(conn, campaign_id)
        version = await _version(conn, campaign, version_number or campaign.latest_version)
        if version.status != VersionStatus.PENDING_APPROVAL:
            raise StateConflict(
                "not_pending",
                f"第 {version.version} 版{VERSION_STATUS_LABELS[version.status]}，没有待审批的内容",
            )
        if version.submitted_by == actor.ref or (approve and version.created_by == actor.ref):
            raise NotAllowed("own_submission", "不能审批自己编写或提交的版本（四眼原则）")
        if not approve and not comment:
            raise CampaignInvalid(
                [Problem("comment", "required", "驳回须填写意见，说明需要修改什么")]
            )
        if violations_of(version.findings or []) and approve:
            raise StateConflict("has_violations", "内容有违规项，不能批准")
        if approve and reviews_of(version.findings or []) and not comment:
            raise CampaignInvalid(
                [Problem("comment", "required", "内容有待人工复核的项，批准须填写审核意见")]
            )
        now = datetime.now(UTC)
        version.status = VersionStatus.APPROVED if approve else VersionStatus.REJECTED
        version.approved_by = actor.ref
        version.approved_at = now
        version.approval_comment = comment
        await version.save(using_db=conn)
        if not approve and campaign.status == CampaignStatus.PENDING_APPROVAL:
            campaign.status = CampaignStatus.DRAFT
            await campaign.save(using_db=conn)
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.campaign.approve" if approve else "sop.campaign.reject",
            target=f"campaign:{campaign.id}",
            source=source,
            detail={
                "version": version.version,
                "reviews": len(reviews_of(version.findings or [])),
                "approver": actor.name or actor.id,
            },
        )
    return version


async def do_approve(
    *, campaign_id: int, version: int | None, comment: str, actor: Actor, source: str = ""
) -> CampaignVersion:
    return await _decide(
        campaign_id=campaign_id,
        version_number=version,
        approve=True,
        comment=comment,
        actor=actor,
        source=source,
    )


async def do_reject(
    *, campaign_id: int, version: int | None, comment: str, actor: Actor, source: str = ""
) -> CampaignVersion:
    return await _decide(
        campaign_id=campaign_id,
        version_number=version,
        approve=False,
        comment=comment,
        actor=actor,
        source=source,
    )


async def do_activate(*, campaign_id: int, actor: Actor, source: str = "") -> Campaign:
    """Run the approved latest version: it becomes ``current_version``; the one it
    replaces is superseded (the engine re-plans its touches not yet due)."""
    async with in_transaction() as conn:
        campaign = await _locked(conn, campaign_id)
        if campaign.status == CampaignStatus.ARCHIVED:
            raise StateConflict("archived", "活动已归档")
        version = await _version(conn, campaign, campaign.latest_version)
        if version.status != VersionStatus.APPROVED:
            if version.status == VersionStatus.ACTIVE and campaign.status == CampaignStatus.PAUSED:
                raise StateConflict("paused", "活动已暂停；请使用「恢复」")
            raise StateConflict(
                "not_approved",
                f"第 {version.version} 版{VERSION_STATUS_LABELS[version.status]}；"
                "只有合规批准的版本才能启用",
            )
        if violations_of(version.findings or []):
            raise StateConflict("has_violations", "内容有违规项，不能启用")
        now = datetime.now(UTC)
        previous = campaign.current_version
        if previous:
            await (
                CampaignVersion.filter(campaign_id=campaign.id, version=previous)
                .using_db(conn)
                .update(status=VersionStatus.SUPERSEDED, updated_at=now)
            )
        version.status = VersionStatus.ACTIVE
        version.activated_at = now
        await version.save(using_db=conn)
        campaign.current_version = version.version
        campaign.status = CampaignStatus.ACTIVE
        campaign.activated_at = now
        campaign.paused_at = None
        await campaign.save(using_db=conn)
        if previous:
            # Touches not yet due follow the new version (sop.engine.planner).
            from sop.engine import planner

            await planner.adopt_version(conn, campaign_id=campaign.id, version_id=version.id)
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.campaign.activate",
            target=f"campaign:{campaign.id}",
            source=source,
            detail={"version": version.version, "replaces": previous or None},
        )
    return campaign


async def _move(
    *,
    campaign_id: int,
    actor: Actor,
    source: str,
    action: str,
    allowed_from: tuple[CampaignStatus, ...],
    to: CampaignStatus,
    refusal: str,
) -> Campaign:
    async with in_transaction() as conn:
        campaign = await _locked(conn, campaign_id)
        was = campaign.status
        if was not in allowed_from:
            raise StateConflict("bad_state", f"活动{STATUS_LABELS[was]}，{refusal}")
        now = datetime.now(UTC)
        campaign.status = to
        if to == CampaignStatus.PAUSED:
            campaign.paused_at = now
        elif to == CampaignStatus.ACTIVE:
            campaign.paused_at = None
        elif to == CampaignStatus.ARCHIVED:
            campaign.archived_at = now
        await campaign.save(using_db=conn)
        detail: dict[str, audit.DetailValue] = {"from": was.value}
        if to == CampaignStatus.ARCHIVED:
            # An archived campaign never runs again: what it had planned is skipped and
            # its customers leave, in this transaction, so nothing half-archived remains.
            detail["touches_skipped"] = (
                await Touch.filter(
                    campaign_id=campaign.id, state__in=(TouchState.PLANNED, TouchState.DUE)
                )
                .using_db(conn)
                .update(state=TouchState.SKIPPED, reason="archived", updated_at=now)
            )
            detail["enrolments_ended"] = (
                await Enrolment.filter(campaign_id=campaign.id, state=EnrolmentState.ACTIVE)
                .using_db(conn)
                .update(
                    state=EnrolmentState.EXITED,
                    exit_reason="archived",
                    exited_at=now,
                    updated_at=now,
                )
            )
            await (
                CampaignVersion.filter(
                    campaign_id=campaign.id,
                    status__in=(VersionStatus.PENDING_APPROVAL, VersionStatus.APPROVED),
                )
                .using_db(conn)
                .update(status=VersionStatus.DRAFT, updated_at=now)
            )
        await audit.append(
            conn=conn,
            actor=actor,
            action=action,
            target=f"campaign:{campaign.id}",
            source=source,
            detail=detail,
        )
    return campaign


async def do_pause(*, campaign_id: int, actor: Actor, source: str = "") -> Campaign:
    """Stop at once: the engine neither plans nor sends for a paused campaign."""
    return await _move(
        campaign_id=campaign_id,
        actor=actor,
        source=source,
        action="sop.campaign.pause",
        allowed_from=(CampaignStatus.ACTIVE,),
        to=CampaignStatus.PAUSED,
        refusal="只有运行中的活动可以暂停",
    )


async def do_resume(*, campaign_id: int, actor: Actor, source: str = "") -> Campaign:
    return await _move(
        campaign_id=campaign_id,
        actor=actor,
        source=source,
        action="sop.campaign.resume",
        allowed_from=(CampaignStatus.PAUSED,),
        to=CampaignStatus.ACTIVE,
        refusal="只有已暂停的活动可以恢复",
    )


async def do_archive(*, campaign_id: int, actor: Actor, source: str = "") -> Campaign:
    return await _move(
        campaign_id=campaign_id,
        actor=actor,
        source=source,
        action="sop.campaign.archive",
        allowed_from=(
            CampaignStatus.DRAFT,
            CampaignStatus.PENDING_APPROVAL,
            CampaignStatus.ACTIVE,
            CampaignStatus.PAUSED,
        ),
        to=CampaignStatus.ARCHIVED,
        refusal="已归档",
    )


async def do_opt_out(*, external_userid: str, reason: str, actor: Actor, source: str = "") -> bool:
    """An operator's opt-out for a customer: recorded once, and every journey the
    customer is on ends (the engine's rule, shared with the customer's own 退订)."""
    from sop.engine import enrol

    external_userid = external_userid.strip()
    if not external_userid or len(external_userid) > 64:
        raise CampaignInvalid([Problem("external_userid", "invalid", "客户 ID 无效")])
    async with in_transaction() as conn:
        existed = await OptOut.filter(customer=external_userid).using_db(conn).exists()
        ended = await enrol.do_opt_out(
            conn,
            customer=external_userid,
            source=OptOutSource.OPERATOR,
            by=actor.ref,
            reason=reason,
        )
        await audit.append(
            conn=conn,
            actor=actor,
            action="sop.opt_out",
            target=f"customer:{external_userid[:8]}",
            source=source,
            detail={"new": not existed, "journeys_ended": ended},
        )
    return not existed


MAX_MANUAL_LIST = 10_000


async def do_enrol_manual(
    *, campaign_id: int, customers: Sequence[str] | None, actor: Actor, source: str = ""
) -> int:
    """Enrol by hand into a running ``manual`` campaign: a list of external_userids, or
    (``customers`` None) a snapshot of the version's audience now.

    The engine enrols in batches, each in its own transaction (a snapshot may be a
    million customers), under a trigger ref naming the operator and the moment, so a
    rerun after a crash adds no one twice; the audit entry follows with the count.
    Customers without an active advisor relation are left out (nobody could deliver).
    """
    from sop.engine import enrol, planner

    campaign = await get_campaign(campaign_id)
    if campaign.status != CampaignStatus.ACTIVE:
        raise StateConflict(
            "not_active", f"活动{STATUS_LABELS[campaign.status]}，只有运行中的活动可以入组"
        )
    version = await get_version(campaign, campaign.current_version)
    if (version.trigger or {}).get("kind") != "manual":
        raise StateConflict("not_manual", "只有触发方式为「手动入组」的活动可以手动入组")
    names: list[str] = []
    if customers is not None:
        names = list(dict.fromkeys(c.strip() for c in customers if c and c.strip()))
        if not names:
            raise CampaignInvalid([Problem("customers", "required", "请填写客户 ID（每行一个）")])
        if len(names) > MAX_MANUAL_LIST:
            raise CampaignInvalid(
                [Problem("customers", "too_many", f"一次最多 {MAX_MANUAL_LIST} 位客户")]
            )
        if any(len(n) > 64 for n in names):
            raise CampaignInvalid([Problem("customers", "invalid", "客户 ID 最长 64 个字符")])
    elif not version.audience:
        raise CampaignInvalid([Problem("audience", "required", "该版本未设受众，请提供客户名单")])
    at = datetime.now(UTC)
    ref = f"manual:{actor.ref}:{at.strftime('%Y%m%dT%H%M%S')}"
    plan = await planner.load_plan(_default_conn(), version_id=version.id)
    if customers is not None:
        enrolled = await enrol.enrol_list(plan, customers=names, ref=ref, at=at)
    else:
        enrolled = await enrol.enrol_audience(plan, ref=ref, at=at)
    await audit.append_alone(
        actor=actor,
        action="sop.campaign.enrol",
        target=f"campaign:{campaign.id}",
        source=source,
        detail={
            "version": version.version,
            "kind": "list" if customers is not None else "audience_snapshot",
            "asked": len(names) if customers is not None else None,
            "enrolled": enrolled,
        },
    )
    return enrolled


def _default_conn() -> BaseDBAsyncClient:
    from tortoise import Tortoise

    return Tortoise.get_connection("default")


# ---------------------------------------------------------------- the demo's example


def demo_spec() -> CampaignIn:
    """A maturity reminder: the advisor is reminded a week before (as soon as the day's
    date trigger enrols the customer, within the send window: 08:00 on a normal day),
    the customer gets a mass-send the day before (workdays only)."""
    return CampaignIn.model_validate(
        {
            "name": "理财到期提醒",
            "description": "产品到期前 7 天提醒客户经理，到期前一天向客户群发到期安排",
            "segment": "bank",
            "trigger": {"kind": "attribute_date", "attribute": "maturity_date", "days_before": 7},
            "reentry": "after_exit",
            "exit_conditions": [
                {"kind": "replied"},
                {"kind": "opted_out"},
                {"kind": "relation_deleted"},
                {"kind": "goal"},
            ],
            "goal": {"intent": "purchase_intent"},
            "product": {"code": "WM-365", "name": "稳享理财 365 天", "risk_level": "R2"},
            "steps": [
                {
                    "name": "提醒客户经理",
                    "delivery": "reminder",
                    "content": {
                        "kind": "text",
                        "text": "{customer_name}您好，您持有的{product_name}将于{maturity_date}"
                        "到期，如需了解续作安排可随时联系我。",
                    },
                },
                {
                    "name": "到期前一天群发",
                    "offset_days": 6,
                    "at_time": "10:00",
                    "skip_weekends": True,
                    "skip_holidays": True,
                    "delivery": "mass_send",
                    "content": {
                        "kind": "link",
                        "text": "{customer_name}您好，您的产品明天到期，资金将按合同约定划回。",
                        "link": {
                            "title": "到期资金安排说明",
                            "url": "https://www.example.com/maturity",
                            "desc": "到期资金将按合同约定划回您的账户。",
                        },
                    },
                },
            ],
        }
    )


def demo_welcome_spec() -> CampaignIn:
    """A welcome journey: the welcome message on add, a reminder to the advisor next day."""
    return CampaignIn.model_validate(
        {
            "name": "新客户欢迎旅程",
            "description": "添加客户后 20 秒内发送欢迎语，次日上午提醒客户经理做首次回访",
            "segment": "all",
            "trigger": {"kind": "customer_added"},
            "reentry": "never",
            "exit_conditions": [{"kind": "opted_out"}, {"kind": "relation_deleted"}],
            "steps": [
                {
                    "name": "欢迎语",
                    "delivery": "welcome",
                    "at_time": None,
                    "content": {
                        "kind": "text",
                        "text": "{customer_name}您好，我是您的专属客户经理{advisor_name}，"
                        "有任何问题欢迎随时联系我。",
                    },
                },
                {
                    "name": "次日回访提醒",
                    "anchor": "previous",
                    "offset_days": 1,
                    "at_time": "10:00",
                    "skip_weekends": True,
                    "delivery": "reminder",
                    "content": {
                        "kind": "text",
                        "text": "{customer_name}您好，昨天添加了您，想了解一下您近期的理财需求，"
                        "方便时可以回复我。",
                    },
                },
            ],
        }
    )


async def seed_demo_campaign(*, author: Actor, approver: Actor, analyzer: Any) -> Campaign | None:
    """The demo's examples — a maturity reminder and a welcome journey — built, approved
    and activated through the use cases (so their audit trail reads as a real one);
    nothing when any campaign exists already.  Returns the maturity reminder."""
    if await Campaign.all().exists():
        return None
    first: Campaign | None = None
    for spec in (demo_spec(), demo_welcome_spec()):
        saved = await do_create_campaign(spec=spec, actor=author, analyzer=analyzer, source="demo")
        cid = saved.campaign.id
        await do_submit(campaign_id=cid, actor=author, analyzer=analyzer, source="demo")
        await do_approve(
            campaign_id=cid,
            version=1,
            comment="示例活动：内容已核对",
            actor=approver,
            source="demo",
        )
        activated = await do_activate(campaign_id=cid, actor=author, source="demo")
        first = first or activated
    return first
