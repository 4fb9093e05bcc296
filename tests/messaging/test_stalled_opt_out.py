"""A dispatcher stalled past its lease while its request to Twilio was under way, and the
patient replies STOP (and START) meanwhile: a copy that may have reached the patient is
never sent again, and one Twilio did not have comes back with START.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.turns import DispatchPass
from followup.patients.edits import (
    complete_procedure,
)
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import (
    Enroll,
    TimedOutAtTwilio,
    at,
    dispatch,
    event_details,
    requeued_mid_request,
    stop_closes_the_requeued_copy,
    text,
)


def test_a_timeout_answer_after_a_stop_closed_the_requeued_copy_is_never_sent_again(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The requeued copy is cancelled by a STOP before the stalled dispatcher's timeout
    # answer comes. It stays cancelled (the STOP forbids any send) and, as the request may
    # have reached the patient, a START does not bring it back to be sent a second time.
    transport = TimedOutAtTwilio()
    patient_id, answer = stop_closes_the_requeued_copy(
        session, other_session, care, clock, transport, enroll
    )
    message = text(session, "no-driving")
    assert message.status == "cancelled"
    assert (
        "it may have reached the patient"
        in event_details(session, message.id, "outcome-unknown")[-1]
    )
    record_opt_in(session=other_session, patient_id=patient_id, care=care, now=clock.now())
    other_session.commit()
    assert text(session, "no-driving").status == "cancelled"
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]


def stop_closed_the_requeued_copy_of_a_timed_out_request(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
) -> Message:
    """The requeued copy is cancelled by a STOP before the stalled dispatcher's timeout
    answer comes: closed, and marked for the reaper to ask Twilio about once the answer's
    lease has run out."""
    patient_id, answer = stop_closes_the_requeued_copy(
        session, other_session, care, clock, transport, enroll
    )
    message = text(session, "no-driving")
    assert (message.status, message.handed_at) == ("cancelled", answer.at)
    assert message.lease_expires_at is not None and message.lease_expires_at > clock.now()
    assert (
        "the provider is asked after" in event_details(session, message.id, "outcome-unknown")[-1]
    )
    # Not before the lease has run out: Twilio gets time to list what it accepted.
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    assert report.reconciled == 0 and text(session, "no-driving").lease_owner is not None
    clock.set(message.lease_expires_at + timedelta(seconds=1))
    return message


def test_a_closed_copy_twilio_has_is_recorded_sent_with_its_sid(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The send log said "cancelled" while the patient had the text; the reaper asks Twilio,
    # which lists it now: recorded sent with its SID (delivery reports then find it).
    transport = TimedOutAtTwilio()
    message = stop_closed_the_requeued_copy_of_a_timed_out_request(
        session, other_session, care, clock, enroll, transport
    )
    transport.provider_has = [(message.to_phone or "", message.body or "", "SM-first")]
    report = reap_stale(session=other_session, transport=transport, now=clock.now())
    assert report.reconciled == 1
    message = text(session, "no-driving")
    assert (message.status, message.provider_sid, message.lease_owner) == ("sent", "SM-first", None)
    assert message.sent_at == message.handed_at
    assert (
        "found at provider though cancelled" in event_details(session, message.id, "reconciled")[-1]
    )
    assert reap_stale(session=other_session, transport=transport, now=clock.now()).reconciled == 0
    record_opt_in(session=other_session, patient_id=message.patient_id, care=care, now=clock.now())
    other_session.commit()
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]  # once


def test_a_closed_copy_twilio_does_not_have_stays_closed_and_comes_back_with_start(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Twilio never took the request after all: the copy stays cancelled, the history says
    # it is not at Twilio, and a START (still inside its window) sends it once.
    transport = TimedOutAtTwilio(sent=[], outcomes=[TransientSendError("t", "x", maybe_sent=True)])
    message = stop_closed_the_requeued_copy_of_a_timed_out_request(
        session, other_session, care, clock, enroll, transport
    )
    assert reap_stale(session=other_session, transport=transport, now=clock.now()).reconciled == 0
    message = text(session, "no-driving")
    assert (message.status, message.lease_owner, message.provider_sid) == ("cancelled", None, None)
    assert event_details(session, message.id, "checked") == ["not at provider; stays cancelled"]
    record_opt_in(session=other_session, patient_id=message.patient_id, care=care, now=clock.now())
    other_session.commit()
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]


def test_a_stop_after_a_taken_back_text_was_not_found_at_twilio_comes_back_with_start(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Taken back first, then asked: Twilio never had it (the request failed before it), so
    # it is requeued; the STOP closes it at the hand-over, and a START brings it back.
    transport = TimedOutAtTwilio(sent=[], outcomes=[TransientSendError("t", "x", maybe_sent=True)])
    with requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
        turn,
        answer,
    ):
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    message = text(session, "no-driving")
    assert message.status == "sending" and message.lease_expires_at is not None
    record_opt_out(
        session=other_session,
        patient_id=message.patient_id,
        now=clock.now(),
        reason="STOP: opted out",
    )
    other_session.commit()
    clock.set(message.lease_expires_at + timedelta(seconds=1))
    assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued == 1
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == []
    assert text(session, "no-driving").status == "cancelled"
    record_opt_in(session=other_session, patient_id=message.patient_id, care=care, now=clock.now())
    other_session.commit()
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]


class FirstAtTwilioThenRefused(ScriptedTransport):
    """The welcome's 1st request: Twilio takes it, the answer times out; the 2nd: refused
    for now (503); then every request goes through."""

    calls: int = 0

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == "welcome":
            self.calls += 1
            if self.calls == 1:
                super().send(sms)
                raise TransientSendError("timeout", "no answer", maybe_sent=True)
            if self.calls == 2:
                raise TransientSendError("503", "unavailable", maybe_sent=False)
        return super().send(sms)


def test_a_welcome_one_request_of_which_may_be_at_twilio_is_never_brought_back(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # The welcome's first request reaches Twilio, which does not list it yet, and times
    # out; the reaper requeues it; a second dispatcher hands it over again and is refused;
    # the first request's answer comes meanwhile. The patient replies STOP, the procedure
    # is finished, the patient replies START: re-planning would bring back a welcome that
    # never reached the patient as the intro, but this one may have: it stays closed.
    transport = FirstAtTwilioThenRefused()
    clock.set(at("2026-03-03T15:00"))
    result = enroll(completed_at="", scheduled_at="2026-03-12T09:00")
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as d1:
        w1 = DispatchPass(d1, session, DispatchReport(), None)
        assert w1.claim()
        w1.start_calls(w1.hand_over(list(w1.ready)))
        session.commit()
        first = w1.answers.get(timeout=5)  # the timeout; w1 stalls before recording it
        transport.provider_has = []  # Twilio has it, does not list it yet
        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        with Dispatcher(transport=transport, care=care, clock=clock, owner="w2") as d2:
            w2 = DispatchPass(d2, other_session, DispatchReport(), None)
            assert w2.claim()
            w2.start_calls(w2.hand_over(list(w2.ready)))
            other_session.commit()
            second = w2.answers.get(timeout=5)  # refused, recorded after w1's answer
            w1.outcomes.record([first])
            session.commit()
            w2.outcomes.record([second])
            other_session.commit()
    patient_id = result.patient.id
    record_opt_out(session=session, patient_id=patient_id, now=clock.now(),
                   reason="patient replied STOP (opted out)")  # fmt: skip
    session.commit()
    complete_procedure(
        session=session, patient_id=patient_id, procedure_id=result.procedure.id,
        completed_at="2026-03-12T14:00", care=care, now=at("2026-03-12T22:00"), actor="nurse",
    )  # fmt: skip
    session.commit()
    back = at("2026-03-13T09:00")
    record_opt_in(session=session, patient_id=patient_id, care=care, now=back)
    session.commit()
    for now in (back, at("2026-03-13T10:00")):
        dispatch(session, transport, care, now)
    assert transport.steps_sent().count("welcome") == 1
