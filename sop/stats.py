"""Results of a campaign, per version and step, from the engine's enrolment and touch rows.

Every figure is one ``GROUP BY`` over indexed columns (``sop_touch`` by campaign and
state, ``sop_enrolment`` by campaign), so a campaign with a million touches answers
in one pass without loading rows.  What the figures mean:

- enrolled: enrolments (a customer re-entering counts again); active / completed / exited.
- planned: touches planned for the step (every state); waiting: not yet sent.
- reminded: touches an advisor was told about (a digest line or WeCom's task).
- sent: WeCom accepted the touch (``sent`` or ``confirmed``); confirmed: the advisor
  confirmed the mass-send and WeCom reported it delivered (get_groupmsg_send_result).
- skipped / failed by reason: the reason code the engine stored.
- replied within 3 days: the customer wrote back within 72 hours of the touch.
- goal reached: enrolments whose goal was detected; opted out: enrolments that ended
  with the customer's (or an operator's) opt-out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from sop.models import Campaign, CampaignStatus, CampaignStep, CampaignVersion, Enrolment

REPLY_WINDOW_DAYS = 3

SKIP_REASON_LABELS = {
    "quiet_hours": "免打扰时段",
    "opted_out": "客户已退订",
    "quota": "群发额度已用完",
    "relation_deleted": "好友关系已解除",
    "unsuitable": "适当性不匹配",
    "compliance": "发送前合规检查未通过",
    "late": "错过发送时间",
    "paused": "活动已暂停",
    "archived": "活动已归档",
    "exited": "客户已退出旅程",
    "superseded": "新版本已替代",
    "holiday": "节假日",
    "mass_send_allowance": "客户当日群发额度已用完",
    "no_welcome_code": "没有欢迎语凭证",
    "holiday_calendar": "缺少该年节假日数据",
    "calendar_missing": "缺少该年节假日数据（到期时重算）",
    "media_unsupported": "暂不支持该素材的群发",
    "step_removed": "步骤已删除",
    "member_quota": "客户经理消息额度已满",
    "not_contact": "已非企业微信好友",
    "cancelled": "已取消",
}
# Why an enrolment ended (``sop_enrolment.exit_reason``).
EXIT_REASON_LABELS = {
    "replied": "客户回复",
    "opted_out": "客户退订",
    "relation_deleted": "好友关系解除",
    "goal": "达成目标",
    "tag_added": "打上退出标签",
    "tag_removed": "移除标签",
    "archived": "活动已归档",
}


def reason_label(reason: str) -> str:
    if reason.startswith("wecom:"):
        return f"企业微信错误 {reason[6:]}"
    if reason.startswith("exited:"):
        return f"客户已退出旅程（{exit_label(reason[7:])}）"
    return SKIP_REASON_LABELS.get(reason, reason or "未注明")


def exit_label(reason: str) -> str:
    return EXIT_REASON_LABELS.get(reason, reason or "未注明")


@dataclass
class StepStats:
    step_id: int
    position: int
    name: str
    delivery: str
    planned: int = 0
    waiting: int = 0
    sending: int = 0
    reminded: int = 0
    sent: int = 0
    confirmed: int = 0
    replied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "position": self.position,
            "name": self.name,
            "delivery": self.delivery,
            "planned": self.planned,
            "waiting": self.waiting,
            "sending": self.sending,
            "reminded": self.reminded,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "replied_within_3d": self.replied,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "failed": dict(sorted(self.failed.items())),
            "failed_total": sum(self.failed.values()),
        }


@dataclass
class VersionStats:
    version: int
    status: str
    enrolled: int = 0
    active: int = 0
    completed: int = 0
    exited: dict[str, int] = field(default_factory=dict)
    goal_reached: int = 0
    steps: list[StepStats] = field(default_factory=list)

    @property
    def opted_out(self) -> int:
        return self.exited.get("opted_out", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "enrolled": self.enrolled,
            "active": self.active,
            "completed": self.completed,
            "exited": dict(sorted(self.exited.items())),
            "goal_reached": self.goal_reached,
            "opted_out": self.opted_out,
            "steps": [s.as_dict() for s in self.steps],
        }


@dataclass
class CampaignStats:
    campaign_id: int
    versions: list[VersionStats]
    # Customers (enrolments) that got at least one touch planned, reminded, sent,
    # confirmed, or answered within 3 days: the funnel counts people, not touches.
    reached: dict[str, int] = field(default_factory=dict)

    def totals(self) -> dict[str, Any]:
        steps = [s for v in self.versions for s in v.steps]
        skipped: dict[str, int] = {}
        failed: dict[str, int] = {}
        for s in steps:
            for k, n in s.skipped.items():
                skipped[k] = skipped.get(k, 0) + n
            for k, n in s.failed.items():
                failed[k] = failed.get(k, 0) + n
        return {
            "enrolled": sum(v.enrolled for v in self.versions),
            "active": sum(v.active for v in self.versions),
            "planned": sum(s.planned for s in steps),
            "reminded": sum(s.reminded for s in steps),
            "sent": sum(s.sent for s in steps),
            "confirmed": sum(s.confirmed for s in steps),
            "replied_within_3d": sum(s.replied for s in steps),
            "goal_reached": sum(v.goal_reached for v in self.versions),
            "opted_out": sum(v.opted_out for v in self.versions),
            "skipped": dict(sorted(skipped.items())),
            "failed": dict(sorted(failed.items())),
        }

    def funnel(self) -> list[tuple[str, str, int]]:
        """``(key, label, customers)`` from enrolment to goal, for the chart and the API."""
        t = self.totals()
        r = self.reached
        return [
            ("enrolled", "入组客户", t["enrolled"]),
            ("planned", "已计划触达", r.get("planned", 0)),
            ("reminded", "已提醒客户经理", r.get("reminded", 0)),
            ("sent", "已发送", r.get("sent", 0)),
            ("confirmed", "企业微信确认送达", r.get("confirmed", 0)),
            ("replied_within_3d", "3 天内回复", r.get("replied", 0)),
            ("goal_reached", "达成目标", t["goal_reached"]),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "totals": self.totals(),
            "funnel": [{"key": k, "label": label, "customers": v} for k, label, v in self.funnel()],
            "versions": [v.as_dict() for v in self.versions],
        }


def _conn() -> BaseDBAsyncClient:
    return Tortoise.get_connection("default")


def _is_pg(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


def _replied_in_window(conn: BaseDBAsyncClient) -> str:
    # A reply counts for the touch it followed within 72 hours of the send (or of the
    # due time for a touch the advisor delivered from a reminder).
    if _is_pg(conn):
        return (
            "t.replied_at IS NOT NULL AND t.replied_at <= "
            f"COALESCE(t.sent_at, t.due_at) + INTERVAL '{REPLY_WINDOW_DAYS} days'"
        )
    return (
        "t.replied_at IS NOT NULL AND julianday(t.replied_at) <= "
        f"julianday(COALESCE(t.sent_at, t.due_at)) + {REPLY_WINDOW_DAYS}"
    )


async def campaign_stats(campaign: Campaign) -> CampaignStats:
    conn = _conn()
    ph = "$1" if _is_pg(conn) else "?"
    versions = await CampaignVersion.filter(campaign_id=campaign.id).order_by("version")
    by_id = {v.id: VersionStats(version=v.version, status=v.status.value) for v in versions}
    steps = await CampaignStep.filter(version_id__in=list(by_id)).order_by("position")
    step_stats: dict[int, StepStats] = {}
    for step in steps:
        one = StepStats(
            step_id=step.id, position=step.position, name=step.name, delivery=step.delivery.value
        )
        step_stats[step.id] = one
        by_id[step.version_id].steps.append(one)  # type: ignore[attr-defined]

    _, rows = await conn.execute_query(
        "SELECT version_id, state, exit_reason, COUNT(*) AS n,"  # noqa: S608 - placeholders and fixed fragments only
        " SUM(CASE WHEN goal_reached_at IS NOT NULL THEN 1 ELSE 0 END) AS goal"
        f" FROM sop_enrolment WHERE campaign_id = {ph}"
        " GROUP BY version_id, state, exit_reason",
        [campaign.id],
    )
    for r in rows:
        v = by_id.get(int(r["version_id"]))
        if v is None:
            continue
        n = int(r["n"])
        v.enrolled += n
        v.goal_reached += int(r["goal"] or 0)
        if r["state"] == "active":
            v.active += n
        elif r["state"] == "completed":
            v.completed += n
        else:
            reason = str(r["exit_reason"] or "")
            v.exited[reason] = v.exited.get(reason, 0) + n

    _, rows = await conn.execute_query(
        "SELECT t.step_id, t.state, t.reason, COUNT(*) AS n,"  # noqa: S608 - placeholders and fixed fragments only
        " SUM(CASE WHEN t.reminded_at IS NOT NULL THEN 1 ELSE 0 END) AS reminded,"
        f" SUM(CASE WHEN {_replied_in_window(conn)} THEN 1 ELSE 0 END) AS replied"
        f" FROM sop_touch t WHERE t.campaign_id = {ph}"
        " GROUP BY t.step_id, t.state, t.reason",
        [campaign.id],
    )
    for r in rows:
        s = step_stats.get(int(r["step_id"]))
        if s is None:
            continue
        n = int(r["n"])
        state = str(r["state"])
        s.planned += n
        s.reminded += int(r["reminded"] or 0)
        s.replied += int(r["replied"] or 0)
        if state in ("planned", "due"):
            s.waiting += n
        elif state == "sending":
            s.sending += n
        elif state in ("sent", "confirmed"):
            s.sent += n
            if state == "confirmed":
                s.confirmed += n
        elif state == "skipped":
            reason = str(r["reason"] or "")
            s.skipped[reason] = s.skipped.get(reason, 0) + n
        elif state == "failed":
            reason = str(r["reason"] or "")
            s.failed[reason] = s.failed.get(reason, 0) + n
    _, rows = await conn.execute_query(
        "SELECT COUNT(DISTINCT t.enrolment_id) AS planned,"  # noqa: S608 - fixed fragments only
        " COUNT(DISTINCT CASE WHEN t.reminded_at IS NOT NULL THEN t.enrolment_id END) AS reminded,"
        " COUNT(DISTINCT CASE WHEN t.state IN ('sent', 'confirmed') THEN t.enrolment_id END)"
        " AS sent,"
        " COUNT(DISTINCT CASE WHEN t.state = 'confirmed' THEN t.enrolment_id END) AS confirmed,"
        f" COUNT(DISTINCT CASE WHEN {_replied_in_window(conn)} THEN t.enrolment_id END)"
        " AS replied"
        f" FROM sop_touch t WHERE t.campaign_id = {ph}",
        [campaign.id],
    )
    reached = {k: int(v or 0) for k, v in dict(rows[0]).items()} if rows else {}
    return CampaignStats(
        campaign_id=campaign.id, versions=[by_id[v.id] for v in versions], reached=reached
    )


async def campaign_counts(campaign_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """For the list: enrolled, still active, touches planned and sent, per campaign."""
    if not campaign_ids:
        return {}
    conn = _conn()
    pg = _is_pg(conn)
    marks = ", ".join(f"${i}" if pg else "?" for i in range(1, len(campaign_ids) + 1))
    out: dict[int, dict[str, int]] = {int(c): {} for c in campaign_ids}
    _, rows = await conn.execute_query(
        "SELECT campaign_id, COUNT(*) AS n,"  # noqa: S608 - placeholders and fixed fragments only
        " SUM(CASE WHEN state = 'active' THEN 1 ELSE 0 END) AS active"
        f" FROM sop_enrolment WHERE campaign_id IN ({marks}) GROUP BY campaign_id",
        list(campaign_ids),
    )
    for r in rows:
        out[int(r["campaign_id"])].update(enrolled=int(r["n"]), active=int(r["active"] or 0))
    _, rows = await conn.execute_query(
        "SELECT campaign_id, COUNT(*) AS n,"  # noqa: S608 - placeholders and fixed fragments only
        " SUM(CASE WHEN state IN ('sent', 'confirmed') THEN 1 ELSE 0 END) AS sent"
        f" FROM sop_touch WHERE campaign_id IN ({marks}) GROUP BY campaign_id",
        list(campaign_ids),
    )
    for r in rows:
        out[int(r["campaign_id"])].update(planned=int(r["n"]), sent=int(r["sent"] or 0))
    return out


# The dashboard's funnel: one per running campaign, in customers (enrolments).
DASHBOARD_STAGES = (
    ("enrolled", "入组客户"),
    ("planned", "已计划触达"),
    ("reminded", "已提醒客户经理"),
    ("sent", "已发送 / 确认"),
    ("replied", "3 天内回复"),
    ("goal", "达成目标"),
)


@dataclass(frozen=True)
class CampaignFunnel:
    campaign_id: int
    name: str
    stages: dict[str, int]

    @property
    def enrolled(self) -> int:
        return self.stages.get("enrolled", 0)


async def active_funnels(*, since: datetime) -> list[CampaignFunnel]:
    """The funnel of every running campaign, over the customers who entered since ``since``.

    Two grouped queries, whatever the number of campaigns: enrolments by campaign
    (through the ``(campaign_id, customer, state)`` index), and the touches of those
    campaigns (``(campaign_id, state)``) joined to their enrolment by primary key for
    the entry time.  The cost grows with the running campaigns' touches in the window,
    not with the history of campaigns that ended.  Largest first.
    """
    campaigns = list(
        await Campaign.filter(status=CampaignStatus.ACTIVE).order_by("id").values_list("id", "name")
    )
    if not campaigns:
        return []
    conn = _conn()
    pg = _is_pg(conn)
    ids = [int(cid) for cid, _ in campaigns]
    marks = ", ".join(f"${i}" if pg else "?" for i in range(1, len(ids) + 1))
    after = f"${len(ids) + 1}" if pg else "?"
    # As the ORM stores the column, so the comparison holds on both databases.
    at = Enrolment._meta.fields_map["entered_at"].to_db_value(since.astimezone(UTC), Enrolment)
    out: dict[int, dict[str, int]] = {cid: {} for cid in ids}
    _, rows = await conn.execute_query(
        "SELECT campaign_id, COUNT(*) AS enrolled,"  # noqa: S608 - placeholders and fixed fragments only
        " SUM(CASE WHEN goal_reached_at IS NOT NULL THEN 1 ELSE 0 END) AS goal"
        f" FROM sop_enrolment WHERE campaign_id IN ({marks}) AND entered_at >= {after}"
        " GROUP BY campaign_id",
        [*ids, at],
    )
    for r in rows:
        out[int(r["campaign_id"])].update(enrolled=int(r["enrolled"]), goal=int(r["goal"] or 0))
    _, rows = await conn.execute_query(
        "SELECT t.campaign_id, COUNT(DISTINCT t.enrolment_id) AS planned,"  # noqa: S608 - placeholders and fixed fragments only
        " COUNT(DISTINCT CASE WHEN t.reminded_at IS NOT NULL THEN t.enrolment_id END) AS reminded,"
        " COUNT(DISTINCT CASE WHEN t.state IN ('sent', 'confirmed') THEN t.enrolment_id END)"
        " AS sent,"
        f" COUNT(DISTINCT CASE WHEN {_replied_in_window(conn)} THEN t.enrolment_id END)"
        " AS replied"
        " FROM sop_touch t JOIN sop_enrolment e ON e.id = t.enrolment_id"
        f" WHERE t.campaign_id IN ({marks}) AND e.entered_at >= {after}"
        " GROUP BY t.campaign_id",
        [*ids, at],
    )
    for r in rows:
        out[int(r["campaign_id"])].update(
            {k: int(r[k] or 0) for k in ("planned", "reminded", "sent", "replied")}
        )
    funnels = [
        CampaignFunnel(
            campaign_id=int(cid),
            name=str(name),
            stages={key: out[int(cid)].get(key, 0) for key, _ in DASHBOARD_STAGES},
        )
        for cid, name in campaigns
    ]
    return sorted(funnels, key=lambda f: (-f.enrolled, f.campaign_id))


CSV_COLUMNS = (
    "version",
    "step",
    "step_name",
    "delivery",
    "planned",
    "waiting",
    "reminded",
    "sent",
    "confirmed",
    "replied_within_3d",
    "skipped",
    "failed",
    "skipped_by_reason",
    "failed_by_reason",
)


def to_csv(stats: CampaignStats) -> str:
    """One row per version and step, then the version's enrolment figures."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for v in stats.versions:
        for s in v.steps:
            d = s.as_dict()
            w.writerow(
                [
                    v.version,
                    s.position,
                    s.name,
                    s.delivery,
                    s.planned,
                    s.waiting,
                    s.reminded,
                    s.sent,
                    s.confirmed,
                    s.replied,
                    d["skipped_total"],
                    d["failed_total"],
                    ";".join(f"{k}={n}" for k, n in d["skipped"].items()),
                    ";".join(f"{k}={n}" for k, n in d["failed"].items()),
                ]
            )
    w.writerow([])
    w.writerow(
        [
            "version",
            "enrolled",
            "active",
            "completed",
            "goal_reached",
            "opted_out",
            "exited_by_reason",
        ]
    )
    for v in stats.versions:
        w.writerow(
            [
                v.version,
                v.enrolled,
                v.active,
                v.completed,
                v.goal_reached,
                v.opted_out,
                ";".join(f"{k}={n}" for k, n in sorted(v.exited.items())),
            ]
        )
    return out.getvalue()
