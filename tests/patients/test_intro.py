"""The introduction (HELP, STOP, rates) reaches the patient once a booked procedure is
finished, whatever became of the welcome: timed out (Twilio may or may not have it), refused
for now, or re-timed as the intro and then corrected. The welcome never goes out after the
procedure, and some text carries the intro."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import zone
from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.messaging.events import NOT_AT_PROVIDER, add_events, event_row
from followup.messaging.lost_intros import replan_lost_intros
from followup.messaging.models import Message, MessageEvent
from followup.messaging.outbox import render_message
from followup.messaging.reconcile import reap_stale
from followup.messaging.tick import run_tick
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.edits import (
    change_completion_time,
    complete_procedure,
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


def enrolled_after_the_procedure(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: StepTransport,
) -> EnrollmentResult:
    """Enrolled at 15:00 for a procedure finished at 14:00: no-driving, due now, carries
    the intro; the pass at 15:00 does not get it to Twilio (the transport decides how)."""
    clock.set(ny("2026-03-12T15:00"))
    result = enroll(completed_at="2026-03-12T14:00")
    assert result.procedure.intro_step == "no-driving"
    assert send_due(session, transport, care, clock.now()) == []
    return result


def moved_to_the_day_before(
    session: so.Session, care: CareContext, result: EnrollmentResult, now: datetime
) -> None:
    """A nurse corrects the end to the day before: no-driving's window has passed."""
    change_completion_time(
        session=session, procedure_id=result.procedure.id, completed_at="2026-03-11T14:00",
        care=care, now=now, actor="nurse",
    )  # fmt: skip
    session.commit()


def the_week_after(
    session: so.Session, care: CareContext, transport: StepTransport, start: datetime
) -> None:
    """The week's texts go; no-driving never, and the welcome carries the intro (soreness,
    the first text left, cannot: the welcome goes with it, due the same minute)."""
    for at in (start, start + timedelta(hours=1), ny("2026-03-14T10:00"), ny("2026-03-18T10:00")):
        send_due(session, transport, care, at)
    assert "no-driving" not in transport.steps_sent()
    assert [sms.step for sms in transport.sent if HELP in sms.body] == ["welcome"]


