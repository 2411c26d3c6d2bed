"""China's statutory holidays and 调休 workdays: the ``chinesecalendar`` package, and the
operator's own calendar file for the years it adds or corrects.

Each year's schedule is set by the State Council's notice (国务院办公厅关于…部分节假日
安排的通知), usually published in November for the year after; it moves days off
around weekends (调休), so a Saturday can be a workday and a Wednesday a day off.
Nobody can compute it: the package ships each year's notice as data, and a year known
to neither the package nor the operator's file is refused here
(:class:`HolidayCalendarMissing`) rather than guessed.

A bank cannot wait for a package release once the notice is out: IT writes the year
into a calendar file (``SIYU_SOP__HOLIDAY_FILE``, JSON; ``docs/sop-engine.md``)::

    {"2027": {"holidays": {"2027-01-01": "元旦", …}, "workdays": ["2027-02-20", …]}}

A year in the file is the file's alone (weekdays work but its holidays; weekends are
off but its workdays); other years come from the package.  The file is checked whole
when it is read (:func:`read_calendar_file`): a wrong date, a day listed twice, a
"workday" that is no weekend day — the process refuses to start, naming the entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import chinese_calendar

from core.settings import SettingsError

__all__ = [
    "HolidayCalendarMissing",
    "HolidayFileError",
    "YearCalendar",
    "configure",
    "covered_years",
    "is_day_off",
    "is_statutory_holiday",
    "is_workday",
    "load_configured",
    "read_calendar_file",
    "year_sources",
]


@dataclass(frozen=True)
class YearCalendar:
    """One year of the operator's file: days off by the notice (with the festival's
    name) and the weekend days worked instead (调休)."""

    year: int
    holidays: Mapping[date, str]
    workdays: frozenset[date]


class HolidayFileError(SettingsError, ValueError):
    """The operator's calendar file cannot be used; the message names the entry (a
    process starting with it stops with this as a configuration error)."""


class HolidayCalendarMissing(LookupError):
    """The holiday calendar has no data for ``year``: nothing is guessed."""

    def __init__(self, year: int) -> None:
        first, last = _package_years()
        extra = sorted(_operator)
        added = f" and the calendar file adds {', '.join(map(str, extra))}" if extra else ""
        super().__init__(
            f"the Chinese holiday calendar has no schedule for {year}: the chinesecalendar "
            f"package covers {first}–{last}{added}. Once the State Council has published "
            f"{year}'s holiday notice, add the year to the file SIYU_SOP__HOLIDAY_FILE "
            f"names (docs/sop-engine.md) or upgrade the package"
        )
        self.year = year


log = logging.getLogger(__name__)
# Warn at start when the calendar ends within this long: steps that skip holidays
# would soon be planned without them (reason ``calendar_missing``).
WARN_AHEAD = timedelta(days=60)

# The operator's years (empty until ``configure``): they win over the package's.
_operator: dict[int, YearCalendar] = {}


def configure(years: Mapping[int, YearCalendar] | None) -> None:
    """Use the operator's calendar (from :func:`read_calendar_file`); None: the package alone."""
    _operator.clear()
    _operator.update(years or {})


@lru_cache(maxsize=1)
def _package_years() -> tuple[int, int]:
    known = [*chinese_calendar.holidays, *chinese_calendar.workdays]
    return min(known).year, max(known).year


def covered_years() -> tuple[int, int]:
    """The first and last year known (the package's range, extended by the file's years
    that follow on from it)."""
    first, last = _package_years()
    while last + 1 in _operator:
        last += 1
    return first, last


def year_sources() -> dict[int, str]:
    """Every year known and where it comes from: ``"package"`` or ``"file"``."""
    first, last = _package_years()
    found = {y: "package" for y in range(first, last + 1)}
    found.update({y: "file" for y in _operator})
    return dict(sorted(found.items()))


def _known(day: date) -> YearCalendar | None:
    """The operator's year for ``day``, None for a package year; refuses an unknown year."""
    year = _operator.get(day.year)
    if year is not None:
        return year
    first, last = _package_years()
    if not first <= day.year <= last:
        raise HolidayCalendarMissing(day.year)
    return None


def is_workday(day: date) -> bool:
    """Whether people work on ``day``: a weekday that is no holiday, or a 调休 weekend day."""
    year = _known(day)
    if year is None:
        return bool(chinese_calendar.is_workday(day))
    if day in year.holidays:
        return False
    return day.weekday() < 5 or day in year.workdays


