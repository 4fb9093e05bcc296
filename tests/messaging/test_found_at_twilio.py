"""The reaper finds at Twilio a text whose outcome was unknown, already failed there: what
it records must be what the status poller would have (019f963 moved the text past `sent`,
which ends the polling, so the reaper's record is the last word)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import parse_clinic_hours
from followup.clock import FakeClock
from followup.inbox.queue import open_failures
from followup.messaging.claims import LEASE
from followup.messaging.models import Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.replies import record_inbound
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


def _inbound(session: so.Session, care: CareContext, body: str, sid: str, now: datetime) -> None:
    """The patient texts `body` to the clinic's number (committed)."""
    record_inbound(
        session=session,
        provider_sid=sid,
        from_phone="+12025550143",
        body=body,
        opt_out_type=None,
        care=care,
        clinic_hours=parse_clinic_hours("Mon-Fri 08:00-17:00"),
        clinic_zone="America/New_York",
        now=now,
    )
    session.commit()


def test_a_21610_found_on_a_text_sent_before_the_patients_start_does_not_opt_them_out_again(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # The patient's STOP reached Twilio just before no-driving's request, whose answer was
    # lost: Twilio failed it with 21610. Our STOP is recorded a moment later (a text under
    # way is not cancelled by it); the patient changes their mind and texts START, which
    # Twilio and we both record. When the reaper asks, Twilio lists no-driving failed with
    # 21610: that code speaks of the STOP before the request, not of now. The START stands.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    dispatch(session, ScriptedTransport(outcomes=[RuntimeError("socket died")]), care, clock.now())
    message = messages(session)["no-driving"]
    at_twilio = twilio_fake.add_message(
        to=message.to_phone or "", body=message.body or "", created=clock.now(), status="queued"
    )
    twilio_fake.set_status(at_twilio["sid"], "failed", error_code=21610)
    _inbound(session, care, "STOP", "SMstop1", clock.now() + timedelta(seconds=5))
    _inbound(session, care, "START", "SMstart1", clock.now() + timedelta(seconds=30))
    assert messages(session)["soreness"].status == "pending"

    clock.advance(LEASE + timedelta(seconds=1))
    assert reap_stale(session=session, transport=twilio_transport, now=clock.now()).reconciled == 1
    message = messages(session)["no-driving"]
    assert (message.status, message.error_code) == ("failed", "21610")
    patient = session.get(Patient, result.patient.id)
    assert patient is not None
    session.refresh(patient)
    assert patient.opted_out_at is None
    assert messages(session)["soreness"].status == "pending"