def test_a_retrying_intro_whose_window_a_correction_closes_leaves_the_intro_to_another(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Twilio refuses no-driving for now (503: it never reached Twilio); it waits for its
    # retry when the nurse's correction closes its window.
    transport = StepTransport(refuse={"no-driving"})
    result = enrolled_after_the_procedure(session, care, clock, enroll, transport)
    fix = clock.now() + timedelta(seconds=10)
    moved_to_the_day_before(session, care, result, fix)
    the_week_after(session, care, transport, fix)


def test_an_intro_whose_outcome_is_unknown_re_timed_into_a_closed_window_leaves_it_to_another(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # No-driving's request times out (Twilio may have it; it does not); the correction
    # re-times it into a closed window; the reaper does not find it and expires it.
    transport = StepTransport(time_out={"no-driving"}, provider_has=[])
    result = enrolled_after_the_procedure(session, care, clock, enroll, transport)
    fix = clock.now() + timedelta(seconds=10)
    moved_to_the_day_before(session, care, result, fix)
    later = fix + timedelta(minutes=10)
    reap_stale(session=session, transport=transport, now=later)
    the_week_after(session, care, transport, later)


def test_an_intro_the_reaper_found_missing_then_closed_by_a_correction_leaves_it_to_another(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # No-driving's request times out; the reaper does not find it at Twilio and requeues
    # it; its resend is throttled (429) and waits when the correction closes its window.
    transport = StepTransport(time_out={"no-driving"}, provider_has=[])
    result = enrolled_after_the_procedure(session, care, clock, enroll, transport)
    reaped = clock.now() + timedelta(minutes=10)
    assert reap_stale(session=session, transport=transport, now=reaped).requeued == 1
    transport.outcomes = [TransientSendError("429", "too many", retry_after=120, throttled=True)]
    assert send_due(session, transport, care, reaped) == []
    fix = reaped + timedelta(seconds=30)
    moved_to_the_day_before(session, care, result, fix)
    the_week_after(session, care, transport, fix)


def test_an_intro_text_that_expires_unsent_hands_the_intro_to_another(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Enrolled one second before quiet hours, after a procedure finished at 20:30:
    # no-driving carries the intro but expires unsent (its window closes at 21:00). The
    # next planner run gives the intro to the welcome, sent in the morning before soreness.
    transport = StepTransport()
    clock.set(ny("2026-03-12T20:59:59"))
    result = enroll(completed_at="2026-03-12T20:30")
    assert result.procedure.intro_step == "no-driving"
    reintroduced = {}
    for local in (
        "2026-03-12T20:59:59", "2026-03-12T21:01", "2026-03-12T21:02", "2026-03-13T08:00",
        "2026-03-13T10:00", "2026-03-15T10:00", "2026-03-19T10:00",
    ):  # fmt: skip
        tick = run_tick(
            session=session, transport=transport, care=care, clock=FakeClock(ny(local)),
            owner="test",
        )  # fmt: skip
        session.commit()
        reintroduced[local] = tick.plan.reintroduced
    # Once, at the first run after the expiry; never again (no re-plan every minute).
    assert sum(reintroduced.values()) == reintroduced["2026-03-12T21:01"] == 1
    assert "no-driving" not in transport.steps_sent()
    assert transport.steps_sent()[:2] == ["welcome", "soreness"]
    assert [sms.step for sms in transport.sent if HELP in sms.body] == ["welcome"]
    # The send log keeps the time no-driving missed, not the re-plan's.
    no_driving = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    assert (no_driving.status, no_driving.due_at) == ("expired", ny("2026-03-12T20:59:59"))


def test_a_lost_intro_is_left_for_the_next_run_while_a_nurse_edits_the_procedure(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The same lost intro, while a nurse's edit holds the procedure's row: the planner job
    # skips it (re-planning from the row as it was would undo her change), then takes it.
    if not is_postgresql(session):
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite has one writer")
    transport = StepTransport()
    clock.set(ny("2026-03-12T20:59:59"))
    result = enroll(completed_at="2026-03-12T20:30")
    run_tick(session=session, transport=transport, care=care, clock=clock, owner="test")
    session.commit()
    with session_factory() as nurse:
        nurse.execute(
            sa.select(Procedure.id).where(Procedure.id == result.procedure.id).with_for_update()
        )
        session.execute(sa.text("SET LOCAL lock_timeout = '5s'"))  # a wait fails, never hangs
        assert replan_lost_intros(session=session, care=care, now=ny("2026-03-12T21:01")) == 0
        session.commit()
    assert replan_lost_intros(session=session, care=care, now=ny("2026-03-12T21:02")) == 1
    session.commit()


def test_an_intro_lost_while_only_retries_are_left_goes_with_the_welcome_at_the_retry(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Enrolled late on day 7, a procedure finished a week ago: the pain check is the only
    # text left, and it cannot carry the intro, so the welcome goes with it. Twilio refuses
    # both for now (503: neither reached it); both wait for their retry when the nurse
    # corrects the end by half an hour. Nothing fresh is left to carry the intro: the
    # welcome (which must not be cancelled as "procedure finished") carries it at its retry.
    transport = StepTransport(refuse={"welcome", "pain-check"})
    enrolled = ny("2026-03-12T18:00")
    clock.set(enrolled)
    result = enroll(completed_at="2026-03-05T11:00")
    assert result.procedure.intro_step == "welcome"
    assert send_due(session, transport, care, enrolled) == []
    fix = enrolled + timedelta(seconds=10)
    change_completion_time(
        session=session, procedure_id=result.procedure.id, completed_at="2026-03-05T11:30",
        care=care, now=fix, actor="nurse",
    )  # fmt: skip
    session.commit()
    session.expire_all()
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.intro_step == "welcome"
    for at in (fix + timedelta(minutes=2), fix + timedelta(minutes=10), ny("2026-03-12T19:30")):
        send_due(session, transport, care, at)
    assert sorted(transport.steps_sent()) == ["pain-check", "welcome"]
    assert [sms.step for sms in transport.sent if HELP in sms.body] == ["welcome"]


@dataclass
class SlowWelcome(ScriptedTransport):
    """Twilio takes its time over the welcome: a text handed over beside it would get
    there first."""

    calls: list[str] = field(default_factory=list)

    def send(self, sms: OutgoingSms) -> SendResult:
        self.calls.append(sms.step)
        if sms.step == "welcome":
            threading.Event().wait(0.3)  # the request's latency, not a wait for the code
        return super().send(sms)


def test_the_welcome_that_carries_the_intro_reaches_twilio_before_the_text_due_with_it(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Enrolled at 10:00:30 the day after the procedure: soreness (due at 10:00, no intro
    # wording) and the welcome that carries the intro fall due in the same pass, together.
    transport = SlowWelcome()
    enrolled = ny("2026-03-13T10:00:30")
    clock.set(enrolled)
    result = enroll(completed_at="2026-03-12T14:00")
    assert result.procedure.intro_step == "welcome"
    assert sorted(send_due(session, transport, care, enrolled)) == ["soreness", "welcome"]
    assert transport.steps_sent() == ["welcome", "soreness"]  # received in this order
    assert transport.calls == ["welcome", "soreness"]  # soreness waited for the answer
    assert HELP in transport.sent[0].body and HELP not in transport.sent[1].body


@dataclass
class RefusesStep(ScriptedTransport):
    """Twilio refuses one step for now (503: never at the provider), every time."""

    step: str = ""

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == self.step:
            raise TransientSendError("503", "unavailable", maybe_sent=False)
        return super().send(sms)


def test_a_retry_that_may_be_at_twilio_without_the_intro_is_never_made_the_intro(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The welcome carried the intro and closed without reaching Twilio (the planner job
    # re-plans such a lost intro). No-driving went out without the intro: one request of
    # it may be at Twilio (an unknown outcome no reaper's answer settled: its request was
    # requeued mid-flight, sent again and refused for now), and it waits for its retry.
    # It must not become the intro: the patient may already have it without HELP, STOP and
    # the rates, and if its retry never goes, "may have reached the patient" would count
    # the intro as given for good.
    clock.set(ny("2026-03-12T15:00"))
    result = enroll(completed_at="2026-03-12T14:00")
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None
    no_driving = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    earlier = clock.now() - timedelta(minutes=30)
    lost_welcome = Message(
        procedure_id=procedure.id, patient_id=result.patient.id, step="welcome",
        due_at=earlier, expires_at=earlier + timedelta(minutes=1), status="expired",
        attempts=1, created_at=earlier, updated_at=earlier,
    )  # fmt: skip
    session.add(lost_welcome)
    procedure.intro_step = "welcome"
    no_driving.attempts = 1
    no_driving.body = render_message(
        care, procedure=procedure, language="en", tz=zone("America/New_York"), step="no-driving"
    )
    assert HELP not in (no_driving.body or "")
    session.flush()
    add_events(
        session,
        [
            event_row(no_driving.id, earlier, "requeued", "pending", f"{NOT_AT_PROVIDER}; x"),
            event_row(no_driving.id, earlier, "outcome-unknown", "sending", "timeout"),
        ],
    )
    session.commit()

    now = clock.now()
    assert replan_lost_intros(session=session, care=care, now=now) == 1
    session.commit()
    session.expire_all()
    assert procedure.intro_step != "no-driving"
    transport = RefusesStep(step="no-driving")  # its retries never get through
    for at in (now, now + timedelta(hours=1), ny("2026-03-12T20:50")):
        send_due(session, transport, care, at)
    assert replan_lost_intros(session=session, care=care, now=ny("2026-03-12T21:05")) == 0
    session.commit()
    send_due(session, transport, care, ny("2026-03-13T10:00"))
    assert any(HELP in sms.body for sms in transport.sent), transport.steps_sent()


def test_a_lost_intro_no_text_can_carry_yet_is_not_counted_as_reintroduced_every_minute(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A week after the procedure, only the pain check is left, and a request of it may be
    # at Twilio (an unknown outcome): it cannot carry the intro. The welcome chosen for it
    # expired unsent. Re-planning cannot move the intro, so the planner job does not claim
    # it did, and writes nothing, however many minutes it runs.
    clock.set(ny("2026-03-12T18:00"))
    result = enroll(completed_at="2026-03-05T11:00")
    procedure = session.get(Procedure, result.procedure.id)
    assert procedure is not None and procedure.intro_step == "welcome"
    earlier = clock.now() - timedelta(minutes=30)
    texts = {m.step: m for m in session.scalars(sa.select(Message))}
    assert sorted(s for s, m in texts.items() if m.status == "pending") == ["pain-check", "welcome"]
    texts["welcome"].status, texts["welcome"].attempts = "expired", 1
    texts["welcome"].expires_at = earlier
    texts["pain-check"].attempts = 1
    session.flush()
    add_events(
        session, [event_row(texts["pain-check"].id, earlier, "outcome-unknown", "sending", "x")]
    )
    session.commit()
    before = session.execute(sa.select(sa.func.count()).select_from(MessageEvent)).scalar()

    for minute in range(1, 4):
        now = clock.now() + timedelta(minutes=minute)
        assert replan_lost_intros(session=session, care=care, now=now) == 0
        session.commit()
    session.expire_all()
    assert session.execute(sa.select(sa.func.count()).select_from(MessageEvent)).scalar() == before
    pain_check = session.get(Message, texts["pain-check"].id)
    assert pain_check is not None and pain_check.status == "pending"
