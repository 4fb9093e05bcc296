"""A reschedule moves the blood-thinner stop date to a day whose reminder can no longer go.

Booked for Thursday, March 12 with warfarin stopped on Saturday the 7th; the patient was
texted "Stop taking your warfarin on Saturday, March 7" on Friday at 10:00. At noon that
Friday the procedure moves to Monday the 9th, and the doctor wants warfarin stopped today,
Friday the 6th. The new reminder's window (until 09:00 on the stop date) has passed, so
it is not sent, and the only stop date the patient knows is the old, later one. The
preview said "unchanged: sent" for that text; it now says the patient must be called."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.patients.edits import preview_reschedule
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, ny, send_due

Enroll = Callable[..., EnrollmentResult]


def test_a_stop_date_moved_past_its_reminder_tells_the_nurse_to_call(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    send_due(session, transport, care, ENROLLED)
    send_due(session, transport, care, ny("2026-03-06T10:00"))
    assert any("Stop taking your warfarin on Saturday, March 7" in s.body for s in transport.sent)
    preview = preview_reschedule(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        scheduled_at="2026-03-09T09:00", stop_blood_thinner_on="2026-03-06", care=care,
        now=ny("2026-03-06T12:00"),
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert notes["Stop the blood thinner"] == (
        "sent with the old stop date; the new one cannot be texted in time: call the patient"
    ), notes
    assert notes["Welcome"] == "unchanged: sent", notes  # names neither
