"""A stop date moved while the patient is opted out reaches them once they text START.

Booked Thursday 2026-03-12 09:00 (New York), warfarin to be stopped on Saturday the 7th. The
stop text ("Stop taking your warfarin on Saturday, March 7") went out on Friday the 6th at
10:00; at 10:30 the patient texts STOP. At noon the nurse moves the procedure to Thursday
the 19th, warfarin stopped on Saturday the 14th; the preview says the stop text is "not sent
again (the patient cannot receive texts)". On Monday the 9th the patient texts START: the
texts their opt-out held back are planned again (the day-before text, with the new time),
but the stop text, sent with the old date, is not: a re-plan sends a text again only inside
the reschedule itself, which is forgotten by then. The patient, receiving texts again, is
never told the new stop date (they stopped warfarin on the 7th, twelve days early, or, had
the date moved earlier, would not stop it in time), while a text the reschedule reset and
the opt-out then cancelled would have come back with START.
"""

from __future__ import annotations

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.patients.edits import reschedule_procedure
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, Enroll, ny, send_due


def test_start_after_a_move_made_while_opted_out_brings_the_new_stop_date(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    for at in ("2026-03-03T15:00", "2026-03-06T10:00"):
        send_due(session, transport, care, ny(at))
    record_opt_out(
        session=session,
        patient_id=result.patient.id,
        now=ny("2026-03-06T10:30"),
        reason=f"replied STOP: {OPTED_OUT}",
    )
    session.commit()
    reschedule_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        scheduled_at="2026-03-19T09:00",
        stop_blood_thinner_on="2026-03-14",
        care=care,
        now=ny("2026-03-06T12:00"),
        actor="nurse@example.org",
    )
    session.commit()
    record_opt_in(
        session=session, patient_id=result.patient.id, care=care, now=ny("2026-03-09T09:00")
    )
    session.commit()
    for at in ("2026-03-09T09:00", "2026-03-13T10:00", "2026-03-18T16:00", "2026-03-19T08:00"):
        send_due(session, transport, care, ny(at))
    after_start = [
        f"{sms.step}: {sms.body}" for sms in transport.sent if sms.now >= ny("2026-03-09T09:00")
    ]
    assert any("Your procedure is at 9:00 AM on Thursday, March 19" in t for t in after_start)
    assert any("Stop taking your warfarin on Saturday, March 14" in t for t in after_start), (
        "opted back in before the new stop date, the patient is never texted it (only the old "
        f"one, the 7th); sent after START: {after_start!r}"
    )
