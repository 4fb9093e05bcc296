from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.messaging.models import InboundMessage, Message, MessageEvent
from followup.messaging.outbox import record_opt_out
from followup.patients.service import EnrollmentResult
from followup.sendlog.service import attention_queue, mark_handled

Enroll = Callable[..., EnrollmentResult]
NOW = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)


def reply(
    session: so.Session, *, patient_id: int | None, sid: str, score: int | None, at: datetime
) -> InboundMessage:
    inbound = InboundMessage(
        patient_id=patient_id, from_phone="+12025550143", body="8" if score else "what?", provider_sid=sid,
        received_at=at, kind="pain" if score else "other", pain_score=score, needs_attention=True,
    )  # fmt: skip
    session.add(inbound)
    session.commit()
    return inbound


def test_queue_holds_flagged_replies_and_critical_texts_until_handled(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    ada = enroll(blood_thinner="Eliquis")
    bo = enroll(phone="(202) 555-0177", blood_thinner="warfarin")
    critical = care.critical_steps()
    assert critical == frozenset({"blood-thinner-restart"})
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == ada.patient.id, Message.step == "blood-thinner-restart")
        .values(status="failed", error_code="30006", updated_at=NOW + timedelta(minutes=1))
    )
    record_opt_out(
        session=session, patient_id=bo.patient.id, now=NOW + timedelta(minutes=2), reason="STOP"
    )
    session.commit()
    pain = reply(
        session, patient_id=ada.patient.id, sid="SM1", score=8, at=NOW + timedelta(minutes=3)
    )
    reply(session, patient_id=None, sid="SM2", score=None, at=NOW + timedelta(minutes=4))

    queue = attention_queue(session=session, critical_steps=critical)
    assert [(i.kind, i.patient_id, i.reason) for i in queue] == [
        ("reply", None, "reply from an unknown number"),
        ("reply", ada.patient.id, "pain score 8 of 10"),
        ("text", bo.patient.id, "blood-thinner-restart not sent: patient opted out before it"),
        ("text", ada.patient.id, "blood-thinner-restart failed (error 30006)"),
    ]
    failed_text = queue[3].item_id
    mark_handled(
        session=session,
        kind="text",
        item_id=failed_text,
        note="Called; restarted Eliquis",
        actor="nurse@x.org",
        now=NOW,
    )
    mark_handled(
        session=session,
        kind="reply",
        item_id=pain.id,
        note="Called back",
        actor="nurse@x.org",
        now=NOW,
    )
    session.commit()
    assert [
        (i.kind, i.patient_id) for i in attention_queue(session=session, critical_steps=critical)
    ] == [
        ("reply", None),
        ("text", bo.patient.id),
    ]
    # History is kept: the text's events and the audit trail both say who handled it.
    kinds = session.scalars(
        sa.select(MessageEvent.kind).where(MessageEvent.message_id == failed_text)
    ).all()
    assert kinds[-1] == "handled"
    actions = session.scalars(
        sa.select(AuditEvent.action).where(AuditEvent.action == "attention.handled")
    ).all()
    assert len(actions) == 2
    with pytest.raises(ValidationError, match="already handled by nurse@x.org"):
        mark_handled(
            session=session, kind="text", item_id=failed_text, note="again", actor="a", now=NOW
        )


@pytest.mark.parametrize(
    ("kind", "note", "field"), [("text", "  ", "note"), ("call", "done", "kind")]
)
def test_mark_handled_refuses_bad_input(
    session: so.Session, kind: str, note: str, field: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        mark_handled(session=session, kind=kind, item_id=1, note=note, actor="a", now=NOW)
    assert excinfo.value.field == field
