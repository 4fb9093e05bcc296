"""A booked procedure moved after some of its texts before it went out still gets the texts
before the new date: the stop-blood-thinner text naming the new stop date, and the
day-before text naming the new booked time. Otherwise the only stop date the patient was
ever texted is the old one (warfarin stopped twelve days before the procedure, or never
stopped for the new date), and nothing reminds them of the new time, of not taking the
blood thinner that morning, or of bringing someone to drive them home."""

from __future__ import annotations

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.patients.edits import preview_reschedule, reschedule_procedure
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, Enroll, ny, send_due


def _booked_and_moved(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
    *,
    sent_until: str,
    moved_at: str,
) -> None:
    """Booked Thursday 2026-03-12 09:00 (New York), warfarin stopped on Saturday the 7th;
    the texts due until `sent_until` go out, then at `moved_at` the procedure moves to
    Thursday 2026-03-19 09:00 with warfarin stopped on Saturday the 14th."""
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
    # Tick through the days before the new date.
    for at in (moved_at, "2026-03-13T10:00", "2026-03-18T16:00", "2026-03-19T08:00"):
        send_due(session, transport, care, ny(at))


def _bodies(transport: ScriptedTransport, after: str) -> list[str]:
    return [f"{sms.step}: {sms.body}" for sms in transport.sent if sms.now >= ny(after)]


def test_moved_after_the_stop_text_went_out_the_new_stop_date_is_texted(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    # The stop text for the 7th went out on Friday the 6th; the procedure is moved that noon.
    _booked_and_moved(
        session, care, clock, enroll, transport,
        sent_until="2026-03-06T10:00", moved_at="2026-03-06T12:00",
    )  # fmt: skip
    later = _bodies(transport, "2026-03-06T12:00")
    assert any("Stop taking your warfarin on Saturday, March 14" in body for body in later), (
        "after the move, no text names the new stop date; sent after it: " + repr(later)
    )


def test_moved_after_the_day_before_text_went_out_the_new_day_before_is_texted(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    # Every text before the procedure went out; the evening before, it is moved a week.
    _booked_and_moved(
        session, care, clock, enroll, transport,
        sent_until="2026-03-11T16:00", moved_at="2026-03-11T17:30",
    )  # fmt: skip
    later = _bodies(transport, "2026-03-11T17:30")
    assert any("Your procedure is at 9:00 AM on Thursday, March 19" in body for body in later), (
        "after the move, no text gives the new booked time; sent after it: " + repr(later)
    )
    assert any("Stop taking your warfarin on Saturday, March 14" in body for body in later), (
        "after the move, no text names the new stop date; sent after it: " + repr(later)
    )


def test_the_nurses_preview_says_which_sent_texts_go_again(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> None:
    # Every text before the procedure went out; the preview of a move a week later says the
    # stop and day-before texts go again, and the welcome (which names neither) does not.
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    for at in ("2026-03-03T15:00", "2026-03-06T10:00", "2026-03-11T16:00"):
        send_due(session, transport, care, ny(at))
    clock.set(ny("2026-03-11T17:30"))
    preview = preview_reschedule(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        scheduled_at="2026-03-19T09:00",
        stop_blood_thinner_on="2026-03-14",
        care=care,
        now=clock.now(),
    )
    notes = {row.label: row.note for row in preview.rows}
    again = [label for label, note in notes.items() if "sent again with the new one" in note]
    assert len(again) == 2, notes
    assert any("old stop date" in notes[label] for label in again), notes
    assert any("old booked time" in notes[label] for label in again), notes
    assert sum("unchanged: sent" in note for note in notes.values()) == 1, notes  # welcome
