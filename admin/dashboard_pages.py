"""``/dashboard``: daily charts from the rollups (admin.dashboard), each also as CSV.

The page hands the charts their data in a ``<script type="application/json">`` block
that ``dashboard.js`` reads: the console's CSP allows no inline script.  Every chart
has its own CSV route, so a permission (``dashboard:read``) guards each like a page.
Other domains add charts of their own (``core.domain.DashboardChart``), drawn after
these and guarded by their own permission as well.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from admin import dashboard
from admin.render import render
from bot.flows import ALERT_INTENTS, CATEGORY_LABELS
from core.access import menu, principal_of, requires
from core.appkit import DOMAINS
from core.domain import DashboardChart

log = logging.getLogger(__name__)

WINDOWS = (7, 30, 90)
DEFAULT_WINDOW = 30

INTENT_LABELS = {
    "product_inquiry": "产品咨询",
    "purchase_intent": "购买意向",
    "redemption_intent": ALERT_INTENTS["redemption_intent"],
    "complaint": ALERT_INTENTS["complaint"],
    "account_service": "账户服务",
    "claim_service": "理赔服务",
    "risk_assessment": "风险测评",
    "chitchat": "闲聊",
}
ALERT_LABELS = {
    "violation": "违规提醒",
    "churn": "客户流失",
    "complaint": "投诉",
    "redemption_intent": "赎回意向",
    "transfer_fail": "客户继承失败",
}
METRIC_LABELS = {dashboard.MESSAGES: "消息数", dashboard.CUSTOMERS: "沟通客户数"}


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    kind: str  # line | stack (bars stacked per day) | bar (one bar per dim) | funnel
    hint: str
    # A funnel (one per series, side by side) takes the grid's full width.
    wide: bool = False


CHARTS = (
    Chart("activity", "每日消息与沟通客户", "line", "入库消息数；当天有消息往来的客户（去重）"),
    Chart("violations", "每日违规（按类别）", "stack", "一条消息命中多个类别时各计一次"),
    Chart("advisors", "违规消息最多的客户经理", "bar", "所选时间段内，前 15 名"),
    Chart("teams", "违规消息（按团队）", "bar", "按客户经理所在部门汇总"),
    Chart("intents", "每日客户意图", "stack", "模型识别出意图的消息"),
    Chart("alerts", "每日提醒（按类型）", "stack", "发给客户经理或主管的提醒"),
    Chart("backlog", "审核积压（按等待时长）", "bar", "当前未处理的审核案件"),
)
_TOP_ADVISORS = 15
NO_TEAM = "未分部门"


def _advisor_label(userid: str, info: dict[str, dashboard.AdvisorInfo]) -> str:
    # Staff names, not customers': shown to 运营 as to 合规 (PIPL concerns customers here).
    found = info.get(userid)
    return f"{found.name}（{userid}）" if found and found.name else userid


def _window(request: web.Request) -> int:
    raw = request.query.get("days", "")
    return int(raw) if raw.isdigit() and int(raw) in WINDOWS else DEFAULT_WINDOW


def _series_block(series: dashboard.Series, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "x": [d[5:] for d in series.days],
        "series": [
            {"name": labels.get(dim, dim or "—"), "data": series.values[dim]} for dim in series.dims
        ],
    }


async def chart_data(days: int, *, now: datetime) -> dict[str, dict[str, Any]]:
    """Every chart's data: ``{name: {"x": [...], "series": [{"name", "data"}]}}``."""
    today = now.astimezone(dashboard.SHANGHAI).date()
    window = dashboard.window_days(days=days, today=today)
    daily = await dashboard.daily_series(
        metrics=(
            dashboard.MESSAGES,
            dashboard.CUSTOMERS,
            dashboard.VIOLATION_CATEGORY,
            dashboard.VIOLATION_ADVISOR,
            dashboard.INTENT,
        ),
        days=window,
    )
    activity = {
        "x": [d[5:] for d in window],
        "series": [
            {"name": METRIC_LABELS[m], "data": daily[m].values.get("", [0] * len(window))}
            for m in (dashboard.MESSAGES, dashboard.CUSTOMERS)
        ],
    }
    adv = daily[dashboard.VIOLATION_ADVISOR]
    top = adv.dims[:_TOP_ADVISORS]
    info = await dashboard.advisors(adv.dims)
    teams: dict[str, int] = {}
    for userid in adv.dims:
        team = info[userid].team if userid in info and info[userid].team else NO_TEAM
        teams[team] = teams.get(team, 0) + adv.total(userid)
    team_order = sorted(teams, key=lambda t: (-teams[t], t))
    backlog = await dashboard.review_backlog(now=now)
    return {
        "activity": activity,
        "violations": _series_block(daily[dashboard.VIOLATION_CATEGORY], CATEGORY_LABELS),
        "advisors": {
            "x": [_advisor_label(a, info) for a in top],
            "series": [{"name": "违规消息", "data": [adv.total(a) for a in top]}],
        },
        "teams": {
            "x": team_order,
            "series": [{"name": "违规消息", "data": [teams[t] for t in team_order]}],
        },
        "intents": _series_block(daily[dashboard.INTENT], INTENT_LABELS),
        "alerts": _series_block(await dashboard.alerts_series(days=window), ALERT_LABELS),
        "backlog": {
            "x": [label for label, _ in backlog.buckets],
            "series": [{"name": "待审核案件", "data": [n for _, n in backlog.buckets]}],
            "open": backlog.open,
            "oldest_at": backlog.oldest_at.isoformat() if backlog.oldest_at else None,
        },
    }


