"""The operator's holiday calendar: a year the chinesecalendar package does not know yet
(the State Council's notice is out before the package is), or a correction to one it
does.  A bad file is refused whole, naming the entry, and changes nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from siyu.cli import main as siyu_main
from sop.engine import holidays
from sop.engine.timing import SHANGHAI, StepTiming, due_at

# A made-up schedule for the year after the package's last (dates are what a notice
# would fix; the tests need only that they differ from plain weekends).
_, LAST = holidays.covered_years()
NEXT = LAST + 1


def _next_year_file(tmp_path: Path, **extra: Any) -> Path:
    """NEXT's New Year on the first weekday of January (plus the day after), and the
    Saturday after that worked instead."""
    jan = [date(NEXT, 1, d) for d in range(1, 15)]
    first_weekday = next(d for d in jan if d.weekday() < 5)
    off = [first_weekday, date(NEXT, 1, first_weekday.day + 1)]
    saturday = next(d for d in jan if d.weekday() == 5 and d > off[1])
    body = {
        str(NEXT): {
            "holidays": {d.isoformat(): "元旦" for d in off},
            "workdays": [saturday.isoformat()],
        },
        **extra,
    }
    path = tmp_path / "holidays.json"
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _package_only() -> Iterator[None]:
    holidays.configure(None)
    yield
    holidays.configure(None)


def sh(at: date, hh: int) -> datetime:
    return datetime.combine(at, time(hh), tzinfo=SHANGHAI)


def test_a_year_from_the_file_is_planned_with_its_days_off(tmp_path: Path) -> None:
    path = _next_year_file(tmp_path)
    spec = json.loads(path.read_text(encoding="utf-8"))[str(NEXT)]
    off = [date.fromisoformat(d) for d in spec["holidays"]]
    (saturday,) = (date.fromisoformat(d) for d in spec["workdays"])
    timing = StepTiming(offset_days=1, at_time=time(10), skip_weekends=True, skip_holidays=True)
    before = datetime.combine(off[0], time(11), tzinfo=SHANGHAI) - timedelta(days=1)
    # Without the file the year is refused, never guessed.
    with pytest.raises(holidays.HolidayCalendarMissing) as err:
        due_at(before.astimezone(UTC), timing)
    assert "SIYU_SOP__HOLIDAY_FILE" in str(err.value)

    holidays.configure(holidays.read_calendar_file(path))
    assert holidays.covered_years()[1] == NEXT
    assert holidays.year_sources()[NEXT] == "file"
    assert all(holidays.is_statutory_holiday(d) and not holidays.is_workday(d) for d in off)
    assert holidays.is_workday(saturday) and not holidays.is_statutory_holiday(saturday)
    # A plain weekday and a plain Sunday of the file's year.
    sunday = next(date(NEXT, 1, d) for d in range(1, 15) if date(NEXT, 1, d).weekday() == 6)
    assert not holidays.is_workday(sunday) and not holidays.is_statutory_holiday(sunday)
    # The day before the holiday + 1 day lands on the first workday after it.
    due = due_at(before.astimezone(UTC), timing).astimezone(SHANGHAI)
    after = off[-1].toordinal() + 1
    first_workday = next(
        date.fromordinal(n)
        for n in range(after, after + 10)
        if holidays.is_workday(date.fromordinal(n))
    )
    assert due == sh(first_workday, 10)


def test_the_file_corrects_a_year_the_package_knows(tmp_path: Path) -> None:
    # 1 October of the package's last year is 国庆 by the package; a file that lists
    # that year alone is the year's whole schedule.
    day = date(LAST, 10, 1)
    assert not holidays.is_workday(day)
    monday = next(date(LAST, 3, d) for d in range(1, 8) if date(LAST, 3, d).weekday() == 0)
    path = tmp_path / "fix.json"
    path.write_text(
        json.dumps({str(LAST): {"holidays": {monday.isoformat(): "临时调整"}, "workdays": []}}),
        encoding="utf-8",
    )
    holidays.configure(holidays.read_calendar_file(path))
    assert holidays.year_sources()[LAST] == "file"
    assert not holidays.is_workday(monday) and holidays.is_statutory_holiday(monday)
    assert holidays.is_workday(day)  # no longer a holiday: the file says so
    # Other years still come from the package.
    assert not holidays.is_workday(date(LAST - 1, 10, 1))


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{not json", "not JSON"),
        ("[]", "not empty"),
        ({"27": {"holidays": {"2027-01-01": "元旦"}}}, "each key is a year"),
        (
            {"2027": {"holidays": {"2028-01-01": "元旦"}}},
            "2027.holidays: 2028-01-01 is not a day of 2027",
        ),
        ({"2027": {"holidays": {"2027-02-30": "春节"}}}, "'2027-02-30' is not a date"),
        ({"2027": {"holidays": {"2027-1-1": "元旦"}}}, "'2027-1-1' is not a date (YYYY-MM-DD)"),
        ({"2027": {"holidays": {}}}, "2027.holidays"),
        ({"2027": {"holidays": {"2027-01-01": ""}}}, "the festival's name"),
        (
            {"2027": {"holidays": {"2027-01-01": "元旦"}, "workdays": ["2027-01-04"]}},
            "is a weekday",
        ),
        (
            {"2027": {"holidays": {"2027-01-02": "元旦"}, "workdays": ["2027-01-02"]}},
            "both a holiday and a workday",
        ),
        (
            {
                "2027": {
                    "holidays": {"2027-01-01": "元旦"},
                    "workdays": ["2027-01-09", "2027-01-09"],
                }
            },
            "listed twice",
        ),
        (
            {"2027": {"holidays": {"2027-01-01": "元旦"}, "extra": 1}},
            '"holidays" and "workdays" only',
        ),
        ('{"2027": {"holidays": {"2027-01-01": "元旦", "2027-01-01": "元旦"}}}', "listed twice"),
    ],
)
def test_a_bad_file_is_refused_whole_naming_the_entry(
    tmp_path: Path, body: object, said: str
) -> None:
    good = _next_year_file(tmp_path)
    holidays.configure(holidays.read_calendar_file(good))
    before = holidays.year_sources()
    path = tmp_path / "bad.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
    with pytest.raises(holidays.HolidayFileError) as err:
        holidays.read_calendar_file(path)
    assert said in str(err.value) and str(path) in str(err.value)
    assert holidays.year_sources() == before  # what was in use stays in use
    with pytest.raises(holidays.HolidayFileError):
        holidays.read_calendar_file(tmp_path / "absent.json")


def test_start_warns_when_the_calendar_runs_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sop.engine.holidays"):
        assert holidays.load_configured("", today=date(LAST, 11, 20)) == {}
    assert f"ends on {LAST}-12-31" in caplog.text and str(NEXT) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sop.engine.holidays"):
        years = holidays.load_configured(str(_next_year_file(tmp_path)), today=date(LAST, 11, 20))
    assert set(years) == {NEXT} and caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="sop.engine.holidays"):
        holidays.load_configured("", today=date(LAST, 6, 1))
    assert caplog.text == ""


def test_the_command_checks_a_file_before_it_is_deployed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path / "data"))
    good = _next_year_file(tmp_path)
    assert siyu_main(["campaigns", "calendar", "--file", str(good)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["covered"].endswith(str(NEXT)) and out["years"][str(NEXT)] == "file"
    assert out["file_years"][str(NEXT)]["holidays"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({str(NEXT): {"holidays": {f"{NEXT}-13-01": "x"}}}), encoding="utf-8")
    assert siyu_main(["campaigns", "calendar", "--file", str(bad)]) == 1
    assert "is not a date" in capsys.readouterr().err
    # The file the settings name is checked when --file is not given.
    monkeypatch.setenv("SIYU_SOP__HOLIDAY_FILE", str(bad))
    assert siyu_main(["campaigns", "calendar"]) == 1
    assert holidays.year_sources().get(NEXT) is None  # nothing left configured


async def test_the_builders_calendar_plans_a_missing_year_as_the_engine_does(
    tmp_path: Path,
) -> None:
    """30 days from mid-December reach a year the package lacks: the preview no longer
    fails on it (it said so in English and drew nothing) — those days are planned
    without the holiday rule, as the engine plans them, and a zh-CN note says so; with
    the year in the calendar file the note goes and the holidays are kept."""
    from sop.preview import calendar
    from sop.schemas import CampaignIn

    spec = CampaignIn.model_validate(
        {
            "name": "年末",
            "trigger": {"kind": "customer_added"},
            "steps": [
                {
                    "delivery": "reminder",
                    "offset_days": days,
                    "at_time": "10:00",
                    "skip_holidays": True,
                    "content": {"text": "您好"},
                }
                for days in (1, 12)
            ],
        }
    )
    now = datetime(LAST, 12, 20, 3, 0, tzinfo=UTC)
    cal = await calendar(spec, now=now)
    assert cal.error == "" and cal.total == 2
    assert cal.missing_years == (NEXT,)
    # The second touch, 12 days after entry, is planned on New Year's Day itself.
    assert [d.day for d in cal.days if d.total][-1] == date(NEXT, 1, 1)
    assert f"{NEXT} 年的法定节假日安排尚未载入" in cal.notice
    assert "SIYU_SOP__HOLIDAY_FILE" in cal.notice

    path = _next_year_file(tmp_path)
    off = sorted(json.loads(path.read_text(encoding="utf-8"))[str(NEXT)]["holidays"])
    holidays.configure(holidays.read_calendar_file(path))
    known = await calendar(spec, now=now)
    assert known.error == "" and known.total == 2 and known.notice == ""
    drawn = {d.day.isoformat() for d in known.days if d.holiday}
    assert set(off) & {d.day.isoformat() for d in known.days} <= drawn
    # With the year known, it moves past the file's holidays (to the first day after).
    due = [d.day.isoformat() for d in known.days if d.total]
    assert not set(due) & set(off)
    assert due[-1] == (date.fromisoformat(max(off)) + timedelta(days=1)).isoformat()
