"""Console pages of the tagging domain (zh-CN): parse → one flow → render a template.

They sit in the console shell's layout (``core.access.PAGE_CONTEXT``: the operator,
the sidebar, the CSRF token) and are guarded by the shell like its own pages: each
handler declares its permission here (``admin/permissions.json``).  Who may do what:

- ``customers:read`` (everyone): the tag library and a tag's customers — an advisor
  or a team lead counts and sees only the customers of their reach
  (``core.access.REACH``); names masked unless ``customers:sensitive``;
- ``tags:read`` (marketing, compliance, admin): rules, the audience builder, the
  attribute schema and the import history, read only;
- ``tags:write`` (marketing, admin): the library, rules and saved audiences;
- ``attributes:manage`` (admin): custom attribute fields; ``customers:write`` (admin):
  attribute imports from the console.

Live parts (a rule's dry run, an audience's count and sample) are htmx fragments:
the console's CSP allows no inline script, htmx swaps server-rendered HTML.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hashlib
import io
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from math import ceil
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from markupsafe import escape
from multidict import MultiDictProxy
from pydantic import ValidationError

from bot.keys import WECOM_CLIENT
from bot.outbox import mask_external_userid
from compliance_nlp.types import INTENTS, SENTIMENTS
from core.access import (
    ACTOR_NAMES,
    PAGE_CONTEXT,
    REACH,
    Principal,
    menu,
    principal_of,
    requires,
)
from core.appkit import DOMAINS, KEYRING, REDIS, TASKS
from core.audit import Actor
from tagging import attributes, audience, fields, flows, jobs, rules, service
from tagging.models import AttributeImport, CustomerTag, Origin, Tag, TagGroup, TagRule
from tagging.schemas import GroupEdit, GroupIn, TagEdit, TagIn

PAGE_SIZE = 50
PREVIEW_ROWS = 20
UPLOAD_MAX_BYTES = 20 * 1024 * 1024
NAV_GROUP = "标签管理"

SOURCE_LABELS = {"manual": "手动", "rule": "规则", "wecom": "企业微信", "import": "导入"}
TRIGGER_LABELS = {"message": "消息触发", "event": "客户事件", "schedule": "定时（人群）"}
INTENT_LABELS = {
    "product_inquiry": "产品咨询",
    "purchase_intent": "购买意向",
    "redemption_intent": "赎回意向",
    "complaint": "投诉",
    "account_service": "账户服务",
    "claim_service": "理赔服务",
    "risk_assessment": "风险测评",
    "chitchat": "闲聊",
}
SENTIMENT_LABELS = {"negative": "负面", "neutral": "中性", "positive": "正面"}
CHANGE_TYPE_LABELS = {
    "add_external_contact": "添加客户",
    "add_half_external_contact": "客户免验证添加",
    "edit_external_contact": "编辑客户",
    "del_external_contact": "客户经理删除客户",
    "del_follow_user": "客户删除客户经理",
}
SYNC_KIND_LABELS = {"reconcile": "全量对账", "pull": "拉取", "contact": "客户标签"}
SYNC_CHANGE_LABELS = {
    "group_created": "新增标签组",
    "group_linked": "关联标签组",
    "group_restored": "恢复标签组",
    "group_updated": "更新标签组",
    "group_pushed": "推回标签组",
    "group_deleted": "删除标签组",
    "group_unlinked": "解除关联标签组",
    "tag_created": "新增标签",
    "tag_linked": "关联标签",
    "tag_updated": "更新标签",
    "tag_pushed": "推送标签",
    "tag_pushed_again": "重新推送标签",
    "tag_unlinked": "解除关联标签",
    "tag_deleted": "删除标签",
    "customer_tag_added": "客户打标",
    "customer_tag_removed": "客户去标",
    "customer_tag_marked_again": "重新推送客户标签",
}
IMPORT_SOURCE_LABELS = {"api": "API", "csv": "CSV 命令行", "console": "控制台上传"}
IMPORT_STATUS_LABELS = {"running": "进行中", "done": "完成", "failed": "中断"}
DEFAULT_COLOUR = "#1f5fbf"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


# ---------------------------------------------------------------- helpers


def render(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """A full page inside the shell's layout (base.html)."""
    shell = request.app[PAGE_CONTEXT](request)
    return aiohttp_jinja2.render_template(
        template, request, {**shell, **_globals(), **context}, status=status
    )