def contributed(app: web.Application) -> list[DashboardChart]:
    """Other domains' charts, in order (``core.domain.Domain.dashboard_charts``)."""
    found = [c for d in app.get(DOMAINS, ()) for c in d.dashboard_charts]
    return sorted(found, key=lambda c: (c.order, c.key))


def _chart_name(key: str) -> str:
    return key.replace(".", "-")


def _may(request: web.Request, permission: str) -> bool:
    p = principal_of(request)
    return not permission or (p is not None and permission in p.permissions)


async def contributed_data(
    request: web.Request, days: int, *, now: datetime
) -> tuple[list[Chart], dict[str, dict[str, Any]]]:
    """The charts this viewer may see and their blocks; one that fails says so."""
    charts, data = [], {}
    for c in contributed(request.app):
        if not _may(request, c.permission):
            continue
        name = _chart_name(c.key)
        try:
            block = dict(await c.data(days, now))
        except Exception:
            log.exception("dashboard chart failed", extra={"chart": c.key})
            block = {"x": [], "series": [], "failed": True}
        charts.append(Chart(name, c.title, c.kind, c.hint, wide=c.kind == "funnel"))
        data[name] = block
    return charts, data


@requires("dashboard:read")
@menu("数据看板", group="", order=5)
async def dashboard_page(request: web.Request) -> web.StreamResponse:
    days = _window(request)
    now = datetime.now(UTC)
    data = await chart_data(days, now=now)
    more, more_data = await contributed_data(request, days, now=now)
    totals = {
        "messages": sum(data["activity"]["series"][0]["data"]),
        # Every advisor's, not only the chart's top 15: the teams' sums cover them all.
        "violations": sum(data["teams"]["series"][0]["data"]),
        "open_cases": data["backlog"]["open"],
    }
    oldest = data["backlog"]["oldest_at"]
    oldest_days = (now - datetime.fromisoformat(oldest)).days if oldest else None
    return render(
        "dashboard.html",
        request,
        {
            "charts": (*CHARTS, *more),
            "data": {**data, **more_data},
            "days": days,
            "windows": WINDOWS,
            "totals": totals,
            "oldest_days": oldest_days,
        },
    )


def _csv_rows(chart: Chart, block: dict[str, Any]) -> list[list[Any]]:
    names = [s["name"] for s in block["series"]]
    head = block.get("x_label") or ("日期" if chart.kind in ("line", "stack") else "项目")
    rows: list[list[Any]] = [[head, *names]]
    for i, x in enumerate(block["x"]):
        rows.append([x, *(s["data"][i] for s in block["series"])])
    return rows


def _csv_handler(chart: Chart) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @requires("dashboard:read")
    async def handler(request: web.Request) -> web.StreamResponse:
        days = _window(request)
        now = datetime.now(UTC)
        block = (await chart_data(days, now=now))[chart.name]
        if chart.kind in ("line", "stack"):
            # Full dates in the file (the chart shows MM-DD to save room).
            today = now.astimezone(dashboard.SHANGHAI).date()
            block = {**block, "x": dashboard.window_days(days=days, today=today)}
        return _csv_response(chart, block, days)

    handler.__name__ = f"dashboard_csv_{chart.name}"
    return handler


def _csv_response(chart: Chart, block: dict[str, Any], days: int) -> web.Response:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(_csv_rows(chart, block))
    # A BOM, so Excel (what the bank's staff open it in) reads the UTF-8 as such.
    body = "\ufeff" + buf.getvalue()
    filename = f"siyu-{chart.name}-{days}d.csv"
    return web.Response(
        body=body.encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _contributed_csv(c: DashboardChart) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    chart = Chart(_chart_name(c.key), c.title, c.kind, c.hint)

    # The chart's own permission guards its file; the dashboard's is checked here too.
    @requires(c.permission or "dashboard:read")
    async def handler(request: web.Request) -> web.StreamResponse:
        if not _may(request, "dashboard:read"):
            raise web.HTTPForbidden()
        days = _window(request)
        block = dict(await c.data(days, datetime.now(UTC)))
        return _csv_response(chart, block, days)

    handler.__name__ = f"dashboard_csv_{chart.name.replace('-', '_')}"
    return handler


def add_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/dashboard", dashboard_page, name="dashboard")
    for chart in CHARTS:
        r.add_get(
            f"/dashboard/{chart.name}.csv", _csv_handler(chart), name=f"dashboard_csv_{chart.name}"
        )
    for c in contributed(app):
        name = _chart_name(c.key)
        r.add_get(f"/dashboard/{name}.csv", _contributed_csv(c), name=f"dashboard_csv_{name}")
