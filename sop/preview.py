"""The builder's calendar: how many touches the next 30 days would bring, per day.

Due times come from the engine's own rules (``sop.engine.timing``: offsets, clock
times, send windows, weekends and statutory holidays), so the calendar shows what
the scheduler would do.  Who enters, and when, depends on the trigger:

- an audience alone (or a manual enrolment): everyone it selects now, entering today;
- ``attribute_date`` on ``maturity_date`` or ``birthday``: the customers whose date
  falls so that they enter within the window, counted in one grouped scan;
- any other trigger (customer added, a tag, an intent, inactivity): entries cannot be
  known in advance, so the calendar shows one customer entering now — the shape of
  the journey rather than a volume.

Date triggers are assumed to enrol at 08:00 Beijing time on the entry day (the
engine's daily job runs before the send window opens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import Tortoise

from sop.campaigns import check_steps, plan_offsets, zone_of
from sop.engine import holidays, timing
from sop.models import Delivery
from sop.schemas import CampaignIn, StepIn
from tagging import audience as tagging_audience

DAYS = 30
DATE_TRIGGER_ENTRY = time(8, 0)


@dataclass
class CalendarDay:
    day: date
    counts: dict[str, int] = field(default_factory=dict)
    weekend: bool = False
    holiday: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Calendar:
    days: list[CalendarDay]
    basis: str
    error: str = ""
    sample: bool = False
    # Years the holiday calendar lacks that the 30 days reach with a step that skips
    # holidays: planned without the holiday rule there, as the engine plans them.
    missing_years: tuple[int, ...] = ()

    @property
    def notice(self) -> str:
        """What the builder says about the years the calendar lacks (zh-CN), or ""."""
        if not self.missing_years:
            return ""
        years = "、".join(str(y) for y in self.missing_years)
        return (
            f"{years} 年的法定节假日安排尚未载入：这些日子里「跳过节假日」的步骤"
            "按不跳过节假日预估，引擎也这样排期，到期时再核对一次，届时仍未载入则跳过不发。"
            "请 IT 在节假日日历文件（SIYU_SOP__HOLIDAY_FILE）中补充该年安排。"
        )

    @property
    def total(self) -> int:
        return sum(d.total for d in self.days)

    @property
    def peak(self) -> int:
        return max((d.total for d in self.days), default=0)

    def weeks(self) -> list[list[CalendarDay | None]]:
        """The days laid out Monday to Sunday, padded at both ends."""
        if not self.days:
            return []
        cells: list[CalendarDay | None] = [None] * self.days[0].day.weekday() + list(self.days)
        cells += [None] * (-len(cells) % 7)
        return [cells[i : i + 7] for i in range(0, len(cells), 7)]


def _empty(start: date) -> list[CalendarDay]:
    out = []
    for i in range(DAYS):
        d = start + timedelta(days=i)
        try:
            holiday = holidays.is_statutory_holiday(d)
        except holidays.HolidayCalendarMissing:
            holiday = False
        out.append(CalendarDay(day=d, weekend=d.weekday() >= 5, holiday=holiday))
    return out


def _add(
    days: list[CalendarDay],
    steps: Sequence[StepIn],
    entry: datetime,
    n: int,
    tz: ZoneInfo = timing.SHANGHAI,
    *,
    missing: set[int],
) -> None:
    first = days[0].day
    for step, due in zip(steps, plan_offsets(steps, entry, tz, missing=missing), strict=True):
        i = (due.astimezone(tz).date() - first).days
        if 0 <= i < len(days):
            key = step.delivery.value if isinstance(step.delivery, Delivery) else str(step.delivery)
            days[i].counts[key] = days[i].counts.get(key, 0) + n


async def _date_counts(attribute: str, where: str, params: list[Any]) -> dict[str, int]:
    """Customers per value of a date attribute (``YYYY-MM-DD``, or ``MM-DD`` for birthdays)."""
    conn = Tortoise.get_connection("default")
    pg = conn.capabilities.dialect == "postgres"
    name = "maturity_date" if attribute == "maturity_date" else "birthday"
    column = f"(c.attributes ->> '{name}')" if pg else f"json_extract(c.attributes, '$.{name}')"
    if name == "birthday":
        column = f"substr({column}, 6, 5)"
    _, rows = await conn.execute_query(
        f"SELECT {column} AS d, COUNT(*) AS n FROM bot_customer c"  # noqa: S608 - fixed names
        f" WHERE {where} AND {column} IS NOT NULL GROUP BY {column}",
        params,
    )
    return {str(r["d"]): int(r["n"]) for r in rows}


async def calendar(spec: CampaignIn, *, now: datetime | None = None) -> Calendar:
    """The next 30 days (from today, Beijing time) of touches ``spec`` would plan."""
    now = now or datetime.now(UTC)
    tz = zone_of(spec)  # the customers' days, as the engine plans them
    today = now.astimezone(tz).date()
    days = _empty(today)
    if not spec.steps:
        return Calendar(days=days, basis="", error="还没有步骤")
    problems, _ = check_steps(spec)
    timing_problems = [p for p in problems if p.code in ("impossible_timing", "invalid_time")]
    if timing_problems:
        return Calendar(days=days, basis="", error=f"步骤时间有误：{timing_problems[0].message}")
    where: str = "1 = 1"
    params: list[Any] = []
    if spec.audience:
        try:
            node = tagging_audience.parse(spec.audience)
            conn = Tortoise.get_connection("default")
            where, params = await tagging_audience.where_clause(node, conn=conn)
        except tagging_audience.ExpressionError as exc:
            return Calendar(days=days, basis="", error=f"受众表达式有误：{exc.message}")
    trigger = spec.trigger
    missing: set[int] = set()
    try:
        if trigger is None or trigger.kind == "manual":
            n = 0
            if spec.audience:
                n = await tagging_audience.count(tagging_audience.parse(spec.audience))
            _add(days, spec.steps, now, n, tz, missing=missing)
            return Calendar(
                days=days,
                basis=f"受众当前 {n} 人，按今天启用、同时入组估算",
                missing_years=tuple(sorted(missing)),
            )
        if trigger.kind == "attribute_date" and trigger.attribute in ("maturity_date", "birthday"):
            before = trigger.days_before or 0
            counts = await _date_counts(trigger.attribute, where, params)
            for i in range(DAYS):
                entry_day = today + timedelta(days=i)
                target = entry_day + timedelta(days=before)
                key = (
                    target.isoformat()
                    if trigger.attribute == "maturity_date"
                    else target.strftime("%m-%d")
                )
                n = counts.get(key, 0)
                if n:
                    entry = datetime.combine(entry_day, DATE_TRIGGER_ENTRY, tzinfo=timing.SHANGHAI)
                    _add(days, spec.steps, max(entry, now), n, tz, missing=missing)
            label = "到期日" if trigger.attribute == "maturity_date" else "生日"
            return Calendar(
                days=days,
                basis=f"按客户已导入的{label}（提前 {before} 天入组，每天 08:00 入组）估算",
                missing_years=tuple(sorted(missing)),
            )
        _add(days, spec.steps, now, 1, tz, missing=missing)
        return Calendar(
            days=days,
            basis="入组时间取决于事件，无法预估人数：图中为此刻入组的一位客户的触达日程",
            sample=True,
            missing_years=tuple(sorted(missing)),
        )
    except timing.TimingError as exc:
        return Calendar(days=days, basis="", error=exc.message)