def fragment(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """An htmx fragment: no layout, no sidebar."""
    return aiohttp_jinja2.render_template(
        template, request, {**_globals(), **context}, status=status
    )


def _globals() -> dict[str, Any]:
    return {
        "source_labels": SOURCE_LABELS,
        "trigger_labels": TRIGGER_LABELS,
        "intent_labels": INTENT_LABELS,
        "sentiment_labels": SENTIMENT_LABELS,
        "change_type_labels": CHANGE_TYPE_LABELS,
        "sync_kind_labels": SYNC_KIND_LABELS,
        "sync_change_labels": SYNC_CHANGE_LABELS,
        "type_labels": attributes.TYPE_LABELS,
        "import_source_labels": IMPORT_SOURCE_LABELS,
        "import_status_labels": IMPORT_STATUS_LABELS,
        "colour_of": colour_of,
        "actor_label": actor_label,
        "tagging_css": f"/static/tagging/tagging.css?v={_asset_version('tagging.css')}",
    }


@functools.cache
def _asset_version(filename: str) -> str:
    # The file's hash, so a new release never runs with a cached old stylesheet.
    data = resources.files("tagging").joinpath("static", filename).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def colour_of(value: str) -> str:
    # Only a validated #RRGGBB reaches the SVG fill attribute (no style attribute: CSP).
    return value if _COLOUR.match(value or "") else "#c3cad6"


def actor_label(
    ref: str,
    rule_names: Mapping[int, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """Who or what did something, as an operator reads it.  ``names`` (from
    ``actor_names``) gives operators', keys' and advisors' names by ref; without one
    the ref's id is shown."""
    kind, _, ident = ref.partition(":")
    shown = (names or {}).get(ref)
    if kind == "operator":
        return shown or f"用户 #{ident}"
    if kind == "api_key":
        return f"API 密钥「{shown}」" if shown else f"API 密钥 {ident}"
    if kind == "rule":
        name = shown or ((rule_names or {}).get(int(ident)) if ident.isdigit() else None)
        return f"规则「{name}」" if name else f"规则 #{ident}"
    if kind == "wecom":
        if not ident:
            return "企业微信"
        return f"企业微信 · {shown}（{ident}）" if shown else f"企业微信 · {ident}"
    if kind == "import":
        return "导入"
    if ref == "expiry":
        return "到期自动移除"
    return ref


async def actor_names(request: web.Request, refs: Iterable[str]) -> dict[str, str]:
    return await service.actor_names(refs=refs, lookup=request.app.get(ACTOR_NAMES))


def principal(request: web.Request) -> Principal:
    p = principal_of(request)
    assert p is not None  # the guard has authenticated every page before it runs
    return p


def actor_of(request: web.Request) -> Actor:
    p = principal(request)
    return Actor(p.kind, p.id, p.name)


def may(request: web.Request, permission: str) -> bool:
    return permission in principal(request).permissions


async def reach_of(request: web.Request) -> frozenset[str] | None:
    reach = request.app.get(REACH)
    return None if reach is None else await reach(request)


def _int(raw: str, *, missing: int | None = None) -> int | None:
    raw = raw.strip()
    if not raw:
        return missing
    if not re.fullmatch(r"-?\d{1,12}", raw):
        return None
    return int(raw)


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


def _page(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1


def _form(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _url(
    request: web.Request, name: str, query: Mapping[str, str] | None = None, **parts: str
) -> str:
    url = request.app.router[name].url_for(**parts)
    return str(url.with_query(dict(query)) if query else url)


def customer_link(request: web.Request, customer_id: int) -> str | None:
    """The customer page, where the console has one (admin's ``customer_detail``)."""
    try:
        route = request.app.router["customer_detail"]
    except KeyError:
        return None
    return str(route.url_for(customer_id=str(customer_id)))


_NAME_ERRORS = (
    ("must not be empty", "名称不能为空"),
    ("at most", "名称至多 30 个字符（企业微信的限制）"),
    ("control characters", "名称不能含控制字符"),
)


def _spec_errors(exc: ValidationError) -> dict[str, str]:
    """pydantic's complaint about a group or tag form, in the console's words."""
    out: dict[str, str] = {}
    for err in exc.errors():
        where = str(err["loc"][0]) if err["loc"] else "form"
        msg = str(err["msg"])
        if where == "name":
            out[where] = next((zh for en, zh in _NAME_ERRORS if en in msg), "名称无效")
        elif where == "colour":
            out[where] = "颜色须为 #RRGGBB"
        elif where == "order":
            out[where] = "排序须为 0 以上的整数"
        elif where == "description":
            out[where] = "描述至多 255 个字符"
        else:
            out.setdefault("form", msg)
    return out


def _flow_error(exc: flows.TaggingError) -> str:
    return {
        "duplicate_name": "已有同名的标签组或标签",
        "wecom_group": "来自企业微信的标签组始终同步，不能取消",
        "nothing_to_change": "没有修改",
        "not_found": "对象不存在或已删除",
    }.get(exc.code, exc.message)


# ---------------------------------------------------------------- expression errors


_EXPR_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^unknown tag '(.*)'$"), "未知标签「{0}」"),
    (re.compile(r"^unknown attribute '(.*)'$"), "未知属性「{0}」"),
    (re.compile(r"^attribute '(.*)' is retired .*$"), "属性「{0}」已停用"),
    (re.compile(r"^unknown holding field '(.*)' .*$"), "未知持仓字段「{0}」"),
    (re.compile(r"^unexpected end.*$"), "表达式不完整：括号未闭合，或缺少条件"),
    (re.compile(r"^unexpected character '(.*)'$"), "无法识别的字符「{0}」"),
    (re.compile(r"^unexpected '(.*)'$"), "此处不应出现「{0}」"),
    (re.compile(r"^empty expression$"), "表达式为空"),
    (re.compile(r"^empty tag name$"), "标签名为空"),
    (re.compile(r"^(\w+) is one of (.*)$"), "{0} 的取值须为：{1}"),
    (re.compile(r"^(\w+) compares with a number$"), "{0} 须与数字比较"),
    (re.compile(r"^(\w+) compares with a date YYYY-MM-DD$"), "{0} 须与日期（YYYY-MM-DD）比较"),
    (re.compile(r"^WITHIN needs a date.*$"), "WITHIN 只能用于日期属性"),
    (
        re.compile(
            r"^(\w+) is sealed \(sensitive\) and cannot be compared; compare attr\.(\w+).*$"
        ),
        "{0} 为加密保存的敏感属性，不能直接比较；请改用 attr.{1}",
    ),
    (
        re.compile(r"^(\w+) is sealed \(sensitive\) and cannot be compared.*$"),
        "{0} 为加密保存的敏感属性，不能直接比较",
    ),
    (re.compile(r"^(\w+) is a list: .*$"), "{0} 是列表，只能用 =（包含）或 !="),
    (re.compile(r"^more than (\d+) terms$"), "条件超过 {0} 个"),
    (re.compile(r"^expression longer than (\d+) characters$"), "表达式超过 {0} 个字符"),
)


def zh_expression_error(message: str) -> str:
    for pattern, template in _EXPR_ERRORS:
        m = pattern.match(message)
        if m:
            return template.format(*m.groups())
    return message


@dataclass(frozen=True)
class ExprError:
    """An expression error as the console shows it: the text around a caret."""

    message: str
    position: int
    before: str
    at: str
    after: str


def expr_error(expr: str, exc: audience.ExpressionError) -> ExprError:
    pos = max(0, min(exc.position, len(expr)))
    return ExprError(
        message=zh_expression_error(exc.message),
        position=pos,
        before=expr[:pos],
        at=expr[pos : pos + 1] or " ",
        after=expr[pos + 1 :],
    )


# ---------------------------------------------------------------- the library


@requires("customers:read")
@menu("标签库", group=NAV_GROUP, order=20)
async def library(request: web.Request) -> web.StreamResponse:
    return await _library(request)


async def _library(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    form_key: str = "",
    status: int = 200,
) -> web.Response:
    reach = await reach_of(request)
    groups = await service.live_groups()
    tags = await service.live_tags()
    by_group: dict[int, list[Tag]] = {}
    for t in tags:
        by_group.setdefault(t.group_id, []).append(t)  # type: ignore[attr-defined]
    counts = await service.tag_counts(reach=reach)
    runs = {kind: await service.last_run(kind=kind) for kind in ("reconcile", "pull", "contact")}
    report = runs["reconcile"]
    sync_now = await jobs.sync_now_running(request.app[REDIS])
    names = _names_for_report(groups, tags)
    notice = request.query.get("notice", "")[:200]
    return render(
        "tagging_library.html",
        request,
        {
            "groups": groups,
            "tags_of": by_group,
            "counts": counts,
            "tag_total": len(tags),
            "runs": runs,
            "report": report,
            "report_rows": [_report_row(c, names) for c in (report.changes if report else [])][
                :200
            ],
            "recent_runs": await service.recent_runs(limit=8),
            "sync_now": sync_now,
            "can_sync": request.app.get(WECOM_CLIENT) is not None,
            "pending_pushes": await service.pending_pushes(),
            "waiting_requests": await service.sync_requests_waiting(),
            "can_write": may(request, "tags:write"),
            "scoped": reach is not None,
            "errors": errors or {},
            "form": form or {},
            "form_key": form_key,
            "notice": notice,
            "default_colour": DEFAULT_COLOUR,
        },
        status=status,
    )


@requires("tags:write")
async def sync_now(request: web.Request) -> web.StreamResponse:
    """Start the full pull and reconcile in the background; the page shows it running."""
    client = request.app.get(WECOM_CLIENT)
    if client is None:
        return await _library(
            request,
            errors={"sync": "未配置企业微信应用（SIYU_WECOM__APP_SECRET），无法同步"},
            form_key="sync",
            status=409,
        )
    started = await jobs.start_sync_now(
        redis=request.app[REDIS], client=client, actor=actor_of(request), tasks=request.app[TASKS]
    )
    if not started:
        return await _library(
            request,
            errors={"sync": "已有一次同步正在进行，请等它结束"},
            form_key="sync",
            status=409,
        )
    raise _see_other(
        _url(request, "tagging_library", {"notice": "已开始同步：完成后这里显示对账报告"})
    )


def _names_for_report(groups: Iterable[TagGroup], tags: Iterable[Tag]) -> dict[str, str]:
    names = {f"group:{g.id}": g.name for g in groups}
    names.update({f"tag:{t.id}": t.name for t in tags})
    return names


def _report_row(change: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    kind = str(change.get("change", ""))
    what = ""
    if "group_id" in change:
        what = names.get(f"group:{change['group_id']}", f"标签组 #{change['group_id']}")
    elif "tag_id" in change:
        what = names.get(f"tag:{change['tag_id']}", f"标签 #{change['tag_id']}")
    extra = []
    if change.get("fields"):
        extra.append("字段：" + "、".join(str(f) for f in change["fields"]))
    if change.get("customers"):
        extra.append(f"涉及客户 {change['customers']} 位")
    if change.get("advisor"):
        extra.append(f"客户经理 {change['advisor']}")
    return {"label": SYNC_CHANGE_LABELS.get(kind, kind), "what": what, "extra": "；".join(extra)}


def _group_form(form: MultiDictProxy[Any]) -> dict[str, str]:
    return {
        k: _form(form, k).strip()
        for k in ("name", "colour", "order", "description", "sync_to_wecom", "group_id")
    }


@requires("tags:write")
async def create_group(request: web.Request) -> web.StreamResponse:
    values = _group_form(await request.post())
    order = _int(values["order"], missing=0)
    if order is None:
        return await _library(
            request, errors={"order": "排序须为整数"}, form=values, form_key="group", status=422
        )
    try:
        spec = GroupIn(
            name=values["name"],
            colour=values["colour"],
            order=order,
            description=values["description"],
            sync_to_wecom=values["sync_to_wecom"] == "1",
        )
        group = await flows.do_create_group(spec=spec, actor=actor_of(request))
    except ValidationError as exc:
        return await _library(
            request, errors=_spec_errors(exc), form=values, form_key="group", status=422
        )
    except flows.TaggingError as exc:
        return await _library(
            request, errors={"name": _flow_error(exc)}, form=values, form_key="group", status=409
        )
    raise _see_other(_url(request, "tagging_library", {"notice": f"已新建标签组「{group.name}」"}))


@requires("tags:write")
async def edit_group(request: web.Request) -> web.StreamResponse:
    group_id = _id(request, "group_id")
    group = await service.get_group(conn=_conn(), group_id=group_id)
    if group is None:
        raise web.HTTPNotFound()
    values = _group_form(await request.post())
    key = f"group:{group_id}"
    order = _int(values["order"], missing=0)
    if order is None:
        return await _library(
            request, errors={"order": "排序须为整数"}, form=values, form_key=key, status=422
        )
    wanted: dict[str, Any] = {
        "name": values["name"],
        "colour": values["colour"],
        "order": order,
        "description": values["description"],
        "sync_to_wecom": values["sync_to_wecom"] == "1" or group.origin == Origin.WECOM,
    }
    changes = {k: v for k, v in wanted.items() if getattr(group, k) != v}
    if not changes:
        raise _see_other(_url(request, "tagging_library", {"notice": "没有修改"}))
    try:
        edit = GroupEdit(**changes)
        await flows.do_edit_group(group_id=group_id, edit=edit, actor=actor_of(request))
    except ValidationError as exc:
        return await _library(
            request, errors=_spec_errors(exc), form=values, form_key=key, status=422
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except flows.TaggingError as exc:
        return await _library(
            request, errors={"name": _flow_error(exc)}, form=values, form_key=key, status=409
        )
    raise _see_other(
        _url(request, "tagging_library", {"notice": f"已保存标签组「{values['name']}」"})
    )


@requires("tags:write")
async def delete_group(request: web.Request) -> web.StreamResponse:
    group_id = _id(request, "group_id")
    try:
        removed = await flows.do_delete_group(group_id=group_id, actor=actor_of(request))
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    notice = f"已删除标签组，{removed} 位客户的相关标签已移除（有记录）"
    raise _see_other(_url(request, "tagging_library", {"notice": notice}))


@requires("tags:write")
async def create_tag(request: web.Request) -> web.StreamResponse:
    values = _group_form(await request.post())
    group_id = _int(values["group_id"])
    key = f"tag:{values['group_id']}"
    order = _int(values["order"], missing=0)
    if group_id is None:
        raise web.HTTPNotFound()
    if order is None:
        return await _library(
            request, errors={"order": "排序须为整数"}, form=values, form_key=key, status=422
        )
    try:
        spec = TagIn(
            group_id=group_id,
            name=values["name"],
            colour=values["colour"],
            order=order,
            description=values["description"],
        )
        tag = await flows.do_create_tag(spec=spec, actor=actor_of(request))
    except ValidationError as exc:
        return await _library(
            request, errors=_spec_errors(exc), form=values, form_key=key, status=422
        )
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except flows.TaggingError as exc:
        return await _library(
            request, errors={"name": _flow_error(exc)}, form=values, form_key=key, status=409
        )
    notice = f"已新建标签「{tag.name}」" + ("，正在同步到企业微信" if tag.push_pending else "")
    raise _see_other(_url(request, "tagging_library", {"notice": notice}))


def _conn() -> Any:
    from tortoise import Tortoise

    return Tortoise.get_connection("default")


# ---------------------------------------------------------------- a tag and its customers


@requires("customers:read")
async def tag_page(request: web.Request) -> web.StreamResponse:
    return await _tag_page(request, _id(request, "tag_id"))


async def _tag_page(
    request: web.Request,
    tag_id: int,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    tag = await service.get_tag(tag_id=tag_id)
    if tag is None:
        raise web.HTTPNotFound()
    reach = await reach_of(request)
    source = request.query.get("source", "")
    source = source if source in SOURCE_LABELS else ""
    page = _page(request)
    rows, total = await service.tag_customers(
        tag_id=tag.id, reach=reach, source=source, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    rule_ids = {
        int(r.reason.get("rule_id")) for r in rows if str(r.reason.get("rule_id", "")).isdigit()
    }
    rule_names = {
        int(i): str(n)
        for i, n in await TagRule.filter(id__in=sorted(rule_ids)).values_list("id", "name")
    }
    full = may(request, "customers:sensitive")
    names = await actor_names(request, (r.applied_by for r in rows))
    pages = max(1, ceil(total / PAGE_SIZE))
    return render(
        "tagging_tag.html",
        request,
        {
            "tag": tag,
            "group": tag.group,
            "rows": [
                _customer_row(request, r, full=full, rule_names=rule_names, names=names)
                for r in rows
            ],
            "total": total,
            "page": page,
            "pages": pages,
            "source": source,
            "query": lambda **o: urlencode({k: v for k, v in {"source": source, **o}.items() if v}),
            "scoped": reach is not None,
            "masked": not full,
            "can_write": may(request, "tags:write"),
            "errors": errors or {},
            "form": form or {},
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


def _customer_row(
    request: web.Request,
    ct: CustomerTag,
    *,
    full: bool,
    rule_names: Mapping[int, str],
    names: Mapping[str, str],
) -> dict[str, Any]:
    customer = ct.customer
    return {
        "name": customer.name if full else audience.mask_name(customer.name or ""),
        "external_userid": mask_external_userid(customer.external_userid),
        "link": customer_link(request, customer.id),
        "source": ct.source.value,
        "applied_by": actor_label(ct.applied_by, rule_names, names),
        "applied_at": ct.applied_at,
        "expires_at": ct.expires_at,
        "reason": reason_text(ct.reason, rule_names),
        "advisor": ct.advisor_userid or "",
    }


def reason_text(reason: Mapping[str, Any], rule_names: Mapping[int, str]) -> str:
    """A reason as a sentence: the rule, its evidence (message ids), a note."""
    parts: list[str] = []
    rule_id = reason.get("rule_id")
    if isinstance(rule_id, int):
        name = rule_names.get(rule_id)
        parts.append(f"规则「{name}」" if name else f"规则 #{rule_id}")
    ids = reason.get("message_ids")
    if isinstance(ids, list) and ids:
        shown = "、".join(f"#{i}" for i in ids[-6:])
        parts.append(f"依据消息 {shown}" + (f" 等 {len(ids)} 条" if len(ids) > 6 else ""))
    if reason.get("change_type"):
        ct = str(reason["change_type"])
        parts.append(f"事件：{CHANGE_TYPE_LABELS.get(ct, ct)}")
    if reason.get("audience"):
        parts.append(f"人群：{reason['audience']}")
    if reason.get("note"):
        parts.append(str(reason["note"]))
    if reason.get("relation_ended"):
        parts.append("客户关系已结束")
    if reason.get("tag_deleted"):
        parts.append("标签已删除")
    if reason.get("expired"):
        parts.append("有效期已到")
    return "；".join(parts)


@requires("tags:write")
async def edit_tag(request: web.Request) -> web.StreamResponse:
    tag_id = _id(request, "tag_id")
    tag = await service.get_tag(tag_id=tag_id)
    if tag is None:
        raise web.HTTPNotFound()
    form = await request.post()
    values = {k: _form(form, k).strip() for k in ("name", "colour", "order", "description")}
    order = _int(values["order"], missing=0)
    if order is None:
        return await _tag_page(
            request, tag_id, errors={"order": "排序须为整数"}, form=values, status=422
        )
    wanted: dict[str, Any] = {
        "name": values["name"],
        "colour": values["colour"],
        "order": order,
        "description": values["description"],
    }
    changes = {k: v for k, v in wanted.items() if getattr(tag, k) != v}
    target = _url(request, "tagging_tag", tag_id=str(tag_id))
    if not changes:
        raise _see_other(f"{target}?notice=没有修改")
    try:
        await flows.do_edit_tag(tag_id=tag_id, edit=TagEdit(**changes), actor=actor_of(request))
    except ValidationError as exc:
        return await _tag_page(request, tag_id, errors=_spec_errors(exc), form=values, status=422)
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except flows.TaggingError as exc:
        return await _tag_page(
            request, tag_id, errors={"name": _flow_error(exc)}, form=values, status=409
        )
    raise _see_other(f"{target}?{urlencode({'notice': '已保存'})}")


@requires("tags:write")
async def delete_tag(request: web.Request) -> web.StreamResponse:
    tag_id = _id(request, "tag_id")
    try:
        removed = await flows.do_delete_tag(tag_id=tag_id, actor=actor_of(request))
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    notice = f"已删除标签，{removed} 位客户的此标签已移除（有记录）"
    raise _see_other(_url(request, "tagging_library", {"notice": notice}))


# ---------------------------------------------------------------- rules


def _when_summary(rule: TagRule) -> str:
    when = rule.spec.get("when", {}) if isinstance(rule.spec, dict) else {}
    if rule.trigger == "message":
        parts = []
        if when.get("intent"):
            parts.append(f"意图 {INTENT_LABELS.get(when['intent'], when['intent'])}")
        if when.get("sentiment"):
            parts.append(f"情绪 {SENTIMENT_LABELS.get(when['sentiment'], when['sentiment'])}")
        if when.get("keywords"):
            parts.append("关键词 " + "、".join(when["keywords"]))
        parts.append(f"{when.get('within_days', 14)} 天内 ≥ {when.get('min_count', 1)} 条")
        return "；".join(parts)
    if rule.trigger == "event":
        ct = str(when.get("change_type", ""))
        text = CHANGE_TYPE_LABELS.get(ct, ct)
        return text + (f"（渠道 {when['state']}）" if when.get("state") else "")
    return str(when.get("audience", ""))


@requires("tags:read")
@menu("打标规则", group=NAV_GROUP, order=21)
async def rule_list(request: web.Request) -> web.StreamResponse:
    found = await TagRule.all().order_by("id")
    tag_ids = {
        int(t)
        for r in found
        for t in (*r.spec.get("then", {}).get("add", []), *r.spec.get("then", {}).get("remove", []))
    }
    tags = await service.tags_by_ids(ids=sorted(tag_ids))
    return render(
        "tagging_rules.html",
        request,
        {
            "rules": [
                {
                    "rule": r,
                    "when": _when_summary(r),
                    "add": [tags[t] for t in r.spec.get("then", {}).get("add", []) if t in tags],
                    "remove": [
                        tags[t] for t in r.spec.get("then", {}).get("remove", []) if t in tags
                    ],
                    "expires": r.spec.get("then", {}).get("expires_after_days"),
                }
                for r in found
            ],
            "can_write": may(request, "tags:write"),
            "notice": request.query.get("notice", "")[:200],
        },
    )


_RULE_FIELDS = (
    "name",
    "trigger",
    "intent",
    "sentiment",
    "keywords",
    "sender_role",
    "min_count",
    "within_days",
    "change_type",
    "state",
    "audience",
    "expires_after_days",
    "enabled",
)


def _rule_values(rule: TagRule | None) -> dict[str, Any]:
    if rule is None:
        return {
            "name": "",
            "trigger": "message",
            "sender_role": "customer",
            "min_count": "1",
            "within_days": "14",
            "add": [],
            "remove": [],
        }
    when = rule.spec.get("when", {})
    then = rule.spec.get("then", {})
    return {
        "name": rule.name,
        "trigger": rule.trigger,
        "intent": when.get("intent") or "",
        "sentiment": when.get("sentiment") or "",
        "keywords": "，".join(when.get("keywords", [])),
        "sender_role": when.get("sender_role", "customer"),
        "min_count": str(when.get("min_count", 1)),
        "within_days": str(when.get("within_days", 14)),
        "change_type": when.get("change_type", ""),
        "state": when.get("state") or "",
        "audience": when.get("audience", ""),
        "expires_after_days": str(then.get("expires_after_days") or ""),
        "enabled": "1" if rule.enabled else "",
        "add": [str(t) for t in then.get("add", [])],
        "remove": [str(t) for t in then.get("remove", [])],
    }


def _form_values(form: MultiDictProxy[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {k: _form(form, k).strip() for k in _RULE_FIELDS}
    values["add"] = [v for v in form.getall("add", []) if isinstance(v, str) and v.isdigit()]
    values["remove"] = [v for v in form.getall("remove", []) if isinstance(v, str) and v.isdigit()]
    return values


class RuleFormError(ValueError):
    def __init__(self, errors: dict[str, str], position: ExprError | None = None) -> None:
        super().__init__("rule form")
        self.errors = errors
        self.expr = position


def rule_spec(values: Mapping[str, Any]) -> rules.RuleIn:
    """The rule a form describes, or RuleFormError with a message per field."""
    errors: dict[str, str] = {}
    name = str(values.get("name", ""))
    if not name:
        errors["name"] = "请填写规则名称"
    elif len(name) > 64:
        errors["name"] = "名称至多 64 个字符"
    trigger = str(values.get("trigger", ""))
    if trigger not in TRIGGER_LABELS:
        errors["trigger"] = "请选择触发方式"
    when: dict[str, Any] = {}
    if trigger == "message":
        for key in ("intent", "sentiment"):
            if values.get(key):
                when[key] = values[key]
        words = [w for w in re.split(r"[,，、\s]+", str(values.get("keywords", ""))) if w]
        if words:
            when["keywords"] = words
        when["sender_role"] = values.get("sender_role") or "customer"
        for key, label in (("min_count", "条数"), ("within_days", "天数")):
            number = _int(str(values.get(key, "")))
            if number is None:
                errors[key] = f"{label}须为整数"
            else:
                when[key] = number
    elif trigger == "event":
        when["change_type"] = values.get("change_type", "")
        if values.get("state"):
            when["state"] = values["state"]
    elif trigger == "schedule":
        when["audience"] = values.get("audience", "")
        if not when["audience"]:
            errors["audience"] = "请填写人群表达式"
    expires = _int(str(values.get("expires_after_days", "")))
    if values.get("expires_after_days") and expires is None:
        errors["expires_after_days"] = "有效天数须为整数"
    if not values.get("add") and not values.get("remove"):
        errors["add"] = "至少选择一个要打上或移除的标签"
    if set(values.get("add", [])) & set(values.get("remove", [])):
        errors["remove"] = "同一标签不能既打上又移除"
    if errors:
        raise RuleFormError(errors)
    try:
        return rules.RuleIn.model_validate(
            {
                "name": name,
                "trigger": trigger,
                "when": when,
                "then": {
                    "add": [int(t) for t in values.get("add", [])],
                    "remove": [int(t) for t in values.get("remove", [])],
                    "expires_after_days": expires,
                },
                "enabled": values.get("enabled") == "1",
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        field = "expires_after_days" if "expires" in where else "form"
        raise RuleFormError({field: _zh_rule_message(f"{where}: {first['msg']}")}) from None


_RULE_MESSAGES = (
    ("needs an intent", "消息规则须至少设定意图、情绪或关键词之一"),
    ("intent must be one of", "请选择有效的意图"),
    ("sentiment must be one of", "请选择有效的情绪"),
    ("keywords must be", "每个关键词 1–30 个字符"),
    ("does not exist", "所选标签不存在（已删除？）"),
    ("change_type", "请选择客户事件"),
    ("min_count", "条数须在 1–100 之间"),
    ("within_days", "天数须在 1–365 之间"),
    ("expires_after_days", "有效天数须在 1–3650 之间"),
    ("at most 20", "至多 20 个标签"),
)


def _zh_rule_message(message: str) -> str:
    return next((zh for en, zh in _RULE_MESSAGES if en in message), message)


async def check_rule_form(values: Mapping[str, Any]) -> rules.RuleIn:
    """The form's rule, validated like the API's (its tags exist, its audience compiles)."""
    spec = rule_spec(values)
    try:
        await rules.check_rule(spec)
    except rules.RuleError as exc:
        if exc.position is not None:
            expr = str(values.get("audience", ""))
            err = expr_error(
                expr, audience.ExpressionError(exc.message.split(": ", 1)[-1], exc.position)
            )
            raise RuleFormError({"audience": err.message}, err) from None
        field = "when" if exc.message.startswith("when") else "add"
        raise RuleFormError({field: _zh_rule_message(exc.message)}) from None
    return spec


async def _rule_editor(
    request: web.Request,
    *,
    rule: TagRule | None,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    expr: ExprError | None = None,
    status: int = 200,
) -> web.Response:
    groups = await service.live_groups()
    tags = await service.live_tags()
    return render(
        "tagging_rule.html",
        request,
        {
            "rule": rule,
            "names": await actor_names(request, [rule.created_by] if rule else []),
            "v": values,
            "errors": errors or {},
            "expr": expr,
            "groups": groups,
            "tags": tags,
            "intents": [(i, INTENT_LABELS.get(i, i)) for i in INTENTS],
            "sentiments": [(s, SENTIMENT_LABELS.get(s, s)) for s in SENTIMENTS],
            "can_write": may(request, "tags:write"),
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


@requires("tags:read")
async def rule_new(request: web.Request) -> web.StreamResponse:
    return await _rule_editor(request, rule=None, values=_rule_values(None))


@requires("tags:read")
async def rule_page(request: web.Request) -> web.StreamResponse:
    rule = await TagRule.get_or_none(id=_id(request, "rule_id"))
    if rule is None:
        raise web.HTTPNotFound()
    return await _rule_editor(request, rule=rule, values=_rule_values(rule))


@requires("tags:write")
async def rule_save(request: web.Request) -> web.StreamResponse:
    values = _form_values(await request.post())
    existing = await TagRule.get_or_none(name=values["name"]) if values["name"] else None
    try:
        spec = await check_rule_form(values)
        rule, result = await rules.do_save_rule(spec=spec, actor=actor_of(request))
    except RuleFormError as exc:
        return await _rule_editor(
            request, rule=existing, values=values, errors=exc.errors, expr=exc.expr, status=422
        )
    except rules.RuleError as exc:
        return await _rule_editor(
            request,
            rule=existing,
            values=values,
            errors={"form": _zh_rule_message(exc.message)},
            status=422,
        )
    state = "已启用" if rule.enabled else "未启用"
    notice = f"已保存规则「{rule.name}」（{state}）：试运行命中 {result.count} 位客户"
    raise _see_other(_url(request, "tagging_rule", {"notice": notice}, rule_id=str(rule.id)))


@requires("tags:read")
async def rule_dry_run(request: web.Request) -> web.StreamResponse:
    """htmx: the form's rule run dry — how many customers, a masked sample, a warning."""
    values = _form_values(await request.post())
    try:
        spec = await check_rule_form(values)
        result = await rules.dry_run(spec)
    except RuleFormError as exc:
        return fragment(
            "tagging_dry_run.html", request, {"errors": exc.errors, "expr": exc.expr, "d": None}
        )
    except rules.RuleError as exc:
        return fragment(
            "tagging_dry_run.html",
            request,
            {"errors": {"form": _zh_rule_message(exc.message)}, "expr": None, "d": None},
        )
    return fragment("tagging_dry_run.html", request, {"errors": {}, "expr": None, "d": result})


@requires("tags:write")
async def rule_toggle(request: web.Request) -> web.StreamResponse:
    rule_id = _id(request, "rule_id")
    form = await request.post()
    enabled = _form(form, "enabled") == "1"
    try:
        rule = await rules.do_set_enabled(rule_id=rule_id, enabled=enabled, actor=actor_of(request))
    except flows.NotFound:
        raise web.HTTPNotFound() from None
    except rules.RuleError as exc:
        raise _see_other(
            _url(request, "tagging_rules", {"notice": "未能启用：" + _zh_rule_message(exc.message)})
        ) from None
    notice = f"规则「{rule.name}」已{'启用' if rule.enabled else '停用'}"
    raise _see_other(_url(request, "tagging_rules", {"notice": notice}))


# ---------------------------------------------------------------- audiences


@requires("tags:read")
@menu("人群圈选", group=NAV_GROUP, order=22)
async def audience_page(request: web.Request) -> web.StreamResponse:
    return await _audience_page(request)


async def _audience_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    name: str = "",
    expr: str | None = None,
    status: int = 200,
) -> web.Response:
    schema = await attributes.load_schema()
    saved = await service.audiences()
    return render(
        "tagging_audience.html",
        request,
        {
            "expr": request.query.get("expr", "")[: audience.MAX_LENGTH] if expr is None else expr,
            "name": name,
            "saved": saved,
            "names": await actor_names(request, (a.created_by for a in saved)),
            "groups": await service.live_groups(),
            "tags": await service.live_tags(),
            "schema": schema,
            "can_write": may(request, "tags:write"),
            "errors": errors or {},
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


@requires("tags:read")
async def audience_preview(request: web.Request) -> web.StreamResponse:
    """htmx: the expression's count and a masked sample, or the error at its position."""
    expr = request.query.get("expr", "")
    if not expr.strip():
        return fragment("tagging_audience_result.html", request, {"empty": True})
    try:
        node = await flows.check_audience(expr=expr)
        n = await audience.count(node)
        sample = await audience.preview(node, limit=PREVIEW_ROWS)
    except audience.ExpressionError as exc:
        return fragment(
            "tagging_audience_result.html",
            request,
            {"empty": False, "error": expr_error(expr, exc)},
        )
    total = await service_customer_total()
    return fragment(
        "tagging_audience_result.html",
        request,
        {"empty": False, "error": None, "count": n, "total": total, "sample": sample},
    )


async def service_customer_total() -> int:
    from bot.models import Customer

    return await Customer.all().count()


@requires("tags:write")
async def audience_save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = " ".join(_form(form, "name").split())
    expr = _form(form, "expr").strip()
    errors: dict[str, str] = {}
    if not name or len(name) > 64:
        errors["name"] = "请填写人群名称（至多 64 个字符）"
    if not expr:
        errors["expr"] = "请填写人群表达式"
    if not errors:
        try:
            await flows.do_save_audience(name=name, expr=expr, actor=actor_of(request))
        except audience.ExpressionError as exc:
            err = expr_error(expr, exc)
            errors["expr"] = f"{err.message}（第 {err.position + 1} 个字符）"
    if errors:
        return await _audience_page(request, errors=errors, name=name, expr=expr, status=422)
    raise _see_other(
        _url(request, "tagging_audiences", {"notice": f"已保存人群「{name}」", "expr": expr})
    )


# ---------------------------------------------------------------- attribute schema


@requires("tags:read")
@menu("客户属性", group=NAV_GROUP, order=23)
async def attributes_page(request: web.Request) -> web.StreamResponse:
    return await _attributes_page(request)


async def _attributes_page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    schema = await attributes.load_schema()
    return render(
        "tagging_attributes.html",
        request,
        {
            "schema": schema,
            "can_manage": may(request, "attributes:manage"),
            "errors": errors or {},
            "form": form or {},
            "types": attributes.ATTR_TYPES,
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


@requires("attributes:manage")
async def attribute_add(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {
        k: _form(form, k).strip()
        for k in (
            "name",
            "label",
            "type",
            "minimum",
            "maximum",
            "values",
            "max_length",
            "bands",
            "required",
            "masked_by_role",
            "sensitive",
        )
    }
    max_length = _int(values["max_length"], missing=64)
    if max_length is None:
        return await _attributes_page(
            request, errors={"max_length": "须为整数"}, form=values, status=422
        )
    split = re.compile(r"[,，、\n]+")
    try:
        row = await attributes.do_add_field(
            spec=attributes.FieldIn(
                name=values["name"],
                type=values["type"],
                label=values["label"],
                required=values["required"] == "1",
                minimum=values["minimum"],
                maximum=values["maximum"],
                enum_values=tuple(v for v in split.split(values["values"]) if v.strip()),
                max_length=max_length,
                masked_by_role=values["masked_by_role"] == "1",
                sensitive=values["sensitive"] == "1",
                bands=tuple(v for v in split.split(values["bands"]) if v.strip()),
            ),
            actor=actor_of(request),
        )
    except attributes.FieldError as exc:
        return await _attributes_page(
            request, errors={exc.field: exc.message}, form=values, status=422
        )
    raise _see_other(_url(request, "tagging_attributes", {"notice": f"已新增字段 {row.name}"}))


async def _field_page(
    request: web.Request,
    name: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    uses: Sequence[str] = (),
    status: int = 200,
) -> web.Response:
    schema = await attributes.load_schema()
    spec = schema.get(name)
    if spec is None or spec.builtin or spec.derived_from is not None:
        raise web.HTTPNotFound(text="没有这个自定义字段")
    row = await service.attribute_field(name=name)
    return render(
        "tagging_attribute.html",
        request,
        {
            "name": name,
            "spec": spec,
            "row": row,
            "names": await actor_names(request, [row.retired_by] if row else []),
            "can_manage": may(request, "attributes:manage"),
            "errors": errors or {},
            "form": form or {},
            "uses": uses,
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


@requires("tags:read")
async def attribute_page(request: web.Request) -> web.StreamResponse:
    """A custom field: its checks, the edit form, retire or restore."""
    return await _field_page(request, request.match_info["field"])


_LIST_SPLIT = re.compile(r"[,，、\n]+")


@requires("attributes:manage")
async def attribute_edit(request: web.Request) -> web.StreamResponse:
    name = request.match_info["field"]
    form = await request.post()
    keys = ("label", "description", "minimum", "maximum", "values", "max_length", "required")
    values = {k: _form(form, k).strip() for k in keys}
    max_length = _int(values["max_length"], missing=None)
    if values["max_length"] and max_length is None:
        return await _field_page(
            request, name, errors={"max_length": "须为整数"}, form=values, status=422
        )
    try:
        await fields.do_edit_field(
            name=name,
            edit=fields.FieldEdit(
                label=values["label"],
                description=values["description"],
                required=values["required"] == "1",
                minimum=values["minimum"],
                maximum=values["maximum"],
                enum_values=tuple(v for v in _LIST_SPLIT.split(values["values"]) if v.strip()),
                max_length=max_length,
            ),
            actor=actor_of(request),
            keyring=request.app[KEYRING],
        )
    except fields.UnknownField:
        raise web.HTTPNotFound(text="没有这个自定义字段") from None
    except attributes.FieldError as exc:
        status = 409 if isinstance(exc, fields.FieldConflict) else 422
        return await _field_page(
            request, name, errors={exc.field: exc.message}, form=values, status=status
        )
    raise _see_other(_url(request, "tagging_attribute", {"notice": "已保存"}, field=name))


@requires("attributes:manage")
async def attribute_retire(request: web.Request) -> web.StreamResponse:
    name = request.match_info["field"]
    elsewhere = [d.attribute_uses for d in request.app[DOMAINS] if d.attribute_uses is not None]
    try:
        await fields.do_retire_field(name=name, actor=actor_of(request), elsewhere=elsewhere)
    except fields.UnknownField:
        raise web.HTTPNotFound(text="没有这个自定义字段") from None
    except fields.FieldConflict as exc:
        return await _field_page(request, name, uses=exc.detail.get("uses", []), status=409)
    except attributes.FieldError as exc:
        return await _field_page(request, name, errors={exc.field: exc.message}, status=422)
    raise _see_other(
        _url(
            request,
            "tagging_attribute",
            {"notice": "已停用：导入、规则与人群不再接受此字段"},
            field=name,
        )
    )


@requires("attributes:manage")
async def attribute_restore(request: web.Request) -> web.StreamResponse:
    name = request.match_info["field"]
    try:
        await fields.do_restore_field(name=name, actor=actor_of(request))
    except fields.UnknownField:
        raise web.HTTPNotFound(text="没有这个自定义字段") from None
    except attributes.FieldError as exc:
        return await _field_page(request, name, errors={exc.field: exc.message}, status=422)
    raise _see_other(_url(request, "tagging_attribute", {"notice": "已恢复启用"}, field=name))


# ---------------------------------------------------------------- import history


@requires("tags:read")
@menu("导入记录", group=NAV_GROUP, order=24)
async def imports_page(request: web.Request) -> web.StreamResponse:
    return await _imports_page(request)


async def _imports_page(
    request: web.Request, *, errors: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    page = _page(request)
    rows, total = await service.imports(offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    if errors is None and request.query.get("error"):
        errors = {"file": request.query["error"][:200]}
    return render(
        "tagging_imports.html",
        request,
        {
            "rows": rows,
            "total": total,
            "page": page,
            "pages": max(1, ceil(total / PAGE_SIZE)),
            "can_upload": may(request, "customers:write"),
            "errors": errors or {},
            "notice": request.query.get("notice", "")[:200],
        },
        status=status,
    )


@requires("tags:read")
async def import_page(request: web.Request) -> web.StreamResponse:
    batch = await service.get_import(import_id=_id(request, "import_id"))
    if batch is None:
        raise web.HTTPNotFound()
    rejects = await service.import_rejects(import_id=batch.id, limit=500)
    return render(
        "tagging_import.html",
        request,
        {
            "b": batch,
            "rejects": rejects,
            "shown": len(rejects),
            "kept_max": attributes.REJECTS_KEPT,
            "notice": request.query.get("notice", "")[:200],
        },
    )


@requires("tags:read")
async def import_rejects_csv(request: web.Request) -> web.StreamResponse:
    batch = await service.get_import(import_id=_id(request, "import_id"))
    if batch is None:
        raise web.HTTPNotFound()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["行号", "标识类型", "客户标识（脱敏）", "原因"])
    for r in await service.import_rejects(import_id=batch.id):
        writer.writerow([r.row, r.key, r.who, r.error])
    # A BOM, so Excel reads the UTF-8 as such.
    body = "\ufeff" + buf.getvalue()
    return web.Response(
        body=body.encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="siyu-import-{batch.id}-rejects.csv"',
            "Cache-Control": "no-store",
        },
    )


@requires("customers:write")
async def import_upload(request: web.Request) -> web.StreamResponse:
    """A CSV from the console, imported as ``siyu customers import`` would (chunked).

    The page sends it with htmx, the CSRF token in a header, so the file is streamed
    here (up to 20 MB) instead of being read whole by the guard; without script, the
    form posts the token in the body and the request's size limit (1 MB) applies.
    """
    htmx = request.headers.get("HX-Request") == "true"
    if not request.content_type.startswith("multipart/"):
        return await _upload_failed(request, "请选择 CSV 文件", htmx=htmx, status=422)
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
        try:
            filename, size = await _receive_upload(request, spool)
        except _TooLarge:
            message = "文件超过 20 MB，请用命令行 siyu customers import"
            return await _upload_failed(request, message, htmx=htmx, status=413)
        if not filename or size == 0:
            return await _upload_failed(request, "请选择 CSV 文件", htmx=htmx, status=422)
        spool.seek(0)
        try:
            text = io.TextIOWrapper(spool, encoding="utf-8-sig", newline="")
            report = await _import_csv(request, text, filename)
        except UnicodeDecodeError:
            return await _upload_failed(request, "文件不是 UTF-8 编码", htmx=htmx, status=422)
        except _HeaderError as exc:
            return await _upload_failed(request, str(exc), htmx=htmx, status=422)
    notice = (
        f"已导入 {filename}：更新 {report.accepted} 行，未变 {report.unchanged} 行，"
        f"拒绝 {len(report.rejected) + len(report.unknown)} 行"
    )
    target = _url(request, "tagging_import", import_id=str(report.import_id))
    target = f"{target}?{urlencode({'notice': notice})}"
    if htmx:
        return web.Response(status=200, headers={"HX-Redirect": target})
    raise _see_other(target)


class _TooLarge(Exception):
    pass


async def _receive_upload(request: web.Request, spool: Any) -> tuple[str, int]:
    """The ``file`` field into ``spool``: streamed, or from the form the guard has read."""
    size = 0
    if request.headers.get("X-CSRF-Token"):
        reader = await request.multipart()
        filename = ""
        while (part := await reader.next()) is not None:
            if getattr(part, "name", "") != "file":
                continue
            filename = str(getattr(part, "filename", "") or "upload.csv")
            while chunk := await part.read_chunk():  # type: ignore[union-attr]
                size += len(chunk)
                if size > UPLOAD_MAX_BYTES:
                    raise _TooLarge()
                spool.write(chunk)
        return filename, size
    form = await request.post()
    field = form.get("file")
    if not isinstance(field, FileField):
        return "", 0
    while chunk := field.file.read(64 * 1024):
        size += len(chunk)
        spool.write(chunk)
    return str(field.filename or "upload.csv"), size


async def _upload_failed(
    request: web.Request, message: str, *, htmx: bool, status: int
) -> web.Response:
    if htmx:
        # htmx swaps nothing on an error status: send the browser to the page with it.
        target = _url(request, "tagging_imports", {"error": message})
        return web.Response(status=200, headers={"HX-Redirect": target})
    return await _imports_page(request, errors={"file": message}, status=status)


class _HeaderError(ValueError):
    pass


async def _import_csv(
    request: web.Request, text: io.TextIOWrapper, filename: str
) -> attributes.ImportReport:
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    if "external_userid" not in header and "unionid" not in header:
        raise _HeaderError("表头须含 external_userid 或 unionid 列")
    schema = await attributes.load_schema()
    unknown = [h for h in header if h not in ("external_userid", "unionid") and h not in schema]
    if unknown:
        raise _HeaderError("未知的属性列：" + "、".join(unknown))
    retired = [h for h in header if h in schema and schema[h].retired]
    if retired:
        raise _HeaderError("已停用的属性列：" + "、".join(retired))
    actor = actor_of(request)
    keyring = request.app[KEYRING]
    batch = await attributes.start_import(actor=actor, source="console", filename=filename)
    total = attributes.ImportReport(import_id=batch.id)
    first_line = 2
    chunk: list[dict[str, str]] = []
    ok = False
    try:
        for row in reader:
            chunk.append(row)
            if len(chunk) == 1000:
                total.merge(await _import_chunk(chunk, first_line, batch, actor, keyring))
                first_line += len(chunk)
                chunk = []
        if chunk:
            total.merge(await _import_chunk(chunk, first_line, batch, actor, keyring))
        ok = True
    finally:
        await attributes.finish_import(batch=batch, ok=ok)
    return total


async def _import_chunk(
    rows: list[dict[str, str]], first: int, batch: AttributeImport, actor: Actor, keyring: Any
) -> attributes.ImportReport:
    return await attributes.do_import_attributes(
        rows=rows,
        actor=actor,
        keyring=keyring,
        first_number=first,
        source="console",
        filename=batch.filename,
        batch=batch,
    )


# ---------------------------------------------------------------- customer page panels


def _cst(request: web.Request) -> Any:
    # The shell's time filter (Asia/Shanghai), as the templates format with it.
    return aiohttp_jinja2.get_env(request.app).filters["cst"]


def swatch_html(colour: str) -> str:
    """``tagging_macros.swatch``: only a validated #RRGGBB reaches the fill attribute."""
    return (
        '<svg class="swatch" width="10" height="10" viewBox="0 0 12 12" aria-hidden="true" '
        f'focusable="false"><circle cx="6" cy="6" r="6" fill="{escape(colour_of(colour))}"/></svg>'
    )


_SOURCE_TONES = {"manual": "info", "rule": "warn", "wecom": "ok"}


def source_tag_html(source: str) -> str:
    """``tagging_macros.source_tag``."""
    label = SOURCE_LABELS.get(source, source)
    return f'<span class="tag {escape(_SOURCE_TONES.get(source, ""))}">{escape(label)}</span>'


def tags_panel_html(
    *,
    current: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    tag_url: Any,
    can_read_tags: bool,
    cst: Any,
) -> str:
    """The markup of ``tagging_panel_tags.html``, written out: every view of a customer
    draws it, and the template's macros (imported with context) were re-run on each
    render — most of the panel's time.  Every value is escaped as autoescape did."""
    out = [
        '<div id="customer-tags"><div class="table-wrap">'
        '<table class="data" id="customer-tags-current">'
        "<thead><tr><th>标签与原因</th><th>来源 · 操作人 / 规则</th>"
        '<th class="hide-narrow">时间</th></tr></thead><tbody>'
    ]
    for c in current:
        tag = c["tag"]
        shown = f"{swatch_html(tag.colour)} {escape(tag.name)}"
        if can_read_tags:
            shown = f'<a href="{escape(tag_url(tag.id))}">{shown}</a>'
        reason = f'<div class="muted small-text">{escape(c["reason"])}</div>' if c["reason"] else ""
        expires = (
            f'<div class="muted small-text">{escape(cst(c["expires_at"], "%Y-%m-%d"))} 到期</div>'
            if c["expires_at"]
            else ""
        )
        out.append(
            f'<tr><td class="wrap">{shown}{reason}</td>'
            f'<td class="wrap">{source_tag_html(c["source"])} {escape(c["applied_by"])}</td>'
            f'<td class="mono hide-narrow">{escape(cst(c["applied_at"], "%Y-%m-%d %H:%M"))}'
            f"{expires}</td></tr>"
        )
    if not current:
        out.append('<tr><td colspan="3" class="empty">暂无标签</td></tr>')
    out.append("</tbody></table></div>")
    if history:
        out.append(
            '<details class="mt-12" id="customer-tags-history">'
            f'<summary class="small-text">标签变更记录（{len(history)}）</summary>'
            '<div class="table-wrap"><table class="data"><thead><tr><th>时间</th><th>变更</th>'
            "<th>标签</th><th>来源</th><th>操作人 / 规则</th>"
            '<th class="hide-narrow">原因</th></tr></thead><tbody>'
        )
        for h in history:
            tag = h["tag"]
            if tag is not None:
                name = str(escape(tag.name))
                if tag.deleted_at:
                    name += ' <span class="muted small-text">（已删除）</span>'
            else:
                name = f"#{escape(h['tag_id'])}"
            action = (
                '<span class="tag ok">打上</span>'
                if h["action"] == "add"
                else '<span class="tag">移除</span>'
            )
            out.append(
                f'<tr><td class="mono">{escape(cst(h["at"], "%m-%d %H:%M"))}</td>'
                f"<td>{action}</td><td>{name}</td><td>{source_tag_html(h['source'])}</td>"
                f"<td>{escape(h['actor'])}</td>"
                f'<td class="wrap hide-narrow small-text">{escape(h["reason"] or "—")}</td></tr>'
            )
        out.append("</tbody></table></div></details>")
    out.append("</div>")
    return "".join(out)


async def _rule_names(rule_ids: set[int]) -> dict[int, str]:
    if not rule_ids:
        return {}
    return {
        int(i): str(n)
        for i, n in await TagRule.filter(id__in=sorted(rule_ids)).values_list("id", "name")
    }


async def tags_panel(request: web.Request, customer_id: int, viewer: Principal) -> str | None:
    """The customer page's tag box: tags with source, who applied them, why, and history.

    The page has checked that ``viewer`` may see this customer; nothing here is
    personal beyond tag names and the masked notes operators left.
    """
    current, history, tags = await service.customer_tags_read(
        customer_id=customer_id, history_limit=100
    )
    refs = [*(ct.applied_by for ct in current), *(h.actor for h in history)]
    reasons = [*(ct.reason for ct in current), *(h.reason for h in history)]
    rule_ids = {int(r["rule_id"]) for r in reasons if isinstance(r.get("rule_id"), int)}
    rule_ids |= {
        int(ref.split(":", 1)[1])
        for ref in refs
        if ref.startswith("rule:") and ref.split(":", 1)[1].isdigit()
    }
    # The rules named by reasons and by refs are read once; the other refs' names
    # (operators, keys, advisors) beside them.
    rule_names, names = (
        await asyncio.gather(
            _rule_names(rule_ids),
            actor_names(request, [r for r in refs if not r.startswith("rule:")]),
        )
        if refs
        else ({}, {})
    )
    return tags_panel_html(
        current=[
            {
                "tag": ct.tag,
                "source": ct.source.value,
                "applied_by": actor_label(ct.applied_by, rule_names, names),
                "applied_at": ct.applied_at,
                "expires_at": ct.expires_at,
                "reason": reason_text(ct.reason, rule_names),
            }
            for ct in current
        ],
        history=[
            {
                "tag": tags.get(h.tag_id),
                "tag_id": h.tag_id,
                "action": h.action,
                "source": h.source.value,
                "actor": actor_label(h.actor, rule_names, names),
                "reason": reason_text(h.reason, rule_names),
                "at": h.at,
            }
            for h in history
        ],
        tag_url=lambda tag_id: _url(request, "tagging_tag", tag_id=str(tag_id)),
        can_read_tags="customers:read" in viewer.permissions,
        cst=_cst(request),
    )


async def attributes_panel(request: web.Request, customer_id: int, viewer: Principal) -> str | None:
    """The customer's custom and sealed attributes (the page shows the built-in clear ones).

    Masked-by-role values are shown to ``customers:sensitive`` only; sealed values are
    never opened here — a holder of that permission opens them with a button, audited.
    """
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    # The fields and the customer's sealed names: one statement.
    rows, sealed_names = await service.attribute_panel_read(customer_id=customer_id)
    schema = attributes.schema_from(rows)
    # Only custom fields are drawn here: without one, the customer's row has nothing to add.
    shown = any(not spec.builtin and not spec.sensitive for spec in schema.values())
    clear = (
        (await service.customer_attributes(conn=conn, customer_ids=[customer_id])).get(
            customer_id, {}
        )
        if shown
        else {}
    )
    sealed = sorted(sealed_names)
    full = "customers:sensitive" in viewer.permissions
    custom = []
    for name, spec in schema.items():
        if spec.builtin or name not in clear or spec.sensitive:
            continue
        hidden = spec.masked_by_role and not full
        value = attributes.masked(spec, clear[name]) if hidden else attributes.display(clear[name])
        custom.append({"name": name, "label": spec.label or name, "value": value})
    if not custom and not sealed:
        return None
    return aiohttp_jinja2.render_string(
        "tagging_panel_attributes.html",
        request,
        {
            **_globals(),
            "custom": custom,
            "sealed": [
                {"name": n, "label": (schema[n].label if n in schema else "") or n} for n in sealed
            ],
            "can_open": full,
            "open_url": _url(request, "tagging_sealed_open", customer_id=str(customer_id)),
            "opened": None,
        },
    )


@requires("customers:sensitive")
async def sealed_open(request: web.Request) -> web.StreamResponse:
    """htmx: a customer's sealed attributes, opened for this viewer and audited."""
    customer_id = _id(request, "customer_id")
    customer = await service.customer_in_reach(
        customer_id=customer_id, reach=await reach_of(request)
    )
    if customer is None:
        raise web.HTTPNotFound()  # the same answer outside the viewer's reach
    schema = await attributes.load_schema()
    opened = await attributes.do_open_sealed(
        customer_id=customer_id, keyring=request.app[KEYRING], actor=actor_of(request)
    )
    response = fragment(
        "tagging_sealed_values.html",
        request,
        {
            "values": [
                {
                    "label": (schema[n].label if n in schema else "") or n,
                    "value": attributes.display(v) if v is not None else "（无法解密：密钥不可用）",
                }
                for n, v in opened
            ]
        },
    )
    # Exact values for this screen only: no browser or proxy keeps them.
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- routes


def add_pages(app: web.Application) -> None:
    r = app.router
    # The stylesheet of these pages; static files pass the shell's guard untouched.
    r.add_static("/static/tagging", str(resources.files("tagging").joinpath("static")))
    r.add_get("/tags", library, name="tagging_library")
    r.add_post("/tags/sync", sync_now, name="tagging_sync_now")
    r.add_post("/tags/groups", create_group, name="tagging_group_create")
    r.add_post("/tags/groups/{group_id}", edit_group, name="tagging_group_edit")
    r.add_post("/tags/groups/{group_id}/delete", delete_group, name="tagging_group_delete")
    r.add_post("/tags/new", create_tag, name="tagging_tag_create")
    r.add_get("/tags/rules", rule_list, name="tagging_rules")
    r.add_get("/tags/rules/new", rule_new, name="tagging_rule_new")
    r.add_post("/tags/rules/save", rule_save, name="tagging_rule_save")
    r.add_post("/tags/rules/dry-run", rule_dry_run, name="tagging_rule_dry_run")
    r.add_get("/tags/rules/{rule_id}", rule_page, name="tagging_rule")
    r.add_post("/tags/rules/{rule_id}/enabled", rule_toggle, name="tagging_rule_toggle")
    r.add_get("/tags/audiences", audience_page, name="tagging_audiences")
    r.add_get("/tags/audiences/preview", audience_preview, name="tagging_audience_preview")
    r.add_post("/tags/audiences", audience_save, name="tagging_audience_save")
    r.add_get("/tags/attributes", attributes_page, name="tagging_attributes")
    r.add_post("/tags/attributes", attribute_add, name="tagging_attribute_add")
    r.add_get("/tags/attributes/{field}", attribute_page, name="tagging_attribute")
    r.add_post("/tags/attributes/{field}", attribute_edit, name="tagging_attribute_edit")
    r.add_post("/tags/attributes/{field}/retire", attribute_retire, name="tagging_attribute_retire")
    r.add_post(
        "/tags/attributes/{field}/restore", attribute_restore, name="tagging_attribute_restore"
    )
    r.add_get("/tags/imports", imports_page, name="tagging_imports")
    r.add_post("/tags/imports", import_upload, name="tagging_import_upload")
    r.add_get("/tags/imports/{import_id}", import_page, name="tagging_import")
    r.add_get(
        "/tags/imports/{import_id}/rejects.csv", import_rejects_csv, name="tagging_import_rejects"
    )
    r.add_post("/tags/customers/{customer_id}/sealed", sealed_open, name="tagging_sealed_open")
    r.add_get("/tags/{tag_id}", tag_page, name="tagging_tag")
    r.add_post("/tags/{tag_id}", edit_tag, name="tagging_tag_edit")
    r.add_post("/tags/{tag_id}/delete", delete_tag, name="tagging_tag_delete")
