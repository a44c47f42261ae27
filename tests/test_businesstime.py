"""Business time: split days, time zones, the changes of the clocks, public holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.businesstime import ALWAYS, BusinessHours, CalendarError, format_working, parse_week

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessHours("Europe/Berlin", parse_week("mon-fri 09:00-18:00"))
SPLIT = BusinessHours(
    "Europe/Berlin",
    parse_week("mon-fri 09:00-12:30,13:30-18:00; sat 10:00-14:00"),
    holidays="DE/BY",
    extra_holidays=frozenset({date(2026, 12, 24)}),
)
NEW_YORK = BusinessHours("America/New_York", parse_week("mon-sun 08:00-20:00"), holidays="US")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc,arg-type]


def test_friday_evening_is_due_on_monday() -> None:
    # Fri 4 Dec 2026, 17:55: five minutes on Friday, 3 h 55 min on Monday.
    due = OFFICE.add_working_time(berlin(2026, 12, 4, 17, 55), timedelta(hours=4))
    assert due == berlin(2026, 12, 7, 12, 55)


def test_a_holiday_on_monday_moves_it_to_tuesday() -> None:
    # Whit Monday 17 May 2027 is a public holiday in Bavaria.
    bavaria = BusinessHours("Europe/Berlin", OFFICE.week, holidays="DE/BY")
    due = bavaria.add_working_time(berlin(2027, 5, 14, 17, 55), timedelta(hours=4))
    assert due == berlin(2027, 5, 18, 12, 55)


def test_an_extra_date_is_a_day_off_too() -> None:
    off = BusinessHours("Europe/Berlin", OFFICE.week, extra_holidays=frozenset({date(2026, 12, 7)}))
    assert off.add_working_time(berlin(2026, 12, 4, 17, 55), timedelta(hours=4)) == berlin(
        2026, 12, 8, 12, 55
    )


def test_split_days_skip_the_lunch_break() -> None:
    due = SPLIT.add_working_time(berlin(2026, 12, 2, 11, 0), timedelta(hours=2))
    assert due == berlin(2026, 12, 2, 14, 0)
    assert SPLIT.working_time_between(berlin(2026, 12, 2, 12, 0), berlin(2026, 12, 2, 14, 0)) == (
        timedelta(hours=1)
    )
    assert not SPLIT.is_working(berlin(2026, 12, 2, 13, 0))
    assert SPLIT.is_working(berlin(2026, 12, 5, 11, 0))  # Saturday morning


def test_regional_and_extra_holidays_are_days_off() -> None:
    assert SPLIT.is_holiday(date(2026, 1, 6))  # Epiphany, Bavaria only
    assert not BusinessHours("Europe/Berlin", OFFICE.week, holidays="DE/BE").is_holiday(
        date(2026, 1, 6)
    )
    assert SPLIT.is_holiday(date(2026, 12, 24))
    # Christmas Eve (extra), Christmas Day and the Saturday after (Boxing Day) are off; the
    # Monday after is a whole split day.
    assert SPLIT.working_time_between(berlin(2026, 12, 24), berlin(2026, 12, 29)) == timedelta(
        hours=8
    )


def test_a_working_day_across_the_spring_change_has_its_hours() -> None:
    # 29 Mar 2026: clocks jump from 02:00 to 03:00 in Berlin. 24/7 that day is 23 hours.
    always_berlin = BusinessHours("Europe/Berlin", ALWAYS.week)
    day = always_berlin.working_time_between(berlin(2026, 3, 29), berlin(2026, 3, 30))
    assert day == timedelta(hours=23)
    # 25 Oct 2026: 02:00-03:00 happens twice, so the day has 25 hours.
    assert always_berlin.working_time_between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == (
        timedelta(hours=25)
    )


def test_a_range_in_the_skipped_hour_starts_when_the_clock_reaches_it() -> None:
    night = BusinessHours("Europe/Berlin", parse_week("sun 01:00-04:00"))
    sunday = berlin(2026, 3, 29)
    assert night.working_time_between(sunday, sunday + timedelta(days=1)) == timedelta(hours=2)
    # Eight in the morning in New York stays eight across the change of 8 Mar 2026.
    before = NEW_YORK.add_working_time(
        datetime(2026, 3, 7, 19, tzinfo=ZoneInfo("America/New_York")), timedelta(hours=2)
    )
    assert before == datetime(2026, 3, 8, 9, tzinfo=ZoneInfo("America/New_York"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mon-fri 9-18", "hours are written"),
        ("mon-fri 18:00-09:00", "start before it ends"),
        ("fri-mon 09:00-18:00", "runs forward"),
        ("mon-fri 09:00-18:00; fri 10:00-11:00", "fri is given twice"),
        ("monday 09:00-18:00", "days are written"),
        ("mon 09:00-13:00,12:00-18:00", "without overlapping"),
        ("", "no working hours"),
    ],
)
def test_a_week_that_cannot_be_read_says_how_to_write_it(text: str, problem: str) -> None:
    with pytest.raises(CalendarError, match=problem):
        parse_week(text)


def test_a_wrong_time_zone_or_country_is_named() -> None:
    with pytest.raises(CalendarError, match="Europe/Berlin"):
        BusinessHours("Mars/Olympus", OFFICE.week)
    with pytest.raises(CalendarError, match="country"):
        BusinessHours("UTC", OFFICE.week, holidays="XX")


def test_format_working() -> None:
    assert format_working(timedelta(hours=3, minutes=20)) == "3 h 20 min"
    assert format_working(timedelta(minutes=40)) == "40 min"
    assert format_working(timedelta(days=2, hours=1, minutes=5)) == "49 h"
    assert format_working(timedelta(hours=5)) == "5 h"


moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=200)).map(
    lambda d: timedelta(seconds=int(d.total_seconds()))
)
calendars = st.sampled_from([OFFICE, SPLIT, NEW_YORK])


@given(calendars, moments, durations)
def test_adding_then_measuring_gives_the_duration_back(
    hours: BusinessHours, start: datetime, duration: timedelta
) -> None:
    due = hours.add_working_time(start, duration)
    assert due >= start
    assert hours.working_time_between(start, due) == duration


@given(calendars, moments, durations, durations)
def test_adding_in_two_steps_is_adding_once(
    hours: BusinessHours, start: datetime, first: timedelta, second: timedelta
) -> None:
    once = hours.add_working_time(start, first + second)
    stepped = hours.add_working_time(hours.add_working_time(start, first), second)
    if second > timedelta():
        assert stepped == once
    assert once >= hours.add_working_time(start, first)


@given(calendars, moments, moments, moments)
def test_working_time_adds_up_and_never_exceeds_the_clock(
    hours: BusinessHours, a: datetime, b: datetime, c: datetime
) -> None:
    a, b, c = sorted((a, b, c))
    ab, bc = hours.working_time_between(a, b), hours.working_time_between(b, c)
    assert ab + bc == hours.working_time_between(a, c)
    assert timedelta() <= ab <= b - a
    assert hours.working_time_between(b, a) == -ab


@given(calendars, moments, durations.filter(lambda d: d > timedelta()))
def test_a_deadline_falls_in_working_time_or_at_its_end(
    hours: BusinessHours, start: datetime, duration: timedelta
) -> None:
    due = hours.add_working_time(start, duration)
    just_before = due - timedelta(seconds=1)
    assert hours.is_working(just_before)
    local = due.astimezone(ZoneInfo(hours.timezone))
    assert not hours.is_holiday(local.date()) or local.time() == time()
