from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from followup.care.timing import (
    AmbiguousLocalTime,
    Anchors,
    CalendarTime,
    ExactOffset,
    NonexistentLocalTime,
    QuietHours,
    defer_past_quiet_hours,
    local_instant,
    parse_timing,
    resolve_local_input,
)

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
QUIET = QuietHours(time(21, 0), time(8, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+48h", ExactOffset(timedelta(hours=48))),
        ("+0h", ExactOffset(timedelta(0))),
        ("+90m", ExactOffset(timedelta(minutes=90))),
        ("day 1 at 10:00", CalendarTime(day=1, at=time(10, 0))),
        ("day 0 at 21:00", CalendarTime(day=0, at=time(21, 0))),
    ],
)
def test_parse_timing_accepts_both_forms(text: str, expected: object) -> None:
    assert parse_timing(text) == expected


@pytest.mark.parametrize("text", ["48h", "+48 hours", "day one at 10:00", "day 1 at 25:00", ""])
def test_parse_timing_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timing(text)


def test_exact_offset_counts_real_hours_across_spring_forward() -> None:
    # 19:30 EST on Friday; clocks jump forward on Sunday 2026-03-08.
    completed = datetime(2026, 3, 7, 0, 30, tzinfo=UTC)
    due = ExactOffset(timedelta(hours=48)).resolve(completed, NY)
    assert due - completed == timedelta(hours=48)
    assert due.astimezone(NY).strftime("%a %H:%M %Z") == "Sun 20:30 EDT"


def test_calendar_time_uses_the_local_date_not_the_utc_date() -> None:
    # 22:30 in New York on March 6 is already March 7 in UTC.
    completed = datetime(2026, 3, 7, 3, 30, tzinfo=UTC)
    due = CalendarTime(day=1, at=time(10, 0)).resolve(completed, NY)
    assert due.astimezone(NY).replace(tzinfo=None) == datetime(2026, 3, 7, 10, 0)


def test_local_instant_moves_a_missing_time_forward() -> None:
    # 02:30 does not exist in New York on 2026-03-08: it becomes 03:30 EDT, never earlier.
    instant = local_instant(date(2026, 3, 8), time(2, 30), NY)
    assert instant.astimezone(NY).strftime("%H:%M %Z") == "03:30 EDT"
    assert instant == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_local_instant_takes_the_first_of_an_ambiguous_time() -> None:
    # 01:30 happens twice in London on 2026-10-25; the first is BST (UTC+1).
    instant = local_instant(date(2026, 10, 25), time(1, 30), LONDON)
    assert instant == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("local", "expected_local"),
    [
        (datetime(2026, 6, 1, 21, 0), datetime(2026, 6, 2, 8, 0)),  # start of quiet hours
        (datetime(2026, 6, 1, 23, 59), datetime(2026, 6, 2, 8, 0)),
        (datetime(2026, 6, 2, 3, 0), datetime(2026, 6, 2, 8, 0)),  # after midnight
        (datetime(2026, 6, 2, 7, 59), datetime(2026, 6, 2, 8, 0)),
        (datetime(2026, 6, 2, 8, 0), datetime(2026, 6, 2, 8, 0)),  # quiet hours over
        (datetime(2026, 6, 2, 20, 59), datetime(2026, 6, 2, 20, 59)),
    ],
)
def test_defer_past_quiet_hours_moves_only_quiet_times(
    local: datetime, expected_local: datetime
) -> None:
    instant = local.replace(tzinfo=NY).astimezone(UTC)
    result = defer_past_quiet_hours(instant, NY, QUIET)
    assert result.astimezone(NY).replace(tzinfo=None) == expected_local


def test_quiet_hours_end_on_a_dst_morning_is_local_eight() -> None:
    # Saturday 22:00 EST -> Sunday 08:00 EDT: 9 real hours later, not 10.
    instant = datetime(2026, 3, 7, 22, 0, tzinfo=NY).astimezone(UTC)
    result = defer_past_quiet_hours(instant, NY, QUIET)
    assert result.astimezone(NY).strftime("%a %H:%M %Z") == "Sun 08:00 EDT"
    assert result - instant == timedelta(hours=9)


def test_quiet_hours_that_do_not_wrap_midnight() -> None:
    lunch = QuietHours(time(12, 0), time(13, 0))
    assert lunch.contains(time(12, 30)) and not lunch.contains(time(13, 0))
    assert not QuietHours(time(8, 0), time(8, 0)).contains(time(8, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("scheduled day -1 at 16:00", CalendarTime(day=-1, at=time(16, 0), anchor="scheduled")),
        ("scheduled -3h", ExactOffset(timedelta(hours=-3), anchor="scheduled")),
        ("stop day -1 at 10:00", CalendarTime(day=-1, at=time(10, 0), anchor="stop")),
        ("enrolled +24h", ExactOffset(timedelta(hours=24), anchor="enrolled")),
    ],
)
def test_parse_timing_counts_from_the_booking_the_stop_date_or_enrollment(
    text: str, expected: object
) -> None:
    assert parse_timing(text) == expected


@pytest.mark.parametrize(
    "text", ["-3h", "day -1 at 10:00", "stop +2h", "enrolled day 0 at 10:00", "booked -1h"]
)
def test_parse_timing_refuses_what_cannot_be_counted(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timing(text)


def test_pre_procedure_times_are_local_and_dst_safe() -> None:
    anchors = Anchors(
        scheduled_at=datetime(2026, 3, 12, 13, 0, tzinfo=UTC), stop_on=date(2026, 3, 7)
    )
    day_before = parse_timing("scheduled day -1 at 16:00").resolve(anchors, NY)
    assert day_before.astimezone(NY).strftime("%a %H:%M %Z") == "Wed 16:00 EDT"
    stop = parse_timing("stop day -1 at 10:00").resolve(anchors, NY)
    assert stop.astimezone(NY).strftime("%a %Y-%m-%d %H:%M %Z") == "Fri 2026-03-06 10:00 EST"


def test_a_typed_time_that_does_not_exist_is_refused_not_moved() -> None:
    with pytest.raises(NonexistentLocalTime, match="does not exist in America/New_York"):
        resolve_local_input(datetime(2026, 3, 8, 2, 30), NY)


def test_a_typed_time_that_happens_twice_is_refused_with_both_choices() -> None:
    with pytest.raises(AmbiguousLocalTime) as excinfo:
        resolve_local_input(datetime(2026, 10, 25, 1, 30), LONDON)
    assert [(c.offset, c.zone_name) for c in excinfo.value.choices] == [
        ("+01:00", "BST"),
        ("+00:00", "GMT"),
    ]
    assert resolve_local_input(datetime(2026, 10, 25, 3, 0), LONDON) == datetime(
        2026, 10, 25, 3, 0, tzinfo=UTC
    )


def test_quiet_hours_ending_in_the_repeated_hour_never_move_a_text_earlier() -> None:
    # QUIET_HOURS=00:30-01:30: on the fall-back night 01:00-02:00 happens twice in New York.
    quiet = QuietHours(time(0, 30), time(1, 30))
    tz = ZoneInfo("America/New_York")
    night = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # 00:00 EDT
    for minutes in range(0, 4 * 60, 5):
        instant = night + timedelta(minutes=minutes)
        assert defer_past_quiet_hours(instant, tz, quiet) >= instant, instant
