"""A temperature is a fever from 100.4 °F or 38 °C, but only the first number after the
temperature word was read: "temp 97 this morning 102 tonight" waited in the reading queue
(overnight, when a fever after a spine procedure may be an infection). Any later reading in
a reply that speaks of temperature counts: Fahrenheit, or Celsius written with its decimal;
never a blood pressure, an amount or a whole Celsius-sized number (an age, a count)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    "body",
    ["temp 97 this morning 102 tonight", "temp was 99 and now 101", "temperatura 36 y luego 38.5"],
)
def test_a_fever_read_later_in_the_reply_is_urgent(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
    assert "fever" in (reply.row.triage_reason or "")


@pytest.mark.parametrize(
    "body",
    [
        "temp 98, bp 104/70",
        "temp normal, she is 40",
        "temp 98.6 walked 101 steps",
        "temp 37 now 38",
    ],
)
def test_a_blood_pressure_an_amount_or_a_whole_number_is_no_later_reading(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage != "urgent", (body, reply.row.triage_reason)
