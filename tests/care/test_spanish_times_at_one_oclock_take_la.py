"""Spanish says an hour with its article: "las 3:30", but "la 1:30" (one o'clock is
singular). A Spanish text that named a time between 1:00 and 1:59 read "desde las 1:30
p. m.", a grammar slip a patient notices in the very text that tells them when they may
restart their blood thinner."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from followup.care.protocol import CareContext
from followup.care.texts import describe_local_time
from followup.care.timing import parse_clinic_hours
from followup.messaging.hours import when_read

PUERTO_RICO = ZoneInfo("America/Puerto_Rico")  # UTC-4 all year, no DST


@pytest.mark.parametrize(
    ("local_hour", "minute", "expected"),
    [
        (13, 30, "la 1:30 p. m. del domingo 8 de marzo"),
        (1, 5, "la 1:05 a. m. del domingo 8 de marzo"),
        (12, 0, "las 12:00 p. m. del domingo 8 de marzo"),
        (15, 30, "las 3:30 p. m. del domingo 8 de marzo"),
    ],
)
def test_spanish_local_time_takes_la_at_one_oclock(
    local_hour: int, minute: int, expected: str
) -> None:
    instant = datetime(2026, 3, 8, local_hour, minute, tzinfo=PUERTO_RICO).astimezone(UTC)
    assert describe_local_time(instant, PUERTO_RICO, "es") == expected


def test_spanish_restart_text_at_one_thirty_reads_desde_la(care: CareContext) -> None:
    # Completed Friday 13:30 in San Juan: the restart is from 13:30 on Sunday.
    completed = datetime(2026, 3, 6, 13, 30, tzinfo=PUERTO_RICO).astimezone(UTC)
    body = care.render_text(
        kind="kyphoplasty",
        step_key="blood-thinner-restart",
        language="es",
        tz=PUERTO_RICO,
        completed_at=completed,
        blood_thinner="Eliquis",
    )
    assert "desde la 1:30 p. m. del domingo 8 de marzo." in body, body


def test_spanish_day_before_text_names_a_one_oclock_booking_with_la(care: CareContext) -> None:
    booked = datetime(2026, 3, 10, 13, 0, tzinfo=PUERTO_RICO).astimezone(UTC)
    body = care.render_text(
        kind="vertebroplasty",
        step_key="day-before",
        language="es",
        tz=PUERTO_RICO,
        completed_at=None,
        blood_thinner=None,
        scheduled_at=booked,
    )
    assert "Su cita es a la 1:00 p. m. del martes 10 de marzo." in body, body


def test_spanish_reading_answer_names_a_one_oclock_opening_with_la() -> None:
    hours = parse_clinic_hours("Mon-Fri 13:00-17:00")
    monday_morning = datetime(2026, 3, 9, 9, 0, tzinfo=PUERTO_RICO).astimezone(UTC)
    when, _ = when_read(hours, monday_morning, PUERTO_RICO, "es")
    assert when == "cuando abra la clínica, hoy a la 1:00 p. m.", when