def is_day_off(day: date) -> bool:
    return not is_workday(day)


def is_statutory_holiday(day: date) -> bool:
    """A day off by the State Council's notice (a festival or a day moved for it),
    as opposed to an ordinary weekend."""
    year = _known(day)
    if year is None:
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
        return bool(on_holiday and name is not None)
    return day in year.holidays


def _day(raw: object, year: int, where: str) -> date:
    if not isinstance(raw, str):
        raise HolidayFileError(f"{where}: a date is written YYYY-MM-DD, not {raw!r}")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise HolidayFileError(f"{where}: {raw!r} is not a date (YYYY-MM-DD)") from None
    if len(raw) != 10 or day.year != year:
        raise HolidayFileError(f"{where}: {raw} is not a day of {year} written YYYY-MM-DD")
    return day


def _year(key: str, body: object) -> YearCalendar:
    if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) == 4):
        raise HolidayFileError(f'{key!r}: each key is a year, e.g. "2027"')
    year = int(key)
    if not isinstance(body, dict) or set(body) - {"holidays", "workdays"}:
        raise HolidayFileError(f'{key}: an object with "holidays" and "workdays" only')
    raw_holidays = body.get("holidays", {})
    raw_workdays = body.get("workdays", [])
    if not isinstance(raw_holidays, dict) or not raw_holidays:
        raise HolidayFileError(f'{key}.holidays: an object {{"YYYY-MM-DD": "节日名"}}, not empty')
    if not isinstance(raw_workdays, list):
        raise HolidayFileError(f'{key}.workdays: a list of "YYYY-MM-DD" weekend days worked')
    holidays: dict[date, str] = {}
    for raw, name in raw_holidays.items():
        day = _day(raw, year, f"{key}.holidays")
        if not isinstance(name, str) or not name.strip() or len(name) > 20:
            raise HolidayFileError(f"{key}.holidays.{raw}: the festival's name (1–20 characters)")
        holidays[day] = name.strip()
    workdays: set[date] = set()
    for raw in raw_workdays:
        day = _day(raw, year, f"{key}.workdays")
        if day in workdays:
            raise HolidayFileError(f"{key}.workdays: {raw} is listed twice")
        if day.weekday() < 5:
            raise HolidayFileError(
                f"{key}.workdays: {raw} is a weekday; list only the weekend days worked (调休)"
            )
        if day in holidays:
            raise HolidayFileError(f"{key}: {raw} is both a holiday and a workday")
        workdays.add(day)
    return YearCalendar(year=year, holidays=holidays, workdays=frozenset(workdays))


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise HolidayFileError(f"{k} is listed twice")
    return dict(pairs)


def read_calendar_file(path: str | Path) -> dict[int, YearCalendar]:
    """The operator's calendar file, checked whole: every problem raises
    :class:`HolidayFileError` naming the file and the entry; nothing is half-read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HolidayFileError(f"holiday calendar {p}: cannot be read ({exc})") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_repeats)
    except HolidayFileError as exc:
        raise HolidayFileError(f"holiday calendar {p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise HolidayFileError(f"holiday calendar {p}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise HolidayFileError(f'holiday calendar {p}: an object {{"2027": {{…}}}}, not empty')
    try:
        years = [_year(key, body) for key, body in raw.items()]
    except HolidayFileError as exc:
        raise HolidayFileError(f"holiday calendar {p}: {exc}") from None
    return {y.year: y for y in years}


def load_configured(path: str, *, today: date | None = None) -> dict[int, YearCalendar]:
    """The calendar file ``SIYU_SOP__HOLIDAY_FILE`` names ("" = none), read and checked
    (a bad file raises: the process does not start on it); logs which years it adds,
    and warns when the calendar as a whole ends within :data:`WARN_AHEAD`."""
    years = read_calendar_file(path) if path else {}
    if years:
        log.info("holiday calendar: %s adds %s", path, ", ".join(map(str, sorted(years))))
    today = today or datetime.now(UTC).date()
    first, last = _package_years()
    end = last
    while end + 1 in years:
        end += 1
    if date(end, 12, 31) - today < WARN_AHEAD:
        log.warning(
            "holiday calendar ends on %s-12-31: steps that skip holidays after it are "
            "planned without them; add %s to the calendar file (SIYU_SOP__HOLIDAY_FILE) "
            "once the State Council's notice is out",
            end,
            end + 1,
        )
    return years
