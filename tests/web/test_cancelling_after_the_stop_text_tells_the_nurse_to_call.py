"""A procedure cancelled after the patient stopped their blood thinner for it.

The patient got "Stop taking your warfarin on Saturday, March 7"; the procedure is then
cancelled. Every pending text is cancelled with it, and no text will ever tell the patient
when to take their warfarin again: a patient off an anticoagulant for a procedure that
will not happen. The nurse who cancels it saw only "Procedure cancelled; 1 pending texts
cancelled." The page now tells her to call the patient. The same holds for a procedure
cancelled once done (entered in error, say) before its restart text went out."""

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
    "The patient was texted to stop their warfarin on Saturday, March 7 for this procedure, "
    "and no text will tell them when to take it again: call them."
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
    assert "no text will tell them when to take it again" not in page


def test_cancelling_a_done_procedure_before_its_restart_went_out_tells_the_nurse_to_call(
    signed_in: Callable[[str], Browser],
    enroll: Enroll,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    clock.set(ny("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    send_due(session, transport, care, ny("2026-03-06T14:35"))  # no driving
    clock.set(ny("2026-03-07T12:00"))
    page = _cancel(signed_in, result)
    assert (
        "The patient stopped their Eliquis for this procedure, and no text will tell them "
        "when to take it again: call them."
    ) in page


def test_cancelling_a_done_procedure_after_its_restart_went_out_says_nothing_more(
    signed_in: Callable[[str], Browser],
    enroll: Enroll,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
) -> None:
    clock.set(ny("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    for moment in ("2026-03-06T14:35", "2026-03-07T10:00", "2026-03-08T15:30"):
        send_due(session, transport, care, ny(moment))
    assert any("You may restart your Eliquis" in sms.body for sms in transport.sent)
    clock.set(ny("2026-03-08T16:00"))
    page = _cancel(signed_in, result)
    assert "no text will tell them when to take it again" not in page
