"""Business time: a team's working hours, in its time zone, without its public holidays.

A team works in ranges of local wall-clock time per weekday, split days included
(``mon-fri 09:00-12:30,13:30-18:00; sat 10:00-14:00``), except on public holidays (the
``holidays`` library, by country and subdivision, like ``DE/BY``) and on extra dates. Working
time is real elapsed time inside those ranges: a range that spans a change of the clocks is an
hour shorter or longer, and a range that starts in the hour skipped in spring starts when the
clock reaches it. Everything here is pure: no database, no clock of its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
# How far ahead add_working_time looks before it decides the calendar has no working time.
_HORIZON_DAYS = 3 * 366

Range = tuple[time, time | None]  # None as the end is midnight at the end of the day


class CalendarError(ValueError):
    """A week, time zone or holiday setting that cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """When a team works: ``week[0]`` is Monday's ranges, in the time zone ``timezone``."""

    timezone: str = "UTC"
    week: tuple[tuple[Range, ...], ...] = ((),) * 7
    #: ``"DE"`` or ``"DE/BY"``: the public holidays of a country (and subdivision); "" none.
    holidays: str = ""
    extra_holidays: frozenset[date] = frozenset()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CalendarError(
                f"{self.timezone!r} is not a time zone; use an IANA name like 'Europe/Berlin'"
            ) from exc
        object.__setattr__(self, "_zone", zone)
        if self.holidays:
            _holiday_calendar(self.holidays)  # a wrong country fails here, not at run time
        if len(self.week) != 7:
            raise CalendarError("a week has seven days of ranges")

    @property
    def works_at_all(self) -> bool:
        return any(self.week)

    def is_holiday(self, day: date) -> bool:
        """Whether the team has the day off although it is a working weekday."""
        if day in self.extra_holidays:
            return True
        return bool(self.holidays) and day in _holiday_calendar(self.holidays)

    def is_working(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in working time."""
        return any(low <= moment < high for low, high in self._intervals(moment, moment))

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """The working time from ``start`` to ``end`` (negative when ``end`` comes first)."""
        if end < start:
            return -self.working_time_between(end, start)
        total = timedelta()
        for low, high in self._intervals(start, end):
            overlap = min(high, end) - max(low, start)
            if overlap > timedelta():
                total += overlap
        return total

    def add_working_time(self, start: datetime, duration: timedelta) -> datetime:
        """The moment ``duration`` of working time after ``start`` (``start`` itself for 0)."""
        if duration <= timedelta():
            return start
        left = duration
        for low, high in self._intervals(start, start + timedelta(days=_HORIZON_DAYS)):
            low = max(low, start)
            if high <= low:
                continue
            if left <= high - low:
                return low + left
            left -= high - low
        raise CalendarError(f"no working time within {_HORIZON_DAYS} days of {start.isoformat()}")

    def _intervals(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The working intervals (UTC, in order) of the local days from ``start`` to ``end``."""
        day = start.astimezone(self._zone).date() - timedelta(days=1)
        last = end.astimezone(self._zone).date() + timedelta(days=1)
        while day <= last:
            if not self.is_holiday(day):
                for opens, closes in self.week[day.weekday()]:
                    low = self._at(day, opens)
                    if closes is None:
                        high = self._at(day + timedelta(days=1), time())
                    else:
                        high = self._at(day, closes)
                    if high > low:
                        yield low, high
            day += timedelta(days=1)

    def _at(self, day: date, wall: time) -> datetime:
        """The UTC moment the team's clocks show ``wall`` on ``day``.

        In the skipped hour of spring, the moment is the one after the change (09:30 in a gap
        from 09:00 to 10:00 is 10:30); in the repeated hour of autumn, its first pass.
        """
        # fold=0 reads a wall time in the gap with the offset from before the change, which
        # lands after it, and a repeated wall time as its first pass.
        return datetime.combine(day, wall, tzinfo=self._zone).astimezone(UTC)


#: Every hour of every day, in UTC: the calendar of a team without business hours.
ALWAYS = BusinessHours(week=(((time(), None),),) * 7)


@functools.lru_cache(maxsize=64)
def _holiday_calendar(code: str) -> holidays.HolidayBase:
    country, _, subdivision = code.partition("/")
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision.upper() or None)
    except NotImplementedError as exc:
        raise CalendarError(
            f"{country!r} is not a country the holidays library knows; use a code like 'DE'"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise CalendarError(
            f"{code!r}: {exc}; use a country and subdivision code like 'DE/BY'"
        ) from exc


def parse_week(text: str) -> tuple[tuple[Range, ...], ...]:
    """Seven days of ranges from ``mon-fri 09:00-12:30,13:30-18:00; sat 10:00-14:00``.

    ``24/7`` is every hour of every day. A day named twice is an error; days not named are off.
    """
    if text.strip().lower() == "24/7":
        return ALWAYS.week
    week: list[tuple[Range, ...] | None] = [None] * 7
    for part in filter(None, (p.strip() for p in text.split(";"))):
        days_text, _, ranges_text = part.partition(" ")
        ranges = _ranges(ranges_text.replace(" ", ""), part)
        for day in _days(days_text.lower(), part):
            if week[day] is not None:
                raise CalendarError(f"{WEEKDAYS[day]} is given twice in {text!r}")
            week[day] = ranges
    if not any(week):
        raise CalendarError(
            f"{text!r} has no working hours; write it like 'mon-fri 09:00-18:00' or '24/7'"
        )
    return tuple(r or () for r in week)


def _days(text: str, part: str) -> list[int]:
    days: list[int] = []
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise CalendarError(
                f"{part!r}: days are written mon, tue, wed, thu, fri, sat, sun, like 'mon-fri'"
            )
        low = WEEKDAYS.index(first)
        high = WEEKDAYS.index(last) if last else low
        if high < low:
            raise CalendarError(f"{part!r}: a range of days runs forward, like 'mon-fri'")
        days += range(low, high + 1)
    return days


def _ranges(text: str, part: str) -> tuple[Range, ...]:
    ranges: list[Range] = []
    previous_end = -1
    for item in text.split(","):
        match = _RANGE.match(item)
        if match is None:
            raise CalendarError(
                f"{part!r}: hours are written like '09:00-18:00' or '09:00-12:30,13:30-18:00'"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if not (0 <= start < end <= 24 * 60 and m1 < 60 and m2 < 60):
            raise CalendarError(f"{part!r}: {item} must start before it ends, within 00:00-24:00")
        if start < previous_end:
            raise CalendarError(f"{part!r}: ranges of a day go in order without overlapping")
        previous_end = end
        ranges.append((time(h1, m1), None if end == 24 * 60 else time(h2, m2)))
    return tuple(ranges)


def format_working(duration: timedelta) -> str:
    """``3 h 20 min``, ``45 min``, ``40 h``: working time, in hours (a "day" would be unclear)."""
    minutes = max(int(duration.total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    if hours >= 10:
        return f"{hours} h"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"
