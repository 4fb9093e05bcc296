"""A text sent again after a reschedule (it named the old stop date or booked time) must reach
the patient before the old date they hold comes round: they act on the date they were texted.

Booked Thursday 2026-03-12 09:00 (New York), warfarin to be stopped on Saturday the 7th. The
stop text went out on Friday the 6th at 10:00 ("Stop taking your warfarin on Saturday,
March 7"). At noon that Friday the nurse moves the procedure a week, to Thursday the 19th,
warfarin stopped on Saturday the 14th. The stop text is "planned again" at its usual time
for the new date, Friday the 13th at 10:00: on Saturday the 7th the patient, who has been
told nothing else, stops warfarin twelve days before the procedure (a week without their
anticoagulant), which is what the reschedule's resend was written to prevent.

Likewise the day-before text for Thursday the 12th at 9:00 went out on Wednesday the 11th
at 16:00; the procedure is moved that evening to the 19th: the new day-before text comes on
the 18th, and on the 12th the patient skips their warfarin, fasts and comes in with a driver
for a procedure that is not happening.
"""

from __future__ import annotations

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.patients.edits import reschedule_procedure
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, Enroll, ny, send_due


@pytest.mark.parametrize(
    ("sent_until", "moved_at", "old_date_starts", "new_words"),
    [
        # The stop text for Saturday the 7th went out; moved at noon on Friday the 6th.
        (
            "2026-03-06T10:00",
            "2026-03-06T12:00",
            "2026-03-07T00:00",
            "Stop taking your warfarin on Saturday, March 14",
        ),
        # The day-before text for Thursday the 12th went out; moved at 17:30 the evening before.
        (
            "2026-03-11T16:00",
            "2026-03-11T17:30",
            "2026-03-12T09:00",
            "Your procedure is at 9:00 AM on Thursday, March 19",
        ),
    ],
    ids=["stop-date", "booked-time"],
)
def test_the_corrected_text_goes_before_the_old_date_the_patient_holds(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
    sent_until: str,
    moved_at: str,
    old_date_starts: str,
    new_words: str,
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    for at in ("2026-03-03T15:00", "2026-03-06T10:00", "2026-03-11T16:00"):
        if ny(at) <= ny(sent_until):
            send_due(session, transport, care, ny(at))
    clock.set(ny(moved_at))
    reschedule_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        scheduled_at="2026-03-19T09:00",
        stop_blood_thinner_on="2026-03-14",
        care=care,
        now=clock.now(),
        actor="nurse@example.org",
    )
    session.commit()
    # The dispatcher runs every few seconds; tick at the move, in the evening, and in the
    # morning after quiet hours, up to the old date.
    for at in (moved_at, "2026-03-06T20:00", "2026-03-07T08:00", "2026-03-11T20:00"):
        if ny(moved_at) <= ny(at) < ny(old_date_starts):
            send_due(session, transport, care, ny(at))
    before_old_date = [
        f"{sms.now.isoformat()} {sms.step}: {sms.body}"
        for sms in transport.sent
        if ny(moved_at) <= sms.now < ny(old_date_starts)
    ]
    assert any(new_words in text for text in before_old_date), (
        f"the patient still holds the old date at {old_date_starts} (New York): no text with "
        f"{new_words!r} went out before it; sent since the move: {before_old_date!r}"
    )
