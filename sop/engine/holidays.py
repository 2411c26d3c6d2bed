"""China's statutory holidays and 调休 workdays, from the ``chinesecalendar`` package.

Each year's schedule is set by the State Council's notice (国务院办公厅关于…部分节假日
安排的通知), usually published in November for the year after; it moves days off
around weekends (调休), so a Saturday can be a workday and a Wednesday a day off.
Nobody can compute it: the package ships each year's notice as data, and a year it
does not know is refused here (:class:`HolidayCalendarMissing`) rather than guessed.
Bumping the pinned package (pyproject.toml) after a notice brings the new year in.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import chinese_calendar

__all__ = [
    "HolidayCalendarMissing",
    "covered_years",
    "is_day_off",
    "is_statutory_holiday",
    "is_workday",
]


class HolidayCalendarMissing(LookupError):
    """The holiday calendar has no data for ``year``: nothing is guessed."""

    def __init__(self, year: int) -> None:
        first, last = covered_years()
        super().__init__(
            f"the Chinese holiday calendar (chinesecalendar) has no schedule for {year}; "
            f"it covers {first}–{last}. Upgrade the package once the State Council has "
            f"published {year}'s holiday notice"
        )
        self.year = year


@lru_cache(maxsize=1)
def covered_years() -> tuple[int, int]:
    """The first and last year the installed calendar knows."""
    known = [*chinese_calendar.holidays, *chinese_calendar.workdays]
    return min(known).year, max(known).year


def _check(day: date) -> None:
    first, last = covered_years()
    if not first <= day.year <= last:
        raise HolidayCalendarMissing(day.year)


def is_workday(day: date) -> bool:
    """Whether people work on ``day``: a weekday that is no holiday, or a 调休 weekend day."""
    _check(day)
    return bool(chinese_calendar.is_workday(day))


def is_day_off(day: date) -> bool:
    return not is_workday(day)


def is_statutory_holiday(day: date) -> bool:
    """A day off by the State Council's notice (a festival or a day moved for it),
    as opposed to an ordinary weekend."""
    _check(day)
    on_holiday, name = chinese_calendar.get_holiday_detail(day)
    return bool(on_holiday and name is not None)
