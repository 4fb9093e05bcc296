"""A nurse corrects the completion time to later after the blood-thinner restart went out.

The procedure was recorded as finished at 14:30 (Friday, New York); the restart text went
at 48 h, "You may restart your Eliquis from 3:30 PM on Sunday, March 8". At 16:00 on
Sunday a nurse corrects the end to 17:30: 48 hours after it is 6:30 PM. The patient has
been told to restart three hours early, and nothing can take the text back. The preview
of the correction said only "unchanged: sent", so the nurse confirmed without knowing
the patient must be called. It now says so, with both times."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.edits import preview_completion_change
from followup.patients.validation import EnrollmentResult
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import at, dispatch

Enroll = Callable[..., EnrollmentResult]


def _restart_sent(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: TwilioTransport,
) -> EnrollmentResult:
    clock.set(at("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    for moment in ("2026-03-06T14:35", "2026-03-07T10:00", "2026-03-08T15:30"):
        dispatch(session, transport, care, at(moment))
    return result


def test_a_later_completion_after_the_restart_went_out_tells_the_nurse_to_call(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    result = _restart_sent(session, care, clock, enroll, twilio_transport)
    bodies = [m["body"] for m in twilio_fake.messages.values()]
    assert any("You may restart your Eliquis from 3:30 PM on Sunday, March 8" in b for b in bodies)

    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at="2026-03-06T17:30", care=care, now=at("2026-03-08T16:00"),
    )  # fmt: skip
    note = {row.label: row.note for row in preview.rows}["Restart the blood thinner"]
    assert note == (
        "sent Sun 2026-03-08 15:30 EDT, before its time from the new completion "
        "(Sun 2026-03-08 18:30 EDT): call the patient, who may act on it too early"
    ), note


def test_an_earlier_completion_after_the_restart_went_out_needs_no_call(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # Ended at 12:30 instead: the text went after 48 h from the new time as well.
    result = _restart_sent(session, care, clock, enroll, twilio_transport)
    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at="2026-03-06T12:30", care=care, now=at("2026-03-08T16:00"),
    )  # fmt: skip
    note = {row.label: row.note for row in preview.rows}["Restart the blood thinner"]
    assert note == "unchanged: sent", note
