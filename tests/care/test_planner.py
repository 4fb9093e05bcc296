from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from followup.care.planner import EXPIRED, PENDING, PlannedText, plan_procedure
from followup.care.protocol import CareContext
from followup.care.timing import QuietHours

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
QUIET = QuietHours(time(21, 0), time(8, 0))


def plan(
    care: CareContext,
    completed_local: datetime,
    *,
    tz: ZoneInfo = NY,
    now: datetime | None = None,
    blood_thinner: bool = True,
) -> dict[str, PlannedText]:
    completed = completed_local.replace(tzinfo=tz).astimezone(UTC)
    planned = plan_procedure(
        protocol=care.protocol("kyphoplasty"),
        completed_at=completed,
        tz=tz,
        has_blood_thinner=blood_thinner,
        quiet_hours=QUIET,
        now=now or completed,
    )
    return {p.step: p for p in planned}


def local(p: PlannedText, tz: ZoneInfo = NY) -> str:
    return p.due_at.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")


def test_plan_has_five_steps_at_their_local_times(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 3, 6, 14, 30))
    assert list(steps) == [
        "no-driving",
        "soreness",
        "blood-thinner-restart",
        "warning-signs",
        "pain-check",
    ]
    assert local(steps["no-driving"]) == "Fri 2026-03-06 14:30 EST"
    assert local(steps["soreness"]) == "Sat 2026-03-07 10:00 EST"
    # Exactly 48 real hours, across the spring-forward night: 15:30 EDT, not 14:30.
    assert local(steps["blood-thinner-restart"]) == "Sun 2026-03-08 15:30 EDT"
    assert local(steps["warning-signs"]) == "Mon 2026-03-09 10:00 EDT"
    assert local(steps["pain-check"]) == "Fri 2026-03-13 10:00 EDT"
    assert all(p.status == PENDING for p in steps.values())


def test_no_blood_thinner_means_no_restart_text(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 3, 6, 14, 30), blood_thinner=False)
    assert "blood-thinner-restart" not in steps
    assert len(steps) == 4


def test_restart_due_in_quiet_hours_waits_for_morning_never_earlier(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 6, 1, 22, 15))
    restart = steps["blood-thinner-restart"]
    assert restart.nominal_at.astimezone(NY).strftime("%a %H:%M") == "Wed 22:15"
    assert local(restart) == "Thu 2026-06-04 08:00 EDT"
    assert restart.due_at >= restart.nominal_at


def test_no_driving_after_nine_pm_is_expired_not_sent_next_morning(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 6, 1, 21, 30))
    assert steps["no-driving"].status == EXPIRED
    assert steps["soreness"].status == PENDING


def test_no_driving_before_eight_am_waits_for_the_end_of_quiet_hours(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 6, 1, 7, 0))
    assert local(steps["no-driving"]) == "Mon 2026-06-01 08:00 EDT"
    assert steps["no-driving"].status == PENDING


def test_late_enrollment_sends_what_is_still_open_and_expires_the_rest(
    care: CareContext,
) -> None:
    completed = datetime(2026, 6, 1, 13, 0)
    now = datetime(2026, 6, 2, 21, 30, tzinfo=NY).astimezone(UTC)  # day 1, in quiet hours
    steps = plan(care, completed, now=now)
    assert steps["no-driving"].status == EXPIRED
    assert steps["soreness"].status == EXPIRED  # its window closed at 20:00
    assert steps["blood-thinner-restart"].status == PENDING
    assert steps["warning-signs"].status == PENDING


def test_late_enrollment_inside_a_window_is_due_now(care: CareContext) -> None:
    completed = datetime(2026, 6, 1, 13, 0)
    now = datetime(2026, 6, 2, 12, 0, tzinfo=NY).astimezone(UTC)
    steps = plan(care, completed, now=now)
    assert steps["soreness"].due_at == now
    assert steps["soreness"].status == PENDING


def test_london_autumn_change_keeps_calendar_steps_at_ten(care: CareContext) -> None:
    steps = plan(care, datetime(2026, 10, 24, 11, 0), tz=LONDON)
    assert local(steps["soreness"], LONDON) == "Sun 2026-10-25 10:00 GMT"
    restart = steps["blood-thinner-restart"]
    assert restart.due_at - restart.nominal_at == timedelta(0)
    # 48 real hours after 11:00 BST on Saturday is 10:00 GMT on Monday.
    assert local(restart, LONDON) == "Mon 2026-10-26 10:00 GMT"


# Instants spread across 2026, with the DST weekends of both zones well represented.
_instants = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)),
    st.datetimes(min_value=datetime(2026, 3, 6), max_value=datetime(2026, 3, 9)),
    st.datetimes(min_value=datetime(2026, 3, 27), max_value=datetime(2026, 3, 30)),
    st.datetimes(min_value=datetime(2026, 10, 23), max_value=datetime(2026, 10, 26)),
    st.datetimes(min_value=datetime(2026, 10, 30), max_value=datetime(2026, 11, 2)),
)


# `care` is immutable, so sharing it across generated inputs is safe.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    completed_naive=_instants,
    zone_name=st.sampled_from(["America/New_York", "Europe/London"]),
    delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=8)),
    blood_thinner=st.booleans(),
)
def test_planner_properties(
    care: CareContext,
    completed_naive: datetime,
    zone_name: str,
    delay: timedelta,
    blood_thinner: bool,
) -> None:
    tz = ZoneInfo(zone_name)
    completed = completed_naive.replace(tzinfo=UTC)
    now = completed + delay
    planned = plan_procedure(
        protocol=care.protocol("kyphoplasty"),
        completed_at=completed,
        tz=tz,
        has_blood_thinner=blood_thinner,
        quiet_hours=QUIET,
        now=now,
    )
    assert len(planned) == (5 if blood_thinner else 4)
    for p in planned:
        # Never before the step's own instant, never before enrollment.
        assert p.due_at >= p.nominal_at
        assert p.due_at >= now
        if p.status == PENDING:
            # Never at or after expiry, never in quiet hours.
            assert p.due_at < p.expires_at
            assert not QUIET.contains(p.due_at.astimezone(tz).time())
        else:
            assert p.due_at >= p.expires_at
        if p.step == "blood-thinner-restart":
            assert p.nominal_at - completed == timedelta(hours=48)
            assert p.expires_at - completed == timedelta(hours=96)
        if p.step in ("soreness", "warning-signs", "pain-check"):
            assert p.nominal_at.astimezone(tz).time() == time(10, 0)


@pytest.mark.parametrize("zone_name", ["America/New_York", "Europe/London"])
def test_every_hour_of_a_dst_weekend_plans_a_safe_restart(
    care: CareContext, zone_name: str
) -> None:
    tz = ZoneInfo(zone_name)
    start = datetime(2026, 3, 6, 0, 0, tzinfo=UTC)
    for hour in range(24 * 30):
        completed = start + timedelta(minutes=20 * hour)
        planned = plan_procedure(
            protocol=care.protocol("vertebroplasty"),
            completed_at=completed,
            tz=tz,
            has_blood_thinner=True,
            quiet_hours=QUIET,
            now=completed,
        )
        restart = next(p for p in planned if p.step == "blood-thinner-restart")
        assert restart.due_at - completed >= timedelta(hours=48)
        assert not QUIET.contains(restart.due_at.astimezone(tz).time())
