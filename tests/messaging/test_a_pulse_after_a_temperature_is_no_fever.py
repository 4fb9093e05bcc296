"""6eef838 reads a fever in any later number of a reply that speaks of temperature ("temp
97 this morning 102 tonight"). But a family sending the vital signs, "temp 98 pulse 104",
"temp 98.4 glucose 105", "temperatura 36.5 pulso 102", was then paged (staff alerted, the
patient told to call now) for a fever: the later number was a pulse or a sugar. A number
named by another measure is not a temperature; a later reading still is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    "body",
    [
        "temp 98 pulse 104",
        "temp 98 heart rate 102",
        "temp 98.2 bp 130/80 pulse 101",
        "temp 98.4 glucose 105",
        "temp 97 blood sugar 103",
        "temperatura 36.5 pulso 102",
        "temp 97 room 104",
    ],
)
def test_another_measure_after_a_temperature_is_no_fever(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "reading", (body, reply.row.triage, reply.row.triage_reason)


@pytest.mark.parametrize(
    "body",
    [
        "temp 97 this morning 102 tonight",
        "temp 98 pulse 80 and tonight 101.5",
        "pulse 104 temp 101",
        "temperatura 36 y luego 38.5",
    ],
)
def test_a_later_temperature_is_still_a_fever(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)
