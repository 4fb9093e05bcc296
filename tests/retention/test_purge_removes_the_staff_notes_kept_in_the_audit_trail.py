"""Retention: a patient past RETENTION_DAYS loses "the notes staff wrote about those replies
and texts" (README, Retention). Handling a queue item through the service copies its note
into the audit trail (`attention.handled`: "reply 7 handled: <note>"); the purge scrubs the
note on the reply, the text's resolution and the unreachable resolution, but not that copy,
so the nurse's words about the patient (name, number, what she said) stay on **Audit**
for ever."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.inbox.models import AttentionResolution
from followup.inbox.service import mark_handled
from followup.messaging.models import InboundMessage, Message
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.retention.service import REMOVED, purge_expired
from tests.conftest import START

DAYS = 400
NURSE = "nurse@example.org"
REPLY_NOTE = "Called Ada Moreno back on 202-555-0143; she says the pain is easing"
TEXT_NOTE = "Ada Moreno's daughter read her the restart text by phone"


def test_purge_removes_the_staff_notes_kept_in_the_audit_trail(
    session: so.Session, enroll: Callable[..., EnrollmentResult], clock: FakeClock
) -> None:
    ada = enroll(blood_thinner="Eliquis")
    patient_id = ada.patient.id
    # Her restart text was not delivered (a critical text: a 'text' item in the queue).
    restart = session.scalars(
        sa.select(Message).where(
            Message.patient_id == patient_id, Message.step == "blood-thinner-restart"
        )
    ).one()
    restart.status = "undelivered"
    restart.error_code = "30003"
    restart.to_phone = "+12025550143"
    restart.body = "Riverside Spine Center: you may restart Eliquis"
    restart.updated_at = START + timedelta(days=2)
    # She answered a pain score of 8: a reply in the queue.
    answer = InboundMessage(
        patient_id=patient_id,
        from_phone="+12025550143",
        body="8",
        provider_sid="SM" + "1" * 32,
        received_at=START + timedelta(days=3),
        kind="pain",
        pain_score=8,
        needs_attention=True,
    )
    session.add(answer)
    session.commit()

    # A nurse handles both through the queue, as the page and `followup attention` do.
    now = START + timedelta(days=3, hours=1)
    mark_handled(
        session=session, kind="reply", item_id=answer.id, note=REPLY_NOTE, actor=NURSE, now=now
    )
    mark_handled(
        session=session, kind="text", item_id=restart.id, note=TEXT_NOTE, actor=NURSE, now=now
    )
    session.commit()

    later = START + timedelta(days=DAYS + 8)
    clock.set(later)
    report = purge_expired(session=session, now=later, retention_days=DAYS, actor="scheduler")
    assert report.patients == 1
    session.expire_all()

    # The notes on the items themselves are gone, as the purge promises...
    patient = session.get(Patient, patient_id)
    assert patient is not None and patient.first_name == REMOVED
    assert session.get(InboundMessage, answer.id).handled_note == REMOVED  # type: ignore[union-attr]
    assert session.scalars(sa.select(AttentionResolution.note)).all() == [REMOVED]

    # ...and so must be every copy of them: none may remain in the audit trail.
    kept = [
        (event.action, event.detail)
        for event in session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
        if event.detail and ("Moreno" in event.detail or "555-0143" in event.detail)
    ]
    assert kept == [], f"purged patient's staff notes still in the audit trail: {kept}"
