"""What sop draws on other domains' pages: the customer page's journeys, the chat
sidebar's touches due for this customer, and the dashboard's campaign funnels.

The customer page (admin) and the sidebar have decided that the viewer may see the
customer before a panel renders; the panels narrow further to the viewer's reach
(``core.access.REACH``: an advisor the enrolments they carry, a team lead their
advisors'), as the page narrows the conversation.  Every lookup goes through an index:
enrolments by ``(customer, state)``, touches by ``(enrolment, step)`` or
``(customer, due_at)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import escape

from bot import customers as bot_customers
from bot import service as bot_service
from core.access import REACH, Principal
from sop import stats
from sop.engine.specs import VARIABLES, missing_variables
from sop.engine.specs import render as render_text
from sop.engine.timing import SHANGHAI
from sop.models import (
    Campaign,
    CampaignStep,
    CampaignVersion,
    Delivery,
    Enrolment,
    EnrolmentState,
    Touch,
    TouchState,
)
from sop.pages import sop_static_url

#: The customer page lists the newest journeys; older ones are counted, not drawn.
JOURNEYS_SHOWN = 20
#: "Due today or soon" in the sidebar: from yesterday's reminders to three days ahead.
DUE_BEHIND = timedelta(days=1)
DUE_AHEAD = timedelta(days=3)
#: Touches the sidebar lists: not final yet, or a reminder the advisor was sent (``sent``
#: for a reminder means the digest reached the advisor, not the customer).
DUE_STATES = (TouchState.PLANNED, TouchState.DUE, TouchState.SENDING, TouchState.SENT)

ENROLMENT_STATES = {
    EnrolmentState.ACTIVE: ("进行中", "info"),
    EnrolmentState.COMPLETED: ("已完成", "ok"),
    EnrolmentState.EXITED: ("已退出", ""),
}
TOUCH_STATES = {
    TouchState.PLANNED: ("已计划", ""),
    TouchState.DUE: ("待发送", "info"),
    TouchState.SENDING: ("发送中", "info"),
    TouchState.SENT: ("已发送", "ok"),
    TouchState.CONFIRMED: ("已确认送达", "ok"),
    TouchState.SKIPPED: ("已跳过", "warn"),
    TouchState.FAILED: ("失败", "bad"),
}
# What ``sent`` means depends on the delivery: a reminder reached the advisor, a
# mass-send became a task the advisor confirms in WeCom.
SENT_BY_DELIVERY = {
    Delivery.REMINDER: "已提醒客户经理",
    Delivery.MASS_SEND: "群发任务待确认",
    Delivery.WELCOME: "欢迎语已发送",
}
DELIVERY_SHORT = {Delivery.MASS_SEND: "群发", Delivery.REMINDER: "提醒", Delivery.WELCOME: "欢迎语"}
#: ``Touch.sent_via`` of a touch the advisor sent from the chat sidebar (sop.touches).
SENT_VIA_SIDEBAR = "sidebar"
SENT_FROM_SIDEBAR = "客户经理已发送"


async def _reach(request: web.Request) -> frozenset[str] | None:
    reach = request.app.get(REACH)
    return None if reach is None else await reach(request)


def _state_of(touch: Touch, delivery: Delivery | None) -> tuple[str, str]:
    if touch.sent_via == SENT_VIA_SIDEBAR and touch.state == TouchState.SENT:
        return SENT_FROM_SIDEBAR, "ok"
    if touch.state == TouchState.SENT and delivery is not None:
        return SENT_BY_DELIVERY.get(delivery, "已发送"), "ok"
    return TOUCH_STATES.get(touch.state, (str(touch.state), ""))


def when_label(at: datetime, *, now: datetime) -> str:
    """``今天 10:00`` / ``明天 10:00`` / ``04-12 10:00`` (Beijing time)."""
    local, today = at.astimezone(SHANGHAI), now.astimezone(SHANGHAI).date()
    days = (local.date() - today).days
    day = {-1: "昨天", 0: "今天", 1: "明天", 2: "后天"}.get(days)
    if day is None:
        day = local.strftime("%m-%d") if local.year == today.year else local.strftime("%Y-%m-%d")
    return f"{day} {local:%H:%M}"


# ---------------------------------------------------------------- the customer page


@dataclass(frozen=True)
class TouchLine:
    id: int
    position: int
    step_name: str
    delivery: str
    due_at: datetime
    state: str
    state_label: str
    tone: str
    reason: str


@dataclass(frozen=True)
class JourneyLine:
    id: int
    campaign_id: int
    campaign: str
    version: int
    state: str
    state_label: str
    tone: str
    entered_at: datetime
    advisor: str
    exit_reason: str
    exited_at: datetime | None
    goal_reached_at: datetime | None
    touches: list[TouchLine] = field(default_factory=list)


@dataclass(frozen=True)
class Journeys:
    lines: list[JourneyLine]
    # Enrolments beyond the ones drawn (the newest JOURNEYS_SHOWN are).
    more: int


def _dialect_sql(conn: Any, sql: str) -> str:
    if conn.capabilities.dialect != "postgres":
        return sql
    parts = sql.split("?")
    return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]


def _enrolment_columns(alias: str, prefix: str = "") -> str:
    return ", ".join(
        f'"{alias}"."{c}" AS "{prefix}{c}"' for c in Enrolment._meta.fields_db_projection.values()
    )


def _reach_sql(alias: str, reach: frozenset[str] | None) -> tuple[str, list[Any]]:
    if reach is None:
        return "", []
    wanted = sorted(reach) or [""]
    return f' AND "{alias}"."advisor" IN ({", ".join("?" * len(wanted))})', list(wanted)


async def _enrolments_read(
    *, external_userid: str, reach: frozenset[str] | None
) -> list[Enrolment]:
    """The newest JOURNEYS_SHOWN enrolments, as ``Enrolment.filter(...)`` reads them,
    written out: every view of a customer asks, and most customers have none — the ORM
    building the statement cost more than the read."""
    conn = Enrolment._meta.db
    reach_sql, reach_params = _reach_sql("e", reach)
    sql = (
        f'SELECT {_enrolment_columns("e")} FROM "sop_enrolment" "e" '  # noqa: S608 - model columns and placeholders only
        f'WHERE "e"."customer" = ?{reach_sql} '
        'ORDER BY "e"."entered_at" DESC, "e"."id" DESC LIMIT ?'
    )
    found = await conn.execute_query_dict(
        _dialect_sql(conn, sql), [external_userid, *reach_params, JOURNEYS_SHOWN]
    )
    return [Enrolment._init_from_db(**r) for r in found]


async def customer_enrolments_read(
    *, customer_id: int, reach: frozenset[str] | None
) -> tuple[str, list[Enrolment]] | None:
    """``_enrolments_read`` for the customer with row id ``customer_id`` (enrolments
    name a customer by external_userid), with that external_userid; None when there is
    no such customer.  One statement: the customer's row by its key, their enrolments
    joined — the external_userid was a statement of its own before every panel."""
    conn = Enrolment._meta.db
    reach_sql, reach_params = _reach_sql("e", reach)
    sql = (
        f'SELECT "c"."external_userid" AS "customer__", {_enrolment_columns("e", "e__")} '  # noqa: S608 - model columns and placeholders only
        'FROM "bot_customer" "c" LEFT JOIN "sop_enrolment" "e" '
        f'ON "e"."customer" = "c"."external_userid"{reach_sql} '
        'WHERE "c"."id" = ? ORDER BY "e"."entered_at" DESC, "e"."id" DESC LIMIT ?'
    )
    found = await conn.execute_query_dict(
        _dialect_sql(conn, sql), [*reach_params, customer_id, JOURNEYS_SHOWN]
    )
    if not found:
        return None
    names = Enrolment._meta.fields_db_projection.values()
    return str(found[0]["customer__"]), [
        Enrolment._init_from_db(**{c: r[f"e__{c}"] for c in names})
        for r in found
        if r["e__id"] is not None
    ]


async def journeys_of(
    *,
    external_userid: str,
    reach: frozenset[str] | None,
    enrolments: list[Enrolment] | None = None,
) -> Journeys:
    """The customer's enrolments (newest first) with their touches, within ``reach``
    (``enrolments``: the newest JOURNEYS_SHOWN of them, when already read)."""
    q = Enrolment.filter(customer=external_userid)
    if reach is not None:
        q = q.filter(advisor__in=sorted(reach))
    if enrolments is None:
        enrolments = await _enrolments_read(external_userid=external_userid, reach=reach)
    if not enrolments:
        return Journeys(lines=[], more=0)
    # Counted only when the page is full: fewer rows than the page holds are all of them.
    total = await q.count() if len(enrolments) == JOURNEYS_SHOWN else len(enrolments)
    touches = list(
        await Touch.filter(enrolment_id__in=[e.id for e in enrolments]).order_by("due_at", "id")
    )
    steps = {
        s.id: s
        for s in await CampaignStep.filter(id__in=sorted({t.step_id for t in touches}))  # type: ignore[attr-defined]
    }
    versions: dict[int, int] = dict(
        await CampaignVersion.filter(
            id__in=sorted({e.version_id for e in enrolments})  # type: ignore[attr-defined]
        ).values_list("id", "version")
    )
    names: dict[int, str] = dict(
        await Campaign.filter(
            id__in=sorted({e.campaign_id for e in enrolments})  # type: ignore[attr-defined]
        ).values_list("id", "name")
    )
    advisors = await bot_service.advisors_by_userid(userids={e.advisor for e in enrolments})
    by_enrolment: dict[int, list[TouchLine]] = {}
    for t in touches:
        step = steps.get(t.step_id)  # type: ignore[attr-defined]
        delivery = step.delivery if step is not None else None
        label, tone = _state_of(t, delivery)
        by_enrolment.setdefault(t.enrolment_id, []).append(  # type: ignore[attr-defined]
            TouchLine(
                id=t.id,
                position=step.position if step is not None else 0,
                step_name=step.name if step is not None else "",
                delivery=DELIVERY_SHORT.get(delivery, "") if delivery is not None else "",
                due_at=t.due_at,
                state=t.state.value,
                state_label=label,
                tone=tone,
                reason=stats.reason_label(t.reason)
                if t.reason and t.state in (TouchState.SKIPPED, TouchState.FAILED)
                else "",
            )
        )
    lines = []
    for e in enrolments:
        label, tone = ENROLMENT_STATES.get(e.state, (str(e.state), ""))
        info = advisors.get(e.advisor)
        lines.append(
            JourneyLine(
                id=e.id,
                campaign_id=e.campaign_id,  # type: ignore[attr-defined]
                campaign=str(names.get(e.campaign_id, "")),  # type: ignore[attr-defined]
                version=int(versions.get(e.version_id, 0)),  # type: ignore[attr-defined]
                state=e.state.value,
                state_label=label,
                tone=tone,
                entered_at=e.entered_at,
                advisor=info.name if info is not None and info.name else e.advisor,
                exit_reason=stats.exit_label(e.exit_reason) if e.exit_reason else "",
                exited_at=e.exited_at,
                goal_reached_at=e.goal_reached_at,
                touches=by_enrolment.get(e.id, []),
            )
        )
    return Journeys(lines=lines, more=max(0, total - len(enrolments)))


async def _customer_row(customer_id: int) -> bot_customers.CustomerRow | None:
    rows = await bot_customers.customer_rows(ids=[customer_id])
    return rows[0] if rows else None


def journeys_html(
    *,
    journeys: list[JourneyLine],
    more: int,
    campaign_url: Callable[[int], str] | None,
    cst: Callable[[datetime | None, str], str],
) -> str:
    """The markup of ``sop_panel_journeys.html``, written out (every view of a customer
    draws it); every value escaped as autoescape did."""
    out = [
        f'<link rel="stylesheet" href="{escape(sop_static_url("sop-panels.css"))}">'
        '<div id="sop-journeys" class="sop-journeys">'
    ]
    for j in journeys:
        name = f"<strong>{escape(j.campaign)}</strong>"
        if campaign_url is not None:
            name = f'<a href="{escape(campaign_url(j.campaign_id))}">{name}</a>'
        goal = (
            f' <span class="tag ok" title="{escape(cst(j.goal_reached_at, "%Y-%m-%d %H:%M"))}">'
            "达成目标</span>"
            if j.goal_reached_at
            else ""
        )
        out.append(
            f'<div class="sop-journey" id="sop-enrolment-{escape(j.id)}" '
            f'data-state="{escape(j.state)}"><div class="sop-journey-head">{name} '
            f'<span class="muted small-text">v{escape(j.version)}</span> '
            f'<span class="tag {escape(j.tone)}">{escape(j.state_label)}</span>{goal}</div>'
            '<div class="muted small-text">入组 <span class="mono">'
            f"{escape(cst(j.entered_at, '%Y-%m-%d %H:%M'))}</span> · {escape(j.advisor)}</div>"
        )
        if j.exit_reason:
            when = (
                f' <span class="mono muted">{escape(cst(j.exited_at, "%Y-%m-%d %H:%M"))}</span>'
                if j.exited_at
                else ""
            )
            out.append(
                f'<div class="small-text sop-exit">退出：{escape(j.exit_reason)}{when}</div>'
            )
        if j.touches:
            out.append('<ol class="sop-touches">')
            for t in j.touches:
                step = f" · {escape(t.step_name)}" if t.step_name else ""
                delivery = f"{escape(t.delivery)} · " if t.delivery else ""
                reason = (
                    f'<div class="sop-touch-reason small-text">原因：{escape(t.reason)}</div>'
                    if t.reason
                    else ""
                )
                out.append(
                    f'<li data-state="{escape(t.state)}"><div class="sop-touch-line">'
                    f'<span class="sop-touch-step">第 {escape(t.position)} 步{step}</span> '
                    f'<span class="tag {escape(t.tone)}">{escape(t.state_label)}</span></div>'
                    f'<div class="muted small-text">{delivery}<span class="mono">'
                    f"{escape(cst(t.due_at, '%m-%d %H:%M'))}</span></div>{reason}</li>"
                )
            out.append("</ol>")
        else:
            out.append('<p class="muted small-text">尚未计划触达</p>')
        out.append("</div>")
    if not journeys:
        out.append('<p class="muted">未参加 SOP 旅程</p>')
    if more:
        out.append(f'<p class="muted small-text">另有 {escape(more)} 段更早的旅程未显示</p>')
    out.append("</div>")
    return "".join(out)


async def journeys_panel(request: web.Request, customer_id: int, viewer: Principal) -> str | None:
    """The customer page's SOP box: enrolments (campaign, version, state, entry, exit)
    and their touches (step, due, state, reason).  Nothing personal is drawn."""
    reach = await _reach(request)
    # Enrolments name the customer by external_userid: read with them, one statement.
    read = await customer_enrolments_read(customer_id=customer_id, reach=reach)
    if read is None:
        return None
    external_userid, enrolments = read
    found = await journeys_of(external_userid=external_userid, reach=reach, enrolments=enrolments)
    link = "campaigns:read" in viewer.permissions
    route = request.app.router["sop_campaign"] if link else None
    return journeys_html(
        journeys=found.lines,
        more=found.more,
        campaign_url=(
            (lambda cid: str(route.url_for(campaign_id=str(cid)))) if route is not None else None
        ),
        cst=aiohttp_jinja2.get_env(request.app).filters["cst"],
    )


# ---------------------------------------------------------------- the sidebar


@dataclass(frozen=True)
class DueTouch:
    id: int
    campaign: str
    position: int
    step_name: str
    delivery: str
    delivery_label: str
    due_at: datetime
    when: str
    state_label: str
    tone: str
    kind: str
    text: str
    link: dict[str, str] | None
    # What the sidebar's send action takes (WeCom JS-SDK sendChatMessage), for a card.
    chat_message: dict[str, Any] | None
    advisor: str
    state: str = ""
    # Sent from the sidebar: when (``sent_at``); None while only the digest went out.
    sent_at: datetime | None = None
    # Variables the content uses that this customer has no value for (no maturity date
    # imported): nothing is filled in or offered, ``missing_note`` says why.
    missing: tuple[str, ...] = ()

    @property
    def missing_note(self) -> str:
        return missing_note(self.missing)


def missing_note(missing: Sequence[str]) -> str:
    """Why a touch cannot be filled for this customer (zh-CN), "" when it can."""
    if not missing:
        return ""
    which = "、".join(f"「{VARIABLES.get(v, v)}」（{{{v}}}）" for v in missing)
    return f"无法为该客户填写：客户资料中没有{which}，请先补充客户资料，或自行编辑后发送。"


def _content_values(
    *, customer_name: str, advisor_name: str, version: CampaignVersion, attrs: Mapping[str, Any]
) -> dict[str, str]:
    # The engine's variables (sop.engine.specs.VARIABLES), filled as the dispatcher does.
    return {
        "customer_name": customer_name,
        "advisor_name": advisor_name,
        "product_name": str((version.product or {}).get("name") or ""),
        "maturity_date": str(attrs.get("maturity_date") or ""),
    }


def _link_card(content: Mapping[str, Any]) -> dict[str, str] | None:
    link = content.get("link")
    if content.get("kind") != "link" or not isinstance(link, Mapping):
        return None
    return {k: str(link.get(k) or "") for k in ("title", "url", "desc", "picurl")}


async def due_touches(
    *,
    external_userid: str,
    customer_name: str,
    attrs: Mapping[str, Any],
    reach: frozenset[str] | None,
    now: datetime,
) -> list[DueTouch]:
    """Touches of the customer's running journeys due from yesterday to three days ahead,
    their content filled in for this customer (welcome messages go by themselves)."""
    today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    q = Touch.filter(
        customer=external_userid,
        due_at__gte=(today - DUE_BEHIND).astimezone(UTC),
        due_at__lt=(today + timedelta(days=1) + DUE_AHEAD).astimezone(UTC),
        state__in=DUE_STATES,
    )
    if reach is not None:
        q = q.filter(advisor__in=sorted(reach))
    touches = list(await q.order_by("due_at", "id").limit(50))
    if not touches:
        return []
    running = set(
        await Enrolment.filter(
            id__in=sorted({t.enrolment_id for t in touches}),  # type: ignore[attr-defined]
            state=EnrolmentState.ACTIVE,
        ).values_list("id", flat=True)
    )
    touches = [t for t in touches if t.enrolment_id in running]  # type: ignore[attr-defined]
    return await render_touches(
        touches, customer_name=customer_name, attrs=attrs, now=now, welcome=False
    )


async def render_touches(
    touches: Sequence[Touch],
    *,
    customer_name: str,
    attrs: Mapping[str, Any],
    now: datetime,
    welcome: bool,
) -> list[DueTouch]:
    """The touches with their content filled in for the customer as the dispatcher fills
    it, and a card as the sidebar's send action takes it (welcome messages only when
    ``welcome``: they go by themselves)."""
    if not touches:
        return []
    steps = {
        s.id: s
        for s in await CampaignStep.filter(id__in=sorted({t.step_id for t in touches}))  # type: ignore[attr-defined]
    }
    versions = {
        v.id: v
        for v in await CampaignVersion.filter(
            id__in=sorted({t.version_id for t in touches})  # type: ignore[attr-defined]
        )
    }
    names: dict[int, str] = dict(
        await Campaign.filter(
            id__in=sorted({t.campaign_id for t in touches})  # type: ignore[attr-defined]
        ).values_list("id", "name")
    )
    advisors = await bot_service.advisors_by_userid(userids={t.advisor for t in touches})
    out = []
    for t in touches:
        step = steps.get(t.step_id)  # type: ignore[attr-defined]
        version = versions.get(t.version_id)  # type: ignore[attr-defined]
        if step is None or version is None:
            continue
        if step.delivery == Delivery.WELCOME and not welcome:
            continue
        info = advisors.get(t.advisor)
        advisor_name = info.name if info is not None and info.name else ""
        values = _content_values(
            customer_name=customer_name, advisor_name=advisor_name, version=version, attrs=attrs
        )
        content = dict(step.content or {})
        # A variable without a value would be left as literal braces: not filled in.
        missing = tuple(missing_variables(content, values))
        text = "" if missing else render_text(str(content.get("text") or ""), values)
        link = None if missing else _link_card(content)
        chat = None
        if link is not None and link["url"]:
            chat = {
                "msgtype": "news",
                "enterChat": True,
                "news": {
                    "link": link["url"],
                    "title": render_text(link["title"], values),
                    "desc": render_text(link["desc"], values),
                    "imgUrl": link["picurl"],
                },
            }
        label, tone = _state_of(t, step.delivery)
        out.append(
            DueTouch(
                id=t.id,
                campaign=str(names.get(t.campaign_id, "")),  # type: ignore[attr-defined]
                position=step.position,
                step_name=step.name,
                delivery=step.delivery.value,
                delivery_label=DELIVERY_SHORT.get(step.delivery, ""),
                due_at=t.due_at,
                when=when_label(t.due_at, now=now),
                state_label=label,
                tone=tone,
                kind=str(content.get("kind") or "text"),
                text=text,
                link=link,
                chat_message=chat,
                advisor=advisor_name or t.advisor,
                state=t.state.value,
                sent_at=t.sent_at if t.sent_via == SENT_VIA_SIDEBAR else None,
                missing=missing,
            )
        )
    return out


async def due_panel(request: web.Request, customer_id: int, viewer: Principal) -> str | None:
    """The sidebar's "due for this customer": each touch's content filled in, ready to
    put in the checked send box (text) or send (a link card)."""
    row = await _customer_row(customer_id)
    if row is None:
        return None
    now = datetime.now(UTC)
    due = await due_touches(
        external_userid=row.external_userid,
        customer_name=row.name,
        attrs=row.attributes,
        reach=await _reach(request),
        now=now,
    )
    return aiohttp_jinja2.render_string(
        "sop_panel_due.html",
        request,
        {
            "due": due,
            "several_advisors": len({d.advisor for d in due}) > 1,
            "sop_static": sop_static_url,
        },
    )


# ---------------------------------------------------------------- the dashboard


async def dashboard_funnels(days: int, now: datetime) -> dict[str, Any]:
    """Every running campaign's funnel over the customers who entered in the window."""
    today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    funnels = await stats.active_funnels(since=since)
    return funnel_block(funnels)


def funnel_block(funnels: Sequence[stats.CampaignFunnel]) -> dict[str, Any]:
    return {
        "x": [label for _, label in stats.DASHBOARD_STAGES],
        "x_label": "阶段",
        "series": [
            {"name": f.name, "data": [f.stages[key] for key, _ in stats.DASHBOARD_STAGES]}
            for f in funnels
        ],
    }
