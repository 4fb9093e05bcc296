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


# Where a step's time is counted from. A bare spec ("+48h", "day 1 at 10:00") counts from
# completion; "scheduled ..." from the booked procedure's time, "stop ..." from the date the
# doctor gave to stop a blood thinner, "enrolled ..." from the moment the texts are planned.
COMPLETED = "completed"
SCHEDULED = "scheduled"
STOP = "stop"
ENROLLED = "enrolled"
ANCHORS = (COMPLETED, SCHEDULED, STOP, ENROLLED)
BEFORE_ANCHORS = frozenset({SCHEDULED, STOP, ENROLLED})  # steps before the procedure

_EXACT_RE = re.compile(r"^([+-])(\d{1,4})([hm])$")
_CALENDAR_RE = re.compile(r"^day (-?\d{1,3}) at (\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Anchors:
    """The instants a procedure's step times are counted from (None where not known yet)."""

    completed_at: datetime | None = None
    scheduled_at: datetime | None = None
    stop_on: date | None = None
    enrolled_at: datetime | None = None

    def instant(self, anchor: str) -> datetime:
        """The anchor's UTC instant; raise ValueError when this procedure lacks it."""
        if anchor == COMPLETED:
            value = self.completed_at
        elif anchor == SCHEDULED:
            value = self.scheduled_at
        else:
            value = self.enrolled_at if anchor == ENROLLED else None
        if value is None:
            raise ValueError(f"no {anchor} time for this procedure")
        return value.astimezone(UTC)

    def local_date(self, anchor: str, tz: ZoneInfo) -> date:
        """The anchor's local calendar date in the patient's zone."""
        if anchor == STOP:
            if self.stop_on is None:
                raise ValueError("no stop date for this procedure")
            return self.stop_on
        return self.instant(anchor).astimezone(tz).date()


def _anchors(at: datetime | Anchors) -> Anchors:
    return at if isinstance(at, Anchors) else Anchors(completed_at=at)


@dataclass(frozen=True)
class ExactOffset:
    """A fixed duration from an anchor: "+48h" is 48 real hours, whatever the clocks do."""

    delta: timedelta
    anchor: str = COMPLETED

    def resolve(self, at: datetime | Anchors, tz: ZoneInfo) -> datetime:
        """The UTC instant; `at` is the completion time or every anchor of the procedure."""
        return _anchors(at).instant(self.anchor) + self.delta

    def approx_hours(self) -> float:
        return self.delta.total_seconds() / 3600


@dataclass(frozen=True)
class CalendarTime:
    """A local wall-clock time N calendar days from the anchor's local date (N may be < 0)."""

    day: int
    at: time
    anchor: str = COMPLETED

    def resolve(self, at: datetime | Anchors, tz: ZoneInfo) -> datetime:
        """The UTC instant; `at` is the completion time or every anchor of the procedure."""
        local_date = _anchors(at).local_date(self.anchor, tz)
        return local_instant(local_date + timedelta(days=self.day), self.at, tz)

    def approx_hours(self) -> float:
        # Measured from an anchor around noon (a stop date: its midnight), to order steps.
        noon = 0 if self.anchor == STOP else 12
        return self.day * 24 + self.at.hour + self.at.minute / 60 - noon


TimingSpec = ExactOffset | CalendarTime


def parse_timing(text: str) -> TimingSpec:
    """Parse "+48h", "+30m", "day 1 at 10:00", each optionally after an anchor word
    ("scheduled day -1 at 16:00", "scheduled -3h", "stop day -1 at 10:00", "enrolled +0h");
    raise ValueError otherwise."""
    text = " ".join(text.split())
    anchor, _, rest = text.partition(" ")
    if anchor not in (SCHEDULED, STOP, ENROLLED):
        anchor, rest = COMPLETED, text
    exact = _EXACT_RE.match(rest)
    if exact:
        sign, amount, unit = exact.group(1), int(exact.group(2)), exact.group(3)
        delta = timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount)
        if sign == "-" and anchor != SCHEDULED:
            raise ValueError(f"{text!r}: only 'scheduled' times may count backwards")
        if anchor == STOP:
            raise ValueError(f"{text!r}: a stop date has no time of day; use 'stop day N at HH:MM'")
        return ExactOffset(-delta if sign == "-" else delta, anchor)
    calendar = _CALENDAR_RE.match(rest)
    if calendar:
        day, hour, minute = (int(g) for g in calendar.groups())
        if hour > 23 or minute > 59:
            raise ValueError(f"{text!r}: no such time of day")
        if day < 0 and anchor not in (SCHEDULED, STOP):
            raise ValueError(f"{text!r}: only 'scheduled' and 'stop' days may be negative")
        if anchor == ENROLLED:
            raise ValueError(f"{text!r}: count from enrollment in hours, like 'enrolled +0h'")
        return CalendarTime(day=day, at=time(hour, minute), anchor=anchor)
    raise ValueError(
        f"{text!r} is neither an exact offset like '+48h' nor 'day N at HH:MM' "
        "(optionally after 'scheduled', 'stop' or 'enrolled')"
    )


