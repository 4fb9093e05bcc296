"""When a nurse reads a reply: the clinic's hours in words, and the next opening across
DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from followup.care.timing import parse_clinic_hours, zone
from followup.messaging.hours import describe_clinic_hours, next_opening, when_read

NY = zone("America/New_York")
HOURS = parse_clinic_hours("Mon-Fri 08:00-17:00")


def test_clinic_hours_in_words_in_both_languages() -> None:
    two = parse_clinic_hours("Mon-Fri 08:00-17:00; Sat 09:00-12:30")
    assert describe_clinic_hours(HOURS, "en") == "Monday to Friday, 8:00 AM to 5:00 PM"
    assert describe_clinic_hours(two, "es") == (
        "de lunes a viernes, de 8:00 a. m. a 5:00 p. m., y el sábado, de 9:00 a. m. a 12:30 p. m."
    )


@pytest.mark.parametrize(
    ("now", "en", "es"),
    [
        (datetime(2026, 3, 6, 15, 0, tzinfo=UTC), "today", "hoy"),  # Friday 10:00
        # Friday 16:45: closing within 30 minutes, so the next opening is named.
        (
            datetime(2026, 3, 6, 21, 45, tzinfo=UTC),
            "when the clinic opens, on Monday at 8:00 AM",
            "cuando abra la clínica, el lunes a las 8:00 a. m.",
        ),
        # Monday 03:00 local: later today.
        (
            datetime(2026, 3, 9, 7, 0, tzinfo=UTC),
            "when the clinic opens, today at 8:00 AM",
            "cuando abra la clínica, hoy a las 8:00 a. m.",
        ),
        # Tuesday 20:00 local: tomorrow.
        (
            datetime(2026, 3, 11, 0, 0, tzinfo=UTC),
            "when the clinic opens, tomorrow at 8:00 AM",
            "cuando abra la clínica, mañana a las 8:00 a. m.",
        ),
    ],
)
def test_when_a_nurse_reads_a_reply(now: datetime, en: str, es: str) -> None:
    assert when_read(HOURS, now, NY, "en")[0] == en
    assert when_read(HOURS, now, NY, "es")[0] == es


def test_next_opening_crosses_the_dst_change() -> None:
    # Saturday before the spring change: Monday 08:00 EDT is 12:00 UTC.
    opening = next_opening(HOURS, datetime(2026, 3, 7, 15, 0, tzinfo=UTC), NY)
    assert opening == datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
