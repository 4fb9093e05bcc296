"""The reaper finds at Twilio a text whose outcome was unknown, already failed there: what
it records must be what the status poller would have (019f963 moved the text past `sent`,
which ends the polling, so the reaper's record is the last word)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.queue import open_failures
from followup.messaging.claims import LEASE
from followup.messaging.models import Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.models import Patient
from tests.fakes.transport import ScriptedTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import Enroll, at, dispatch, messages


@pytest.mark.parametrize(("status", "code"), [("failed", 21610), ("undelivered", 30006)])
def test_a_text_the_reaper_finds_failed_at_twilio_keeps_twilios_error_code(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    status: str,
    code: int,
) -> None:
    # The dispatcher's call raised after Twilio took the text; by the time the reaper
    # asks, Twilio lists it failed with an error code: 21610 (the number replied STOP to
    # Twilio) opts the patient out; 30006 (a landline) puts the patient in the nurses'
    # "cannot receive texts" queue. With the code dropped, neither happens, and the status
    # poller, which only asks about texts still `sent`, never asks again.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, ScriptedTransport(outcomes=[RuntimeError("socket died")]), care, clock.now())
    message = messages(session)["no-driving"]
    assert message.status == "sending" and message.handed_at is not None
    at_twilio = twilio_fake.add_message(
        to=message.to_phone or "", body=message.body or "", created=clock.now(), status="queued"
    )
    twilio_fake.set_status(at_twilio["sid"], status, error_code=code)

    clock.advance(LEASE + timedelta(seconds=1))
    assert reap_stale(session=session, transport=twilio_transport, now=clock.now()).reconciled == 1
    message = messages(session)["no-driving"]
    assert (message.status, message.provider_sid, message.error_code) == (
        status,
        at_twilio["sid"],
        str(code),
    )
    patient = session.get(Patient, result.patient.id)
    assert patient is not None
    session.refresh(patient)
    if code == 21610:
        assert patient.opted_out_at is not None
        assert {m.status for m in messages(session).values() if m.step != "no-driving"} == {
            "cancelled"
        }
    else:
        assert session.scalars(open_failures()).all() == [patient.id]
        pending = session.scalars(sa.select(Message.step).where(Message.status == "pending"))
        assert "soreness" in pending.all()
