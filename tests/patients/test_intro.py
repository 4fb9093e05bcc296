"""The introduction (HELP, STOP, rates) reaches the patient once a booked procedure is
finished, whatever became of the welcome: timed out (Twilio may or may not have it), refused
for now, or re-timed as the intro and then corrected. The welcome never goes out after the
procedure, and some text carries the intro."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.replan import record_opt_in
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.edits import (
    change_completion_time,
    complete_procedure,
    preview_completion_change,
)
from followup.patients.models import Procedure
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import Enroll, local_input, ny, send_due

HELP = "Reply HELP for help or STOP to end them."


@dataclass
class StepTransport(ScriptedTransport):
    """Times out (maybe sent, not at the provider) once for each step in `time_out`."""

    time_out: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)  # refused for now, never at the provider

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step in self.time_out:
            self.time_out.discard(sms.step)
            raise TransientSendError("timeout", "no answer", maybe_sent=True)
        if sms.step in self.refuse:
            self.refuse.discard(sms.step)
            raise TransientSendError("503", "unavailable", maybe_sent=False)
        return super().send(sms)


def welcome(session: so.Session) -> Message:
    return session.scalars(sa.select(Message).where(Message.step == "welcome")).one()


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


def test_a_closed_welcome_leaves_the_intro_to_no_driving_though_day_before_was_sent(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Enrolled the afternoon before the procedure: the welcome and the day-before text go
    # out in the same pass. The welcome times out (not at Twilio); the day-before is sent.
    transport = StepTransport(time_out={"welcome"}, provider_has=[])
    enrolled = ny("2026-03-11T16:30")
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    assert sorted(send_due(session, transport, care, enrolled)) == ["day-before"]
    assert (welcome(session).status, welcome(session).handed_at is not None) == ("sending", True)

    # Finished within minutes, before the reaper asked Twilio.
    done = enrolled + timedelta(minutes=2)
    complete_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local_input(done - timedelta(minutes=1)), care=care, now=done,
        actor="nurse",
    )  # fmt: skip
    session.commit()
    session.expire_all()
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None
    intro_step = procedure.intro_step

    later = done + timedelta(minutes=10)
    reap_stale(session=session, transport=transport, now=later)
    session.expire_all()
    assert welcome(session).status == "expired"  # never reached the patient
    for at in (later, later + timedelta(hours=1), ny("2026-03-13T10:00")):
        send_due(session, transport, care, at)
    bodies = {sms.step: sms.body for sms in transport.sent}
    assert "welcome" not in bodies
    # The welcome never came: no-driving carries HELP, STOP and the rates.
    assert any(HELP in body for body in bodies.values()), (intro_step, sorted(bodies))


def test_a_welcome_re_timed_as_the_intro_stays_the_intro_through_a_correction(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The welcome times out; the nurse records the procedure as finished the day before
    # (no-driving's window has passed, and soreness cannot carry the intro), so the planner
    # picks the welcome again as the intro and re-times it. Soreness goes; then the nurse
    # corrects the completion time by half an hour: the welcome is still the intro.
    transport = StepTransport(time_out={"welcome"}, provider_has=[])
    enrolled = ny("2026-03-12T10:00")
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-13T09:00")
    assert send_due(session, transport, care, enrolled) == []
    done = enrolled + timedelta(minutes=2)
    complete_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local_input(ny("2026-03-11T09:00")), care=care, now=done, actor="nurse",
    )  # fmt: skip
    session.commit()
    session.expire_all()
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.intro_step == "welcome"
    assert welcome(session).status == "sending"  # re-timed: outcome still unknown
    assert send_due(session, transport, care, done) == ["soreness"]  # without the intro
    assert HELP not in transport.sent[-1].body
    fix = done + timedelta(minutes=1)
    change_completion_time(
        session=session, procedure_id=result.procedure.id,
        completed_at=local_input(ny("2026-03-11T09:30")), care=care, now=fix, actor="nurse",
    )  # fmt: skip
    session.commit()
    session.expire_all()
    assert (procedure.intro_step, welcome(session).status) == ("welcome", "sending")
    later = fix + timedelta(minutes=20)
    assert reap_stale(session=session, transport=transport, now=later).requeued == 1
    for at in (later, later + timedelta(hours=1), ny("2026-03-16T10:00")):
        send_due(session, transport, care, at)
    bodies = {sms.step: sms.body for sms in transport.sent}
    assert HELP in bodies["welcome"]
    assert [step for step, body in bodies.items() if HELP in body] == ["welcome"]


def test_a_welcome_waiting_for_its_retry_at_completion_leaves_the_intro_to_no_driving(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The welcome was refused for now (it never reached Twilio) and waits for its retry
    # when the procedure is finished: it is cancelled, and the intro goes with no-driving.
    transport = StepTransport(refuse={"welcome"})
    enrolled = ny("2026-03-11T20:59:40")  # its retry falls in quiet hours
    clock.set(enrolled)
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    assert send_due(session, transport, care, enrolled) == ["day-before"]
    assert (welcome(session).status, welcome(session).attempts) == ("pending", 1)
    done = ny("2026-03-12T07:50")
    for at in (enrolled + timedelta(minutes=1), ny("2026-03-12T07:00")):
        send_due(session, transport, care, at)  # quiet hours: nothing goes
    complete_procedure(
        session=session, patient_id=result.patient.id, procedure_id=result.procedure.id,
        completed_at=local_input(ny("2026-03-12T07:45")), care=care, now=done, actor="nurse",
    )  # fmt: skip
    session.commit()
    for at in (ny("2026-03-12T08:00"), ny("2026-03-13T10:00")):
        send_due(session, transport, care, at)
    bodies = {sms.step: sms.body for sms in transport.sent}
    assert "welcome" not in bodies
    assert any(HELP in body for body in bodies.values()), sorted(bodies)


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
