"""`followup check` (and `serve`/`worker` at start) refuses quiet hours that protect no
night: empty ("21:00-21:00", "00:00-00:00": `QuietHours.contains` is never true, so every
text goes out at any hour, 3 a.m. included) or inverted ("08:00-21:00": quiet all day,
every text goes out at night). Today both are accepted as `ok  settings: valid`, and the
planner and the dispatcher then send texts in the middle of the patient's night."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from followup.care.timing import defer_past_quiet_hours
from followup.ops.checks import check_settings

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize("quiet", ["21:00-21:00", "00:00-00:00", "08:00-21:00"])
def test_check_refuses_quiet_hours_that_leave_the_night_open(quiet: str) -> None:
    settings, checks = check_settings({"QUIET_HOURS": quiet})
    if settings is not None:
        # What the accepted setting does: a text due at 03:00 patient-local goes at 03:00.
        night = datetime(2026, 3, 10, 3, 0, tzinfo=NY).astimezone(UTC)
        sent_at = defer_past_quiet_hours(night, NY, settings.quiet_hours).astimezone(NY)
        assert not settings.quiet_hours.contains(time(3, 0))
        assert sent_at - night.astimezone(NY) == timedelta(0)
    lines = [c.line() for c in checks]
    assert settings is None, (
        f"QUIET_HOURS={quiet} accepted ({lines}): a text due at 03:00 local goes at once"
    )
    assert any(not c.ok and c.detail.startswith("QUIET_HOURS") for c in checks), lines
