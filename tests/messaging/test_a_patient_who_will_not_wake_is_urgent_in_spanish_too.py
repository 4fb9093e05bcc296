"""958823e made "she won't wake up" and "i cant wake her up" urgent (fainting / passing
out), but not "I can't wake him" (no "up") nor the Spanish "no se despierta" / "mi esposo no
despierta": each was filed needs-reading, nobody paged, a nurse reading it in clinic
hours. Waking from sleep is not a warning sign."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from followup.patients.validation import EnrollmentResult
from tests.messaging.conftest import Triaged

Triage = Callable[[str], Triaged]


@pytest.mark.parametrize(
    "body",
    ["I can't wake him", "i cant wake her", "no se despierta", "mi esposo no despierta"],
)
def test_a_patient_who_will_not_wake_is_urgent(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage == "urgent", (body, reply.row.triage, reply.row.triage_reason)


@pytest.mark.parametrize("body", ["se despierta con dolor 3", "i woke him up for his pills"])
def test_waking_is_not_a_warning_sign(
    body: str, triaged: Triage, enrolled: EnrollmentResult
) -> None:
    reply = triaged(body)
    assert reply.row.triage != "urgent", (body, reply.row.triage, reply.row.triage_reason)
