"""The dispatcher's own answers when they come late: a 21610 after the patient's START, and
an answer after the lease moved on (counted lost, not nowhere)."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import parse_clinic_hours
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import PENDING
from followup.messaging.reconcile import reap_stale
from followup.messaging.replies import record_inbound
from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    SendResult,
    TransientSendError,
)
from followup.patients.models import Patient
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, messages, no_driving_claimed, text

PHONE = "+12025550143"


def _inbound(session: so.Session, care: CareContext, body: str, sid: str, now: datetime) -> None:
    """The patient texts `body` to the clinic's number (committed)."""
    record_inbound(
        session=session,
        provider_sid=sid,
        from_phone=PHONE,
        body=body,
        opt_out_type=None,
        care=care,
        clinic_hours=parse_clinic_hours("Mon-Fri 08:00-17:00"),
        clinic_zone="America/New_York",
        now=now,
    )
    session.commit()


class StopThenStartDuringTheRequest(ScriptedTransport):
    """The patient's STOP reached Twilio just before the request, so Twilio refuses it with
    21610; while the request is under way the STOP's webhook, then the patient's START,
    are recorded (a patient who sent STOP by mistake)."""

    def __init__(self, session: so.Session, care: CareContext, clock: FakeClock) -> None:
        super().__init__()
        self.other, self.care, self.clock = session, care, clock

    def send(self, sms: OutgoingSms) -> SendResult:
        self.clock.advance(timedelta(seconds=1))
        _inbound(self.other, self.care, "STOP", "SM" + "1" * 32, self.clock.now())
        self.clock.advance(timedelta(seconds=1))
        _inbound(self.other, self.care, "START", "SM" + "2" * 32, self.clock.now())
        self.clock.advance(timedelta(seconds=1))
        raise PermanentSendError("21610", "unsubscribed recipient", opted_out=True)


def test_a_21610_answer_to_a_request_made_before_the_patients_start_does_not_opt_them_out_again(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")  # no-driving is due now
    transport = StopThenStartDuringTheRequest(other_session, care, clock)
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        dispatcher.dispatch(session)
    session.expire_all()
    patient = session.get(Patient, result.patient.id)
    assert patient is not None
    # The START came after the request: Twilio's 21610 is news of the opt-out START undid.
    assert patient.opted_out_at is None
    assert messages(session)["soreness"].status == PENDING


def test_every_claimed_text_ends_in_one_counter_when_a_refused_request_answers_after_the_reaper(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # Twilio could not be reached (connection refused: the request never left), but the
    # dispatcher stalled before taking that answer; past its lease the reaper found nothing
    # at Twilio and requeued the text. The late answer writes nothing (the lease moved on).
    transport.outcomes = [TransientSendError("network", "could not connect to Twilio")]
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        group = list(turn.ready)
        turn.ready.clear()
        turn.start_calls(turn.hand_over(group))
        session.commit()
        answer = turn.answers.get(timeout=5)
        transport.provider_has = []
        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
        report = turn.report
    assert text(session, "no-driving").status == PENDING  # the reaper's requeue stands
    # DispatchReport: "Every claimed text ends in exactly one of sent, retried, throttled,
    # unknown, failed, cancelled, expired, deferred, returned or lost".
    ends = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "claimed"}
    assert report.claimed == 1
    assert sum(ends.values()) == 1, ends