@lru_cache(maxsize=16384)  # pure; a clinic's patients of a day share their calendar times
def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """Return the UTC instant of a protocol's local wall-clock time, DST-safe.

    For the times a protocol names ("day 1 at 10:00"), never for times staff type (those
    are refused when they do not exist or are ambiguous: see `resolve_local_input`). An
    ambiguous time (clocks going back) takes its first occurrence (fold=0). A time that
    does not exist (clocks going forward) moves forward by the length of the gap, so
    02:30 on a spring-forward night becomes 03:30: never earlier than asked.
    """
    wall = datetime.combine(day, at).replace(tzinfo=tz, fold=0)
    return wall.astimezone(UTC)


@lru_cache(maxsize=16384)  # pure; calendar-timed steps repeat the same instants
def quiet_period_end(instant: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """If `instant` falls in quiet hours (patient local time), return when they end."""
    local = instant.astimezone(tz)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)
    end = local_instant(end_day, quiet.end, tz)
    if end <= instant:
        # The end falls in the hour the clocks repeat (fall back), and `instant` is in its
        # second pass: quiet hours end at the end's second occurrence, not "now" (a text
        # deferred to now was deferred again at every pass, the loop spinning until then).
        end = datetime.combine(end_day, quiet.end).replace(tzinfo=tz, fold=1).astimezone(UTC)
    # A DST jump can only push the end later; never hand back an earlier instant.
    return max(end, instant.astimezone(UTC))


def defer_past_quiet_hours(instant: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime:
    """Move an instant that falls in quiet hours to their end; leave others alone."""
    end = quiet_period_end(instant, tz, quiet)
    return instant.astimezone(UTC) if end is None else end


@dataclass(frozen=True)
class LocalTimeChoice:
    """One real instant an ambiguous wall-clock time can mean, with its UTC offset."""

    instant: datetime  # UTC
    offset: str  # "-04:00"
    zone_name: str  # "EDT"


class NonexistentLocalTime(ValueError):
    """A wall-clock time the clocks skip (spring forward)."""


class AmbiguousLocalTime(ValueError):
    """A wall-clock time that happens twice (fall back); `choices` are both instants."""

    def __init__(self, message: str, choices: tuple[LocalTimeChoice, ...]) -> None:
        super().__init__(message)
        self.choices = choices


def format_offset(value: timedelta | None) -> str:
    """A UTC offset as ISO 8601 writes it: "-04:00"."""
    seconds = int((value or timedelta(0)).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def resolve_local_input(wall: datetime, tz: ZoneInfo) -> datetime:
    """Return the UTC instant of a naive wall-clock time staff typed for zone `tz`.

    Refuses (never guesses) a time the clocks skip (NonexistentLocalTime) and a time that
    happens twice (AmbiguousLocalTime, carrying both instants so a form can offer them).
    """
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        raise NonexistentLocalTime(
            f"{wall:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks skip it"
        )
    if first.utcoffset() != second.utcoffset():
        choices = tuple(
            LocalTimeChoice(
                instant=value.astimezone(UTC),
                offset=format_offset(value.utcoffset()),
                zone_name=value.tzname() or "",
            )
            for value in (first, second)
        )
        raise AmbiguousLocalTime(
            f"{wall:%Y-%m-%d %H:%M} happens twice in {tz.key} (the clocks go back): "
            f"add its offset, {choices[0].offset} ({choices[0].zone_name}, the first) or "
            f"{choices[1].offset} ({choices[1].zone_name}, the second)",
            choices,
        )
    return first.astimezone(UTC)
