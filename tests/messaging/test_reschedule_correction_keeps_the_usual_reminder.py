"""A procedure moved later after a text before it went out: the patient gets the correction
at once AND the usual text at its usual time before the new date.

Booked Thursday 2026-03-12 09:00 (New York; the clocks spring forward on the 8th), warfarin
to be stopped on Saturday the 7th. The stop text went out on Friday the 6th at 10:00, the
day-before text on Wednesday the 11th at 16:00. At 17:30 that Wednesday the nurse moves the
procedure a week, to Thursday the 19th, warfarin stopped on Saturday the 14th. The
corrections ("Stop taking your warfarin on Saturday, March 14", "Your procedure is at 9:00
AM on Thursday, March 19") go at once, so that the patient does not act on the old dates.
Before 2026-12-02 each correction took the place of the text due before the new date (one
row per step): nothing came on Friday the 13th to say "stop your warfarin tomorrow", nor on
Wednesday the 18th to say "take your morning medicines with sips of water, not your
warfarin, bring someone to drive you": the instructions that matter on the eve.

When the usual time is past, or comes soon after the correction (moved at night: the
correction waits for the morning; the usual text that afternoon), one text is enough.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import CANCELLED, Message
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.patients.edits import (
    cancel_patient_procedure,
    complete_procedure,
    preview_reschedule,
    reschedule_procedure,
)
from followup.patients.models import Procedure
from followup.patients.pages import patient_detail
from followup.sendlog.service import LogFilter, log_page
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import BOOKED, ENROLLED, NY, Enroll, local, ny, send_due

NEW_TIME = "Your procedure is at 9:00 AM on Thursday, March 19"
NEW_STOP = "Stop taking your warfarin on Saturday, March 14"


def _booked_all_sent(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> Procedure:  # fmt: skip
    """Every text before the Thursday-the-12th procedure went out (welcome, stop, day-before)."""
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    for at in ("2026-03-03T15:00", "2026-03-06T10:00", "2026-03-11T16:00"):
        send_due(session, transport, care, ny(at))
    assert transport.steps_sent() == ["welcome", "stop-blood-thinner", "day-before"]
    return result.procedure


def _move(
    session: so.Session, care: CareContext, procedure: Procedure, at: str, to: str,
    stop: str | None = None,
) -> None:  # fmt: skip
    reschedule_procedure(
        session=session,
        patient_id=procedure.patient_id,
        procedure_id=procedure.id,
        scheduled_at=to,
        stop_blood_thinner_on=stop,
        care=care,
        now=ny(at),
        actor="nurse@example.org",
    )
    session.commit()


def _sent_since(transport: ScriptedTransport, since: str) -> list[str]:
    return [f"{local(sms.now)} {sms.body}" for sms in transport.sent if sms.now >= ny(since)]


def _with(words: str, sent: list[str]) -> list[str]:
    return [text[:24] for text in sent if words in text]


def test_moved_a_week_later_the_corrections_go_at_once_and_the_usual_texts_at_their_time(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T17:30", "2026-03-19T09:00", "2026-03-14")
    for at in ("2026-03-11T17:30", "2026-03-11T17:31", "2026-03-13T10:00", "2026-03-18T16:00"):
        send_due(session, transport, care, ny(at))
    sent = _sent_since(transport, "2026-03-11T17:30")
    assert _with(NEW_STOP, sent) == ["Wed 2026-03-11 17:30 EDT", "Fri 2026-03-13 10:00 EDT"], sent
    assert _with(NEW_TIME, sent) == ["Wed 2026-03-11 17:30 EDT", "Wed 2026-03-18 16:00 EDT"], sent
    # The send log shows each text: the two sent at once beside the two sent since.
    rows = log_page(session=session, log_filter=LogFilter(), tz=NY).rows
    steps = sorted(row.message.step for row in rows if row.message.procedure_id == procedure.id)
    assert len(steps) == 5, steps  # the welcome, two corrections, the two usual texts


def test_moved_at_night_to_the_next_day_one_text_in_the_morning_none_at_night(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    # At 22:30 on Wednesday the 11th (quiet hours until 08:00) moved a day, to Friday 09:00:
    # the correction waits for 08:00; the usual time (Thursday 16:00) is the same day.
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-13T09:00")
    for at in ("2026-03-11T22:30", "2026-03-12T03:00", "2026-03-12T08:00", "2026-03-12T16:00"):
        send_due(session, transport, care, ny(at))
    sent = _sent_since(transport, "2026-03-11T22:30")
    assert _with("Your procedure is at 9:00 AM on Friday, March 13", sent) == [
        "Thu 2026-03-12 08:00 EDT"
    ], sent
    assert len(sent) == 1, sent  # the stop date did not move: nothing else


def test_a_second_move_corrects_the_correction_and_moves_the_usual_text_again(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T17:30", "2026-03-19T09:00", "2026-03-14")
    for at in ("2026-03-11T17:30", "2026-03-13T10:00"):  # the corrections, the stop text
        send_due(session, transport, care, ny(at))
    # On Monday the 16th it moves again, to Thursday the 26th, warfarin stopped on Saturday
    # the 21st: the patient holds March 19 (a correction) and March 14 (two texts).
    _move(session, care, procedure, "2026-03-16T11:00", "2026-03-26T09:00", "2026-03-21")
    for at in ("2026-03-16T11:00", "2026-03-18T16:00", "2026-03-20T10:00", "2026-03-25T16:00"):
        send_due(session, transport, care, ny(at))
    sent = _sent_since(transport, "2026-03-16T11:00")
    new_time = "Your procedure is at 9:00 AM on Thursday, March 26"
    new_stop = "Stop taking your warfarin on Saturday, March 21"
    assert _with(new_time, sent) == ["Mon 2026-03-16 11:00 EDT", "Wed 2026-03-25 16:00 EDT"], sent
    assert _with(new_stop, sent) == ["Mon 2026-03-16 11:00 EDT", "Fri 2026-03-20 10:00 EDT"], sent
    assert not _with("March 19", sent) and not _with("March 14", sent), sent
    assert len(sent) == 4, sent


def test_the_preview_shows_the_correction_and_the_usual_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    preview = preview_reschedule(
        session=session,
        patient_id=procedure.patient_id,
        procedure_id=procedure.id,
        scheduled_at="2026-03-19T09:00",
        stop_blood_thinner_on="2026-03-14",
        care=care,
        now=ny("2026-03-11T17:30"),
    )
    rows = [(row.label, row.new_local, row.note) for row in preview.rows]
    at_once = [r for r in rows if "sent again with the new one" in r[2]]
    usual = [r for r in rows if r[2] == "will be sent"]
    assert len(at_once) == 2 and len(usual) == 2, rows
    assert {r[0] for r in at_once} != {r[0] for r in usual}, rows  # told apart by their labels


def test_cancelling_or_opting_out_cancels_the_correction_and_the_usual_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    # Moved at night: the corrections wait for the morning, the usual texts for their days.
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-19T09:00", "2026-03-14")
    pending = lambda: session.scalars(  # noqa: E731
        sa.select(Message.step).where(
            Message.procedure_id == procedure.id, Message.status == "pending"
        )
    ).all()
    assert len(pending()) == 4, pending()
    record_opt_out(
        session=session, patient_id=procedure.patient_id, now=ny("2026-03-11T23:00"),
        reason=f"replied STOP: {OPTED_OUT}",
    )  # fmt: skip
    session.commit()
    assert pending() == []
    cancelled = session.scalars(
        sa.select(Message.step).where(
            Message.procedure_id == procedure.id, Message.status == CANCELLED
        )
    ).all()
    assert len(cancelled) == 4, cancelled


def test_cancelling_the_procedure_cancels_the_correction_and_the_usual_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T22:30", "2026-03-19T09:00", "2026-03-14")
    cancelled = cancel_patient_procedure(
        session=session, patient_id=procedure.patient_id, procedure_id=procedure.id,
        now=ny("2026-03-11T23:00"), actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    assert cancelled == 4
    for at in ("2026-03-12T08:00", "2026-03-13T10:00", "2026-03-18T16:00"):
        send_due(session, transport, care, ny(at))
    assert _sent_since(transport, "2026-03-11T22:30") == []


def test_start_brings_back_a_correction_only_when_its_step_text_is_not_soon(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    # Moved at 22:00 (corrections held for 08:00); STOP at 22:30; START on Friday the 13th
    # at 09:00, an hour before the stop text's usual time, days before the day-before's.
    _move(session, care, procedure, "2026-03-11T22:00", "2026-03-19T09:00", "2026-03-14")
    record_opt_out(
        session=session, patient_id=procedure.patient_id, now=ny("2026-03-11T22:30"),
        reason=f"replied STOP: {OPTED_OUT}",
    )  # fmt: skip
    session.commit()
    record_opt_in(
        session=session, patient_id=procedure.patient_id, care=care, now=ny("2026-03-13T09:00")
    )
    session.commit()
    for at in ("2026-03-13T09:00", "2026-03-13T10:00", "2026-03-18T16:00"):
        send_due(session, transport, care, ny(at))
    sent = _sent_since(transport, "2026-03-11T22:00")
    assert _with(NEW_STOP, sent) == ["Fri 2026-03-13 10:00 EDT"], sent
    assert _with(NEW_TIME, sent) == ["Fri 2026-03-13 09:00 EDT", "Wed 2026-03-18 16:00 EDT"], sent


def test_a_procedure_finished_before_its_corrections_went_cancels_them(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    # Moved at 22:00 on the 11th (corrections held for 08:00); it was done after all, early
    # on the 12th (the nurse records it at 07:30): nothing before it goes out any more.
    _move(session, care, procedure, "2026-03-11T22:00", "2026-03-19T09:00", "2026-03-14")
    complete_procedure(
        session=session, patient_id=procedure.patient_id, procedure_id=procedure.id,
        completed_at="2026-03-12T07:00", care=care, now=ny("2026-03-12T07:30"),
        actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    for at in ("2026-03-12T08:00", "2026-03-13T10:00", "2026-03-18T16:00"):
        send_due(session, transport, care, ny(at))
    sent = _sent_since(transport, "2026-03-11T22:00")
    assert not _with("March 19", sent) and not _with("March 14", sent), sent
    corrections = session.scalars(
        sa.select(Message.status).where(
            Message.procedure_id == procedure.id, Message.step.endswith(".correction")
        )
    ).all()
    assert sorted(corrections) == [CANCELLED, CANCELLED], corrections


def test_the_patient_page_shows_the_correction_with_its_words_beside_the_usual_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll,
    transport: ScriptedTransport,
) -> None:  # fmt: skip
    procedure = _booked_all_sent(session, care, clock, enroll, transport)
    _move(session, care, procedure, "2026-03-11T22:00", "2026-03-19T09:00", "2026-03-14")
    detail = patient_detail(session=session, patient_id=procedure.patient_id, care=care)
    pending = {e.title: e.body or "" for e in detail.timeline if e.status == "pending"}
    assert sorted(pending) == [
        "Stop the blood thinner", "Stop the blood thinner (correction)",
        "The day before", "The day before (correction)",
    ], pending  # fmt: skip
    assert NEW_TIME in pending["The day before (correction)"], pending
    assert NEW_STOP in pending["Stop the blood thinner (correction)"], pending
