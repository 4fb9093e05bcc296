"""STOP and START around a booked procedure: a procedure finished or rescheduled while
the patient is opted out is re-planned when they reply START, its texts after it go once,
the first carrying the introduction (HELP, STOP, rates), nothing from before it goes late,
and START never deadlocks with a nurse's edit."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.messaging import opt_in
from followup.messaging.models import Message, MessageEvent
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.edits import (
    change_completion_time,
    complete_procedure,
    preview_completion_change,
    reschedule_procedure,
)
from followup.patients.validation import EnrollmentResult
from tests.patients.test_booked import Enroll, ny, send_due
from tests.patients.test_intro import HELP, StepTransport


def booked_then_stop(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: StepTransport,
    *,
    at: str,
    sent: list[str],
    reason: str = "patient replied STOP (opted out)",
) -> EnrollmentResult:
    """Enrolled at `at` for a procedure booked on the 12th, 09:00; the texts due then are
    dispatched (`sent` go out); the patient opts out 5 minutes later."""
    enrolled = ny(at)
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    assert send_due(session, transport, care, enrolled) == sent
    patient_id = result.patient.id
    record_opt_out(session=session, patient_id=patient_id, now=enrolled + timedelta(minutes=5),
                   reason=reason)  # fmt: skip
    session.commit()
    return result


def finish(
    session: so.Session, care: CareContext, result: EnrollmentResult, local: str, now: datetime
) -> None:
    """A nurse marks the procedure finished at `local` (committed)."""
    complete_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local, care=care, now=now, actor="nurse",
    )  # fmt: skip
    session.commit()


def start_again(
    session: so.Session, care: CareContext, result: EnrollmentResult, now: datetime
) -> None:
    """The patient replies START (committed)."""
    record_opt_in(session=session, patient_id=result.patient.id, care=care, now=now)
    session.commit()


def test_finished_while_opted_out_then_start_plans_the_texts_after_it(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A booked patient replies STOP; the procedure is finished while they are opted out;
    # they reply START: the texts after the procedure are planned then (and none before it).
    transport = StepTransport()
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T15:00", sent=["welcome"]
    )
    done = ny("2026-03-12T10:30")
    finish(session, care, result, "2026-03-12T10:15", done)
    back = done + timedelta(minutes=5)
    start_again(session, care, result, back)
    for at in (back, ny("2026-03-13T10:00")):
        send_due(session, transport, care, at)
    assert transport.steps_sent() == ["welcome", "no-driving", "soreness"]


@pytest.mark.parametrize(
    ("start_at", "first"),
    [
        ("2026-03-03T15:20", "no-driving"),  # the same afternoon: no-driving carries it
        ("2026-03-04T09:00", "welcome"),  # next morning: soreness cannot, the welcome goes
    ],
)
def test_stop_then_finished_then_start_sends_the_intro_once_after_the_procedure(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    start_at: str,
    first: str,
) -> None:
    # The welcome times out; the patient replies STOP; the nurse marks the procedure finished
    # while they are opted out; the reaper does not find the welcome at Twilio; the patient
    # replies START. The texts after the procedure go, the first with the intro: no-driving
    # if its window is still open, else the welcome (never the welcome beside an intro).
    transport = StepTransport(time_out={"welcome"}, provider_has=[])
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T15:00", sent=[]
    )
    done = ny("2026-03-03T15:06")
    finish(session, care, result, "2026-03-03T15:05", done)
    later = done + timedelta(minutes=10)
    reap_stale(session=session, transport=transport, now=later)
    send_due(session, transport, care, later)
    back = ny(start_at)
    start_again(session, care, result, back)
    for at in (back, back + timedelta(hours=1), ny("2026-03-04T10:00"), ny("2026-03-06T10:00")):
        send_due(session, transport, care, at)
    steps = {m.step: m.status for m in session.scalars(sa.select(Message))}
    assert transport.steps_sent()[:1] == [first], (transport.steps_sent(), steps)
    assert [sms.step for sms in transport.sent if HELP in sms.body] == [first]


def test_start_the_day_after_a_procedure_finished_while_opted_out_sends_the_intro(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Opted out by staff while the welcome waited for the morning (quiet hours), so it was
    # never sent; the procedure is finished meanwhile; START the next morning, once
    # no-driving's window has passed: the welcome goes as the intro, then soreness.
    transport = StepTransport()
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T22:00", sent=[],
        reason="opted out by phone call, recorded by staff",
    )  # fmt: skip
    finish(session, care, result, "2026-03-12T10:15", ny("2026-03-12T10:30"))
    back = ny("2026-03-13T09:00")
    start_again(session, care, result, back)
    for at in (back, ny("2026-03-13T10:00"), ny("2026-03-15T10:00"), ny("2026-03-19T10:00")):
        send_due(session, transport, care, at)
    assert transport.steps_sent()[:2] == ["welcome", "soreness"]
    assert [sms.step for sms in transport.sent if HELP in sms.body] == ["welcome"]


def test_the_preview_for_an_opted_out_patient_says_what_finishing_does(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The welcome times out, the patient replies STOP, a nurse previews "Procedure
    # finished": the welcome's window closes now, the texts after it wait for START.
    transport = StepTransport(time_out={"welcome"}, provider_has=[])
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T15:00", sent=[]
    )
    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at="2026-03-03T15:05", care=care, now=ny("2026-03-03T15:06"),
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert notes["Welcome"] == (
        "being sent now; if it does not reach the patient, it is not sent again: procedure finished"
    )
    assert notes["No driving today"] == "planned if the patient texts START"


class RefusesTheWelcome(StepTransport):
    """Twilio refuses the welcome (503, never at Twilio) while `down`."""

    down = True

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == "welcome" and self.down:
            raise TransientSendError("503", "unavailable", maybe_sent=False)
        return super().send(sms)


def test_start_after_an_opt_out_that_cancelled_the_welcome_chosen_as_the_intro(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Twilio refuses the welcome until its window closes at the booked time. The procedure
    # is finished late on the 12th (no-driving's window has passed): the welcome comes
    # back as the intro, due the next morning. Staff record an opt-out that night; the
    # patient replies START the next morning: the welcome goes first, as the intro.
    transport = RefusesTheWelcome()
    enrolled = ny("2026-03-11T16:30")
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    assert send_due(session, transport, care, enrolled) == ["day-before"]
    for at in (ny("2026-03-11T20:00"), ny("2026-03-12T08:30"), ny("2026-03-12T09:30")):
        send_due(session, transport, care, at)
    session.expire_all()
    welcome = session.scalars(sa.select(Message).where(Message.step == "welcome")).one()
    assert (welcome.status, welcome.attempts > 0, welcome.provider_sid) == ("expired", True, None)
    finish(session, care, result, "2026-03-12T14:00", ny("2026-03-12T22:00"))
    session.expire_all()
    transport.down = False
    assert (welcome.status, result.procedure.intro_step) == ("pending", "welcome")
    record_opt_out(session=session, patient_id=result.patient.id, now=ny("2026-03-12T23:00"),
                   reason="opted out by phone call, recorded by staff")  # fmt: skip
    session.commit()
    back = ny("2026-03-13T09:00")
    start_again(session, care, result, back)
    for at in (back, ny("2026-03-13T10:00"), ny("2026-03-15T10:00"), ny("2026-03-19T10:00")):
        send_due(session, transport, care, at)
    after = [sms for sms in transport.sent if sms.step != "day-before"]
    assert [sms.step for sms in after][:2] == ["welcome", "soreness"]
    assert [sms.step for sms in after if HELP in sms.body] == ["welcome"]


def test_the_preview_for_an_opted_out_patient_does_not_promise_a_closed_window(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    transport = StepTransport()
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T15:00", sent=["welcome"]
    )
    preview = preview_completion_change(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at="2026-03-12T10:00", care=care, now=ny("2026-03-12T22:30"),
    )  # fmt: skip
    notes = {row.label: row.note for row in preview.rows}
    assert notes["No driving today"] == "not sent: its window has passed"


def test_start_and_a_nurse_finishing_the_procedure_at_once_do_not_deadlock(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # START re-plans a procedure rescheduled while opted out (it locks its texts); a nurse
    # marks it finished at that moment (her edit locks the procedure, then its texts).
    # Both lock the procedure first, so neither is a deadlock's victim.
    if not is_postgresql(session):
        pytest.skip("row locks and deadlock detection are PostgreSQL's; SQLite has one writer")
    transport = StepTransport()
    result = booked_then_stop(
        session, care, clock, enroll, transport, at="2026-03-03T15:00", sent=["welcome"]
    )
    patient_id, procedure_id = result.patient.id, result.procedure.id
    reschedule_procedure(
        session=session, patient_id=patient_id, procedure_id=procedure_id,
        scheduled_at="2026-03-13T09:00", care=care, now=ny("2026-03-03T16:00"), actor="nurse",
    )  # fmt: skip
    session.commit()
    errors: list[tuple[str, BaseException]] = []
    nurse_now = ny("2026-03-13T10:30")

    def nurse() -> None:
        with session_factory() as other:
            try:
                complete_procedure(
                    session=other, patient_id=patient_id, procedure_id=procedure_id,
                    completed_at="2026-03-13T10:15", care=care, now=nurse_now, actor="nurse",
                )  # fmt: skip
                other.commit()
            except Exception as exc:  # noqa: BLE001 - the test reports it
                errors.append(("nurse", exc))

    original = opt_in.maybe_at_provider
    threads: list[threading.Thread] = []

    def between(s: so.Session, ids: list[int]) -> set[int]:
        # START holds what it locked so far; the nurse's request comes now.
        if not threads:
            threads.append(threading.Thread(target=nurse))
            threads[0].start()
            time.sleep(0.5)  # long enough for her to take every lock she can
        return original(s, ids)

    monkeypatch.setattr(opt_in, "maybe_at_provider", between)
    try:
        record_opt_in(
            session=session, patient_id=patient_id, care=care, now=nurse_now - timedelta(minutes=1)
        )
        session.commit()
    except Exception as exc:  # noqa: BLE001 - the test reports it
        errors.append(("START", exc))
        session.rollback()
    for thread in threads:
        thread.join(timeout=30)
    assert threads and errors == []


def test_start_after_a_correction_while_opted_out_brings_a_text_back_once_in_its_history(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Finished at 14:00, no-driving sent; STOP at 15:00 cancels the rest; a nurse corrects
    # the end by ten minutes while the patient is opted out (the procedure is left
    # unplanned); START brings soreness back, and re-planning finds it already so.
    transport = StepTransport()
    clock.set(ny("2026-03-12T14:05"))
    result = enroll(completed_at="2026-03-12T14:00")
    assert send_due(session, transport, care, clock.now()) == ["no-driving"]
    record_opt_out(session=session, patient_id=result.patient.id, now=ny("2026-03-12T15:00"),
                   reason="patient replied STOP (opted out)")  # fmt: skip
    change_completion_time(
        session=session, procedure_id=result.procedure.id, completed_at="2026-03-12T14:10",
        care=care, now=ny("2026-03-12T15:30"), actor="nurse",
    )  # fmt: skip
    session.commit()
    record_opt_in(
        session=session, patient_id=result.patient.id, care=care, now=ny("2026-03-12T16:00")
    )
    session.commit()
    soreness = session.scalars(sa.select(Message).where(Message.step == "soreness")).one()
    assert (soreness.status, soreness.due_at) == ("pending", ny("2026-03-13T10:00"))
    kinds = session.scalars(
        sa.select(MessageEvent.kind).where(MessageEvent.message_id == soreness.id)
        .order_by(MessageEvent.id)
    ).all()  # fmt: skip
    assert kinds == ["planned", "cancelled", "replanned"]
    assert send_due(session, transport, care, ny("2026-03-13T10:00")) == ["soreness"]


def test_start_after_the_intro_texts_window_hands_the_intro_to_another_text(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Finished at 14:00; staff record an opt-out by phone before no-driving (the intro's
    # text) goes; START comes at 22:00, after no-driving's window (21:00): no-driving stays
    # cancelled, so another text must carry HELP, STOP and the rates: the welcome, the
    # next morning, before soreness.
    transport = StepTransport()
    clock.set(ny("2026-03-12T14:05"))
    result = enroll(completed_at="2026-03-12T14:00")
    record_opt_out(session=session, patient_id=result.patient.id, now=ny("2026-03-12T14:06"),
                   reason="opted out by phone call, recorded by staff")  # fmt: skip
    session.commit()
    start_again(session, care, result, ny("2026-03-12T22:00"))
    for at in (ny("2026-03-13T08:00"), ny("2026-03-13T10:00"), ny("2026-03-15T10:00")):
        send_due(session, transport, care, at)
    assert transport.steps_sent()[:2] == ["welcome", "soreness"]
    assert [sms.step for sms in transport.sent if HELP in sms.body] == ["welcome"]


def test_start_after_the_booked_time_leaves_the_intro_to_the_texts_after_the_procedure(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Twilio refuses the welcome (never at Twilio) while the day-before text goes; staff
    # record an opt-out that evening, which cancels the welcome waiting for its retry; the
    # patient replies START after the booked time, before the nurse marks the procedure
    # finished. No text before the procedure is left to carry the intro; once it is
    # finished, the first text after it must.
    transport = RefusesTheWelcome()
    enrolled = ny("2026-03-11T16:30")
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    assert send_due(session, transport, care, enrolled) == ["day-before"]
    record_opt_out(session=session, patient_id=result.patient.id, now=ny("2026-03-11T20:00"),
                   reason="opted out by phone call, recorded by staff")  # fmt: skip
    session.commit()
    transport.down = False
    start_again(session, care, result, ny("2026-03-12T10:00"))
    finish(session, care, result, "2026-03-12T13:00", ny("2026-03-12T13:30"))
    for at in (ny("2026-03-12T13:30"), ny("2026-03-13T10:00"), ny("2026-03-15T10:00")):
        send_due(session, transport, care, at)
    after = [sms for sms in transport.sent if sms.step != "day-before"]
    assert [sms.step for sms in after][:2] == ["no-driving", "soreness"]
    assert [sms.step for sms in after if HELP in sms.body] == ["no-driving"]
