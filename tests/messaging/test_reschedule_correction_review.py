"""Review of the corrections a reschedule sends (`corrections.py`): a move undone before
they went, a procedure cancelled after one went, a failed correction of a critical text.

Booked Thursday 2026-03-12 09:00 (New York), warfarin stopped on Saturday the 7th; the stop
text went on Friday the 6th, the day-before text on Wednesday the 11th at 16:00
(`test_reschedule_correction_keeps_the_usual_reminder.py`).
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.items import TEXT
from followup.inbox.queue import attention_queue
from followup.messaging.models import FAILED, SENDING, Message
from followup.messaging.status import record_status_callback
from followup.patients.edits import cancel_patient_procedure, preview_reschedule
from followup.patients.sent import told_to_stop_blood_thinner
from tests.fakes.transport import ScriptedTransport
from tests.messaging.test_reschedule_correction_keeps_the_usual_reminder import (
    _booked_all_sent,
    _move,
    _sent_since,
)
from tests.patients.test_booked import BOOKED, ENROLLED, Enroll, ny, send_due


def test_a_move_undone_at_night_before_the_corrections_went_sends_nothing(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # Moved a week at 22:30 (the corrections wait for 08:00), put back at 22:45: the
    # patient holds the right date and stop date (texted on the 6th and at 16:00). Before
    # the fix the corrections went at 08:00 anyway: "Stop taking your warfarin on Saturday,
    # March 7" five days after it, and the day-before text again an hour before the
    # procedure, past that text's window (3 hours before).
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-19T09:00", "2026-03-14")
    _move(session, care, procedure, "2026-03-11T22:45", "2026-03-12T09:00", "2026-03-07")
    for at in ("2026-03-11T22:45", "2026-03-12T08:00", "2026-03-13T10:00", "2026-03-18T16:00"):
        send_due(session, transport, care, ny(at))
    assert _sent_since(transport, "2026-03-11T22:30") == []


def test_cancelled_after_a_move_the_nurse_is_told_the_patient_was_texted_to_stop(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # The stop text went on the 6th and its correction at 17:30 (stop on the 14th); the
    # stop step's own row waits for the 13th. Cancelled at 18:00: the patient was texted
    # twice to stop their warfarin and nothing will say when to take it again. Before the
    # fix no warning: the step's row had lost its SID and the correction's key was unknown.
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T17:30", "2026-03-19T09:00", "2026-03-14")
    send_due(session, transport, care, ny("2026-03-11T17:30"))
    cancel_patient_procedure(
        session=session, patient_id=procedure.patient_id, procedure_id=procedure.id,
        now=ny("2026-03-11T18:00"), actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    warning = told_to_stop_blood_thinner(session=session, procedure_id=procedure.id, care=care)
    assert warning is not None and "was texted to stop" in warning, warning
    assert "March 14" in warning, warning


def test_cancelled_before_the_correction_went_the_stop_text_sent_still_counts(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # Moved at 22:30 (the corrections wait for 08:00), cancelled at 23:00: both pending
    # texts are cancelled, but the stop text of the 6th reached the patient.
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-19T09:00", "2026-03-14")
    cancel_patient_procedure(
        session=session, patient_id=procedure.patient_id, procedure_id=procedure.id,
        now=ny("2026-03-11T23:00"), actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    warning = told_to_stop_blood_thinner(session=session, procedure_id=procedure.id, care=care)
    assert warning is not None and "was texted to stop" in warning, warning


def test_a_failed_correction_of_a_critical_text_is_in_the_nurses_queue(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # A clinic marks its stop text critical: its correction failing leaves the patient
    # with the old stop date, as much a person's to follow up as the stop text failing.
    protocols = {
        kind: replace(
            protocol,
            steps=tuple(
                replace(s, critical=True) if s.key == "stop-blood-thinner" else s
                for s in protocol.steps
            ),
        )
        for kind, protocol in care.protocols.items()
    }
    care = replace(care, protocols=protocols)
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-19T09:00", "2026-03-14")
    correction = session.scalars(
        sa.select(Message).where(
            Message.procedure_id == procedure.id, Message.step == "stop-blood-thinner.correction"
        )
    ).one()
    correction.status, correction.updated_at = FAILED, ny("2026-03-12T08:00")
    session.commit()
    queue = attention_queue(session=session, critical_steps=care.critical_steps())
    assert [i.item_id for i in queue.items if i.kind == TEXT] == [correction.id], queue.items


def test_moved_again_while_the_corrections_are_in_flight_the_new_dates_go_at_once(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # Moved a week at 17:30; the corrections (stop on the 14th, the 19th) are handed to
    # the provider, their outcome unknown, when at 17:35 the nurse moves it again (the 26th,
    # stop on the 21st). They may reach the patient: before the fix nothing said the new
    # stop date until the 20th, six days after the patient stopped their warfarin.
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T17:30", "2026-03-19T09:00", "2026-03-14")
    corrections = session.scalars(
        sa.select(Message).where(
            Message.procedure_id == procedure.id, Message.step.endswith(".correction")
        )
    ).all()
    for correction in corrections:  # as the dispatcher leaves them, waiting on the answer
        correction.status, correction.attempts = SENDING, 1
        correction.claimed_at = correction.handed_at = ny("2026-03-11T17:30")
    session.commit()
    _move(session, care, procedure, "2026-03-11T17:35", "2026-03-26T09:00", "2026-03-21")
    send_due(session, transport, care, ny("2026-03-11T17:35"))
    sent = _sent_since(transport, "2026-03-11T17:35")
    assert [text[:24] for text in sent if "Saturday, March 21" in text] == [
        "Wed 2026-03-11 17:35 EDT"
    ], sent
    assert [text[:24] for text in sent if "Thursday, March 26" in text] == [
        "Wed 2026-03-11 17:35 EDT"
    ], sent
    session.expire_all()
    # If they did not reach the patient, they are never sent: the new dates went.
    assert all(c.expires_at <= ny("2026-03-11T17:35") for c in corrections), corrections


def test_moved_again_while_the_usual_stop_text_is_in_flight_the_new_date_goes_at_once(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # Moved a week at 17:30 on the 11th, the corrections went at once (stop on the 14th).
    # On Friday the 13th at 10:00 the usual stop text (stop tomorrow, the 14th) is handed
    # to the provider, its outcome unknown, when the nurse moves the procedure again (the
    # 26th, stop on the 21st). The patient has the 14th from the correction, maybe twice:
    # before the fix nothing was sent before the 20th (the correction "unchanged: sent",
    # the stop text only re-timed), and they stopped their warfarin a week early.
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T17:30", "2026-03-19T09:00", "2026-03-14")
    send_due(session, transport, care, ny("2026-03-11T17:30"))
    stop = session.scalars(
        sa.select(Message).where(
            Message.procedure_id == procedure.id, Message.step == "stop-blood-thinner"
        )
    ).one()
    stop.status, stop.attempts = SENDING, 1
    stop.claimed_at = stop.handed_at = ny("2026-03-13T10:00")
    session.commit()
    _move(session, care, procedure, "2026-03-13T10:01", "2026-03-26T09:00", "2026-03-21")
    send_due(session, transport, care, ny("2026-03-13T10:01"))
    sent = _sent_since(transport, "2026-03-13T10:01")
    assert [text[:24] for text in sent if "Saturday, March 21" in text] == [
        "Fri 2026-03-13 10:01 EDT"
    ], sent


def test_moved_while_the_day_before_text_is_in_flight_one_correction_and_no_repeat(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # The day-before text ("9:00 AM") is handed over at 16:00 on the 11th, its outcome
    # unknown, when the nurse moves the procedure to 13:00 the same Thursday: the text may
    # reach the patient with 9:00, so the correction goes at once; the step's own text is
    # not sent again (its time is now), even if it did not reach them: one text says it.
    clock.set(ENROLLED)
    procedure = enroll(**BOOKED).procedure
    for at in ("2026-03-03T15:00", "2026-03-06T10:00"):
        send_due(session, transport, care, ny(at))
    day_before = session.scalars(
        sa.select(Message).where(Message.procedure_id == procedure.id, Message.step == "day-before")
    ).one()
    day_before.status, day_before.attempts = SENDING, 1
    day_before.claimed_at = day_before.handed_at = ny("2026-03-11T16:00")
    session.commit()
    _move(session, care, procedure, "2026-03-11T16:01", "2026-03-12T13:00")
    send_due(session, transport, care, ny("2026-03-11T16:01"))
    assert [text[:24] for text in _sent_since(transport, "2026-03-11T16:01")] == [
        "Wed 2026-03-11 16:01 EDT"
    ]
    assert "1:00 PM on Thursday, March 12" in transport.sent[-1].body
    session.expire_all()
    assert day_before.expires_at <= ny("2026-03-11T16:01")  # never sent again


def test_moved_again_after_the_correction_was_undelivered_it_goes_again_at_once(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # The stop text ("stop on Saturday, March 7") went on Friday the 6th at 10:00. At
    # noon the procedure moves a week (stop on the 14th); the correction is reported
    # undelivered (30003, the phone off). At 15:00 it moves again (stop on the 21st): the
    # patient still holds "stop tomorrow, the 7th". Before the fix nothing was sent before
    # the 20th (the correction was neither held nor still to go, the stop step's own row
    # planned again for its usual time): they stopped their warfarin two weeks early.
    clock.set(ENROLLED)
    procedure = enroll(**BOOKED).procedure
    for at in ("2026-03-03T15:00", "2026-03-06T10:00"):
        send_due(session, transport, care, ny(at))
    _move(session, care, procedure, "2026-03-06T12:00", "2026-03-19T09:00", "2026-03-14")
    send_due(session, transport, care, ny("2026-03-06T12:00"))
    correction = session.scalars(
        sa.select(Message).where(
            Message.procedure_id == procedure.id, Message.step == "stop-blood-thinner.correction"
        )
    ).one()
    assert correction.provider_sid is not None
    record_status_callback(
        session=session, provider_sid=correction.provider_sid, status="undelivered",
        error_code=30003, now=ny("2026-03-06T12:05"), care=care,
    )  # fmt: skip
    session.commit()
    _move(session, care, procedure, "2026-03-06T15:00", "2026-03-26T09:00", "2026-03-21")
    send_due(session, transport, care, ny("2026-03-06T15:00"))
    sent = _sent_since(transport, "2026-03-06T15:00")
    assert [text[:24] for text in sent if "Saturday, March 21" in text] == [
        "Fri 2026-03-06 15:00 EST"
    ], sent


def test_a_correction_still_to_go_that_cannot_go_in_time_tells_the_nurse_to_call(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    # The stop text ("stop on Saturday, March 7") went on Friday the 6th at 10:00. At
    # 22:00 the procedure moves a week (its correction waits for 08:00); at 22:30 the nurse
    # sets the stop date to today, the 6th, past the stop text's window: no text can say it
    # in time. The preview said "unchanged: pending" (before the correction was kept and
    # sent after that window) and no call, while the patient holds the 7th.
    clock.set(ENROLLED)
    procedure = enroll(**BOOKED).procedure
    for at in ("2026-03-03T15:00", "2026-03-06T10:00"):
        send_due(session, transport, care, ny(at))
    _move(session, care, procedure, "2026-03-06T22:00", "2026-03-19T09:00", "2026-03-14")
    preview = preview_reschedule(
        session=session, patient_id=procedure.patient_id, procedure_id=procedure.id,
        scheduled_at="2026-03-12T09:00", stop_blood_thinner_on="2026-03-06", care=care,
        now=ny("2026-03-06T22:30"),
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert "call the patient" in notes["Stop the blood thinner (correction)"], notes
