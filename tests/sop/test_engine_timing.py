"""Step timing: offsets, clock times, send windows, weekends, holidays and 调休."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sop.engine import holidays
from sop.engine.timing import SHANGHAI, StepTiming, TimingError, due_at, in_window, next_open


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SHANGHAI)


def local(at: datetime) -> datetime:
    return at.astimezone(SHANGHAI)


def test_plus_one_day_at_ten_is_customer_local() -> None:
    # Entered 2026-09-14 23:30 Beijing (15:30 UTC): +1 day at 10:00 is the 15th, 10:00 Beijing.
    got = due_at(
        datetime(2026, 9, 14, 15, 30, tzinfo=UTC), StepTiming(offset_days=1, at_time=time(10))
    )
    assert local(got) == sh(2026, 9, 15, 10)
    assert got.tzinfo is not None


def test_a_clock_time_already_past_moves_to_the_next_day() -> None:
    got = due_at(sh(2026, 9, 14, 15), StepTiming(offset_days=0, at_time=time(10)))
    assert local(got) == sh(2026, 9, 15, 10)


def test_quiet_hours_move_a_touch_into_the_next_window() -> None:
    timing = StepTiming(offset_minutes=30)
    # 20:45 + 30 min = 21:15: quiet; the next window opens at 08:00 the next day.
    assert local(due_at(sh(2026, 9, 14, 20, 45), timing)) == sh(2026, 9, 15, 8)
    # 02:00 + 30 min: before the window, same day 08:00.
    assert local(due_at(sh(2026, 9, 15, 2), timing)) == sh(2026, 9, 15, 8)
    # Inside the window: unchanged.
    assert local(due_at(sh(2026, 9, 15, 9), timing)) == sh(2026, 9, 15, 9, 30)


def test_custom_window() -> None:
    timing = StepTiming(window_start=time(9, 30), window_end=time(17, 0))
    assert local(due_at(sh(2026, 9, 15, 17, 0), timing)) == sh(2026, 9, 16, 9, 30)


def test_weekends_skipped() -> None:
    timing = StepTiming(offset_days=1, at_time=time(10), skip_weekends=True)
    # Friday 2026-09-18 +1 day = Saturday: moved to Monday at 10:00.
    assert local(due_at(sh(2026, 9, 18, 11), timing)) == sh(2026, 9, 21, 10)


def test_national_day_and_its_tiaoxiu_saturday() -> None:
    workdays = StepTiming(offset_days=1, at_time=time(10), skip_weekends=True, skip_holidays=True)
    # 30 September + 1 day = 1 October: 国庆 runs to 7 October; the 8th is a Thursday workday.
    assert local(due_at(sh(2026, 9, 30, 11), workdays)) == sh(2026, 10, 8, 10)
    # Friday 9 October + 1 day = Saturday 10 October, a 调休 workday: kept.
    assert local(due_at(sh(2026, 10, 9, 11), workdays)) == sh(2026, 10, 10, 10)
    # Plain weekend skipping knows nothing of 调休: Saturday is skipped.
    weekends = StepTiming(offset_days=1, at_time=time(10), skip_weekends=True)
    assert local(due_at(sh(2026, 10, 9, 11), weekends)) == sh(2026, 10, 12, 10)


def test_holidays_only_keeps_ordinary_weekends() -> None:
    timing = StepTiming(offset_days=1, at_time=time(10), skip_holidays=True)
    # Mid-Autumn 2026 is Friday 25 to Sunday 27 September: moved to Monday the 28th.
    assert local(due_at(sh(2026, 9, 24, 11), timing)) == sh(2026, 9, 28, 10)
    # Saturday 12 September is an ordinary weekend, and this step does not skip those.
    assert local(due_at(sh(2026, 9, 11, 11), timing)) == sh(2026, 9, 12, 10)


def test_a_year_the_calendar_lacks_is_refused_not_guessed() -> None:
    first, last = holidays.covered_years()
    assert first <= 2026 <= last
    missing = last + 1
    with pytest.raises(holidays.HolidayCalendarMissing) as err:
        due_at(sh(missing, 3, 2, 9), StepTiming(skip_holidays=True))
    assert str(missing) in str(err.value) and "chinesecalendar" in str(err.value)
    # Without holiday skipping, the year needs no calendar.
    assert local(due_at(sh(missing, 3, 2, 9), StepTiming())) == sh(missing, 3, 2, 9)


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        (StepTiming(window_start=time(21), window_end=time(8)), "window_end"),
        (StepTiming(at_time=time(22)), "at_time"),
        (StepTiming(at_time=time(10), offset_minutes=5), "offset_minutes"),
        (StepTiming(offset_days=-1), "offset_days"),
        (StepTiming(offset_days=400), "offset_days"),
    ],
)
def test_impossible_timing_is_named(timing: StepTiming, field: str) -> None:
    with pytest.raises(TimingError) as err:
        timing.check()
    assert err.value.field == field


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(datetime(2026, 9, 14, 10), StepTiming())


# ---------------------------------------------------------------- properties

anchors = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 11, 30), timezones=st.just(UTC)
)
clock_times = st.times(min_value=time(8), max_value=time(20, 59))
timings = st.builds(
    StepTiming,
    offset_days=st.integers(0, 20),
    at_time=st.one_of(st.none(), clock_times),
    skip_weekends=st.booleans(),
    skip_holidays=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(anchor=anchors, timing=timings)
def test_due_is_never_before_the_offset_and_always_allowed(
    anchor: datetime, timing: StepTiming
) -> None:
    timing.check()
    due = due_at(anchor, timing)
    at = local(due)
    # Never earlier than the offset asks.
    assert due >= anchor
    if timing.at_time is None:
        assert due >= anchor + timedelta(days=timing.offset_days)
    else:
        assert at.date() >= local(anchor).date() + timedelta(days=timing.offset_days)
    # Inside the window, never in quiet hours.
    assert time(8) <= at.time() < time(21)
    # On an allowed day.
    if timing.skip_weekends and not timing.skip_holidays:
        assert at.weekday() < 5
    if timing.skip_weekends and timing.skip_holidays:
        assert holidays.is_workday(at.date())
    if timing.skip_holidays and not timing.skip_weekends:
        assert not holidays.is_statutory_holiday(at.date())
    if timing.at_time is not None:
        assert at.time() == timing.at_time
    assert in_window(due, timing)


@settings(max_examples=300, deadline=None)
@given(anchor=anchors, timing=timings)
def test_due_is_the_earliest_allowed_moment(anchor: datetime, timing: StepTiming) -> None:
    """No allowed day between the offset's day and the due day was passed over."""
    due = local(due_at(anchor, timing))
    start = local(anchor).date() + timedelta(days=timing.offset_days)
    day = start
    while day < due.date():
        moment = datetime.combine(day, timing.at_time or time(8), tzinfo=SHANGHAI)
        skipped = next_open(moment, timing) != moment.astimezone(UTC)
        late_same_day = moment < local(anchor) + timedelta(days=timing.offset_days)
        assert skipped or late_same_day, f"{day} was allowed but passed over"
        day += timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(anchor=anchors, timing=timings)
def test_next_open_is_idempotent(anchor: datetime, timing: StepTiming) -> None:
    once = next_open(anchor, timing)
    assert next_open(once, timing) == once
    assert once >= anchor
