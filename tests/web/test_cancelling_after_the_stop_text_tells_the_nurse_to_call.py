"""A booked procedure cancelled after the patient was texted to stop their blood thinner.

The patient got "Stop taking your warfarin on Saturday, March 7"; the procedure is then
cancelled. Every pending text is cancelled with it, and no text will ever tell the patient
when to take their warfarin again: a patient off an anticoagulant for a procedure that
will not happen. The nurse who cancels it saw only "Procedure cancelled; 1 pending texts
cancelled." The page now tells her to call the patient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, ny, send_due
from tests.web.conftest import NURSE, Browser

Enroll = Callable[..., EnrollmentResult]
WARNING = (
    "The patient was texted to stop their warfarin on Saturday, March 7 for this procedure: "
    "call them about when to take it again."
)


def _cancel(signed_in: Callable[[str], Browser], result: EnrollmentResult) -> str:
    """A nurse signs in now (the clock's instant) and cancels the procedure: the page."""
    nurse = signed_in(NURSE)
    procedure_id = result.procedure.id
    response = nurse.post(
        f"/patients/{result.patient.id}/cancel",
        {"procedure_id": procedure_id, f"cancel{procedure_id}-confirm": "y"},
    )
    assert response.status_code == 302
    return nurse.get(f"/patients/{result.patient.id}").get_data(as_text=True)


def _booked(clock: FakeClock, enroll: Enroll, **overrides: Any) -> EnrollmentResult:
    clock.set(ENROLLED)
    return enroll(**{**BOOKED, **overrides})


def test_cancelling_after_the_stop_text_went_out_tells_the_nurse_to_call(
    signed_in: Callable[[str], Browser],
    enroll: Enroll,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    result = _booked(clock, enroll)
    send_due(session, transport, care, ENROLLED)  # the welcome
    send_due(session, transport, care, ny("2026-03-06T10:00"))
    assert any("Stop taking your warfarin" in sms.body for sms in transport.sent)
    clock.set(ny("2026-03-08T12:00"))
    page = _cancel(signed_in, result)
    assert "Procedure cancelled; 1 pending texts cancelled." in page
    assert WARNING in page


def test_cancelling_before_any_blood_thinner_text_went_out_says_nothing_more(
    signed_in: Callable[[str], Browser],
    enroll: Enroll,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    result = _booked(clock, enroll)
    send_due(session, transport, care, ENROLLED)  # the welcome only
    clock.set(ny("2026-03-04T12:00"))
    page = _cancel(signed_in, result)
    assert "Procedure cancelled; 2 pending texts cancelled." in page
    assert "call them about when to take it again" not in page
