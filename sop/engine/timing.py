"""When a step's touch is due: pure functions of an anchor time and the step's timing.

Everything a customer sees happens in customer-local time: the campaign version's time
zone (``CampaignVersion.timezone``, an IANA name, Asia/Shanghai unless the version says
otherwise — an institution's customers abroad, a Hong Kong desk), carried by
:class:`StepTiming` as ``tz``.  Datetimes in and out are timezone-aware; callers store
them in UTC.  Statutory holidays are mainland China's whatever the zone.

The order of the rules, and why:

1. **Offset** from the anchor (the enrolment's entry, or the previous step's touch):
   ``+N days`` at a clock time (``at_time``, customer-local) or ``+N days +M minutes``.
   A clock time already past on the anchor's day moves to the next day: "+0 days at
   10:00" for someone who entered at 15:00 means tomorrow morning, not a touch in the past.
2. **Send window** (``window_start``–``window_end``, default 08:00–21:00 — the quiet
   hours 21:00–08:00 of 《银行业金融机构营销行为规范》-style rules and of common
   courtesy): a time before the window moves to its start that day, one at or after
   its end to the next day's start.
3. **Days off**: ``skip_weekends`` skips Saturdays and Sundays; ``skip_holidays`` skips
   the State Council's statutory holidays; with both, only official workdays remain —
   so a 调休 Saturday is a workday and the Wednesday of 国庆 is not.  A skipped day
   moves the touch to the next allowed day, at ``at_time`` when the step has one, else
   at the window's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sop.engine import holidays

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_OFFSET_DAYS",
    "SHANGHAI",
    "StepTiming",
    "TimingError",
    "due_at",
    "in_window",
    "is_late",
    "next_open",
    "skip_reason",
    "zone",
]

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_WINDOW = (time(8, 0), time(21, 0))
#: A journey longer than a year is a mistake in the builder, not a plan.
MAX_OFFSET_DAYS = 366
#: How far ahead a search for an allowed day looks: the longest run of days off in
#: China (春节 with its 调休) is 9 days; a month means the step allows no day at all.
_MAX_DAYS_SEARCHED = 31


class TimingError(ValueError):
    """A step's timing that can never produce a touch (checked when a campaign is saved)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StepTiming:
    """A step's timing fields, as ``CampaignStep`` stores them."""

    offset_days: int = 0
    offset_minutes: int = 0
    at_time: time | None = None
    window_start: time = DEFAULT_WINDOW[0]
    window_end: time = DEFAULT_WINDOW[1]
    skip_weekends: bool = False
    skip_holidays: bool = False
    #: Customer-local time: clock times, windows and days are read in this zone.
    tz: ZoneInfo = SHANGHAI

    def check(self) -> None:
        """Raise :class:`TimingError` naming the field when the timing is impossible."""
        if not 0 <= self.offset_days <= MAX_OFFSET_DAYS:
            raise TimingError("offset_days", f"offset_days must be 0..{MAX_OFFSET_DAYS}")
        if not 0 <= self.offset_minutes < 24 * 60 * MAX_OFFSET_DAYS:
            raise TimingError("offset_minutes", "offset_minutes must be 0 or more")
        if self.at_time is not None and self.offset_minutes:
            raise TimingError(
                "offset_minutes", "a step has a clock time (at_time) or an offset in minutes"
            )
        if self.window_start >= self.window_end:
            raise TimingError(
                "window_end",
                "the send window must end after it starts on the same day "
                f"({self.window_start:%H:%M}–{self.window_end:%H:%M})",
            )
        if self.at_time is not None and not self.window_start <= self.at_time < self.window_end:
            raise TimingError(
                "at_time",
                f"{self.at_time:%H:%M} is outside the send window "
                f"{self.window_start:%H:%M}–{self.window_end:%H:%M}",
            )


def zone(name: str | None) -> ZoneInfo:
    """The zone an IANA name names (``ValueError`` for one the zone database lacks)."""
    if not name:
        return SHANGHAI
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        # ZoneInfoNotFoundError is a KeyError; a malformed key is a ValueError.
        raise ValueError(f"unknown time zone {name!r}") from None


def _local(at: datetime, tz: ZoneInfo) -> datetime:
    if at.tzinfo is None:
        raise ValueError("timing needs timezone-aware datetimes")
    return at.astimezone(tz)


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    # A clock time a DST change skips lands past the gap (fold 0, normalised).
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC).astimezone(tz)


def skip_reason(day: date, timing: StepTiming) -> str | None:
    """Why ``day`` is not allowed for the step (``weekend``/``holiday``), or None.

    Raises :class:`holidays.HolidayCalendarMissing` for a year the calendar lacks when
    the step skips holidays.
    """
    if timing.skip_holidays:
        if timing.skip_weekends:
            return None if holidays.is_workday(day) else "day_off"
        if holidays.is_statutory_holiday(day):
            return "holiday"
        return None
    if timing.skip_weekends and day.weekday() >= 5:
        return "weekend"
    return None


def next_open(at: datetime, timing: StepTiming, *, clock: time | None = None) -> datetime:
    """The first moment at or after ``at`` inside the window on an allowed day.

    ``clock`` is where a moved touch lands on a later day (the step's ``at_time``);
    without it, the window's start.
    """
    tz = timing.tz
    local = _local(at, tz)
    land = clock or timing.window_start
    if local.timetz().replace(tzinfo=None) < timing.window_start:
        local = _at(local.date(), max(land, timing.window_start), tz)
    elif local.timetz().replace(tzinfo=None) >= timing.window_end:
        local = _at(local.date() + timedelta(days=1), land, tz)
    for _ in range(_MAX_DAYS_SEARCHED):
        if skip_reason(local.date(), timing) is None:
            return local.astimezone(UTC)
        local = _at(local.date() + timedelta(days=1), land, tz)
    raise TimingError("skip_holidays", f"no allowed day within {_MAX_DAYS_SEARCHED} days")


def due_at(anchor: datetime, timing: StepTiming) -> datetime:
    """When the step's touch is due, from ``anchor`` (UTC, aware)."""
    tz = timing.tz
    local = _local(anchor, tz)
    if timing.at_time is not None:
        day = local.date() + timedelta(days=timing.offset_days)
        candidate = _at(day, timing.at_time, tz)
        if candidate < local:
            candidate = _at(day + timedelta(days=1), timing.at_time, tz)
    else:
        candidate = local + timedelta(days=timing.offset_days, minutes=timing.offset_minutes)
    return next_open(candidate, timing, clock=timing.at_time)


def in_window(at: datetime, timing: StepTiming) -> bool:
    """Whether ``at`` is a moment the step may send (window, allowed day)."""
    return next_open(at, timing) == at.astimezone(UTC)


def is_late(due: datetime, now: datetime, *, late_after: timedelta) -> bool:
    """A touch not sent within ``late_after`` of its due time is stale: skipped, not sent."""
    return now > due + late_after
