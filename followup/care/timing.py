"""Timing specs ("+48h", "day 1 at 10:00") and DST-safe local time arithmetic. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name (cached: planning looks up thousands)."""
    return ZoneInfo(name)


@dataclass(frozen=True)
class QuietHours:
    """A nightly window, in the patient's local time, in which no text goes out."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        """Tell whether a local wall-clock time falls inside the window."""
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_GROUP_RE = re.compile(
    r"^\s*([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$"
)


@dataclass(frozen=True)
class StaffedWindow:
    """Days of the week (0 = Monday) and the local hours on them when a nurse reads replies."""

    weekdays: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True)
class ClinicHours:
    """The clinic's staffed hours in its own zone: "Mon-Fri 08:00-17:00; Sat 09:00-12:00"."""

    windows: tuple[StaffedWindow, ...]
    text: str

    def is_open(self, local: datetime) -> bool:
        """Tell whether a local (clinic-zone) wall-clock instant falls in staffed hours."""
        return any(
            local.weekday() in w.weekdays and w.start <= local.time() < w.end for w in self.windows
        )

    def __str__(self) -> str:
        return self.text


def parse_clinic_hours(text: str) -> ClinicHours:
    """Parse "Mon-Fri 08:00-17:00", groups separated by ';'; raise ValueError if malformed."""
    windows = []
    for group in text.lower().split(";"):
        match = _HOURS_GROUP_RE.match(group)
        if not match:
            raise ValueError(f"{text!r} must look like 'Mon-Fri 08:00-17:00' (groups with ';')")
        first, last, h1, m1, h2, m2 = match.groups()
        if first not in _WEEKDAYS or (last or first) not in _WEEKDAYS:
            raise ValueError(f"{text!r}: days are Mon, Tue, Wed, Thu, Fri, Sat, Sun")
        a, b = _WEEKDAYS.index(first), _WEEKDAYS.index(last or first)
        days = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        try:
            start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {group.strip()!r} is not a valid time range") from exc
        if start >= end:
            raise ValueError(f"{text!r}: {group.strip()!r} must end after it starts")
        windows.append(StaffedWindow(frozenset(days), start, end))
    return ClinicHours(tuple(windows), text.strip())


_EXACT_RE = re.compile(r"^\+(\d{1,4})([hm])$")
_CALENDAR_RE = re.compile(r"^day (\d{1,3}) at (\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class ExactOffset:
    """A fixed duration after completion: "+48h" is 48 real hours, whatever the clocks do."""

    delta: timedelta

    def resolve(self, completed_at: datetime, tz: ZoneInfo) -> datetime:
        return completed_at.astimezone(UTC) + self.delta

    def approx_hours(self) -> float:
        return self.delta.total_seconds() / 3600


@dataclass(frozen=True)
class CalendarTime:
    """A local wall-clock time N calendar days after the procedure's local date."""

    day: int
    at: time

    def resolve(self, completed_at: datetime, tz: ZoneInfo) -> datetime:
        local_date = completed_at.astimezone(tz).date()
        return local_instant(local_date + timedelta(days=self.day), self.at, tz)

    def approx_hours(self) -> float:
        # Measured from a procedure finished around noon, to order steps in a protocol.
        return self.day * 24 + self.at.hour + self.at.minute / 60 - 12


TimingSpec = ExactOffset | CalendarTime


def parse_timing(text: str) -> TimingSpec:
    """Parse "+48h", "+30m" or "day 1 at 10:00"; raise ValueError otherwise."""
    text = text.strip()
    exact = _EXACT_RE.match(text)
    if exact:
        amount, unit = int(exact.group(1)), exact.group(2)
        return ExactOffset(timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount))
    calendar = _CALENDAR_RE.match(text)
    if calendar:
        day, hour, minute = (int(g) for g in calendar.groups())
        if hour > 23 or minute > 59:
            raise ValueError(f"{text!r}: no such time of day")
        return CalendarTime(day=day, at=time(hour, minute))
    raise ValueError(f"{text!r} is neither an exact offset like '+48h' nor 'day N at HH:MM'")


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """Return the UTC instant of a local wall-clock time, DST-safe.

    An ambiguous time (clocks going back) takes its first occurrence (fold=0). A time that
    does not exist (clocks going forward) moves forward by the length of the gap, so
    02:30 on a spring-forward night becomes 03:30: never earlier than asked.
    """
    wall = datetime.combine(day, at).replace(tzinfo=tz, fold=0)
    return wall.astimezone(UTC)


def quiet_period_end(instant: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """If `instant` falls in quiet hours (patient local time), return when they end."""
    local = instant.astimezone(tz)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)
    end = local_instant(end_day, quiet.end, tz)
    # A DST jump can only push the end later; never hand back an earlier instant.
    return max(end, instant.astimezone(UTC))


def defer_past_quiet_hours(instant: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime:
    """Move an instant that falls in quiet hours to their end; leave others alone."""
    end = quiet_period_end(instant, tz, quiet)
    return instant.astimezone(UTC) if end is None else end
