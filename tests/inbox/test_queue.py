"""The needs-attention queue: urgent first, then oldest first; everything a nurse needs to
call the patient; handling takes a note that is kept, shown and audited."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import NotFound, ValidationError
from followup.inbox.models import AttentionResolution
from followup.inbox.queue import attention_queue, queue_counts, waited_words
from followup.inbox.service import handled_notes, mark_handled
from followup.messaging.claims import expire_overdue
from followup.messaging.models import InboundMessage, Message, MessageEvent
from followup.messaging.opt_in import record_opt_in
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.patients.validation import EnrollmentResult

Enroll = Callable[..., EnrollmentResult]
NOW = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)


def reply(
    session: so.Session,
    *,
    patient_id: int | None,
    sid: str,
    at: datetime,
    body: str = "what?",
    triage: str = "reading",
    reason: str | None = "a question",
    score: int | None = None,
    phone: str = "+12025550143",
) -> InboundMessage:
    inbound = InboundMessage(
        patient_id=patient_id, from_phone=phone, body=body, provider_sid=sid, received_at=at,
        kind="pain" if score is not None else "other", pain_score=score, needs_attention=True,
        triage=triage, triage_reason=reason,
    )  # fmt: skip
    session.add(inbound)
    session.commit()
    return inbound


def test_queue_lists_urgent_first_then_oldest_first_with_every_kind(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    ada = enroll(blood_thinner="Eliquis")
    bo = enroll(first_name="Bo", last_name="Lindqvist", phone="(202) 555-0177", language="es",
                blood_thinner="warfarin")  # fmt: skip
    critical = care.critical_steps()
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == ada.patient.id, Message.step == "blood-thinner-restart")
        .values(status="expired", updated_at=NOW + timedelta(minutes=1))
    )
    record_opt_out(
        session=session,
        patient_id=bo.patient.id,
        now=NOW + timedelta(minutes=2),
        reason=f"STOP: {OPTED_OUT}",
    )
    session.commit()
    question = reply(session, patient_id=ada.patient.id, sid="SM1", at=NOW + timedelta(minutes=3))
    unknown = reply(
        session, patient_id=None, sid="SM2", at=NOW + timedelta(minutes=4), body="who is this?",
        phone="+12025550999",
    )  # fmt: skip
    late_pain = reply(
        session, patient_id=bo.patient.id, sid="SM3", at=NOW + timedelta(minutes=6), body="10",
        triage="urgent", reason="pain score 10 of 10", score=10,
    )  # fmt: skip
    numb = reply(
        session, patient_id=ada.patient.id, sid="SM4", at=NOW + timedelta(minutes=5),
        body="my leg is numb", triage="urgent", reason="new numbness or tingling",
    )  # fmt: skip

    queue = attention_queue(session=session, critical_steps=critical)
    assert [(i.key, i.urgent, i.reason) for i in queue.items] == [
        (f"reply:{numb.id}", True, "new numbness or tingling"),
        (f"reply:{late_pain.id}", True, "pain score 10 of 10"),
        (f"text:{ada.messages[2].id}", False, "blood-thinner-restart expired"),
        (
            f"text:{bo.messages[2].id}",
            False,
            "blood-thinner-restart not sent: patient opted out before it",
        ),
        (f"reply:{question.id}", False, "a question"),
        (f"reply:{unknown.id}", False, "reply from an unknown number: a question"),
    ]
    assert (queue.open_count, queue.urgent_count) == (6, 2)
    first = queue.items[0]
    assert (first.patient_name, first.phone, first.language, first.words) == (
        "Ada Moreno", "+12025550143", "English", "my leg is numb",
    )  # fmt: skip
    assert first.phone_display == "+1 202-555-0143"
    assert first.waited(NOW + timedelta(minutes=70)) == "1 h 05 min"
    second = queue.items[1]
    assert (second.patient_name, second.language) == ("Bo Lindqvist", "Spanish")
    stranger = queue.items[-1]
    assert (stranger.patient_id, stranger.phone, stranger.words) == (
        None, "+12025550999", "who is this?",
    )  # fmt: skip
    assert queue_counts(session=session, critical_steps=critical).urgent == 2


def test_every_urgent_reply_is_listed_however_long_the_queue(
    session: so.Session, enroll: Enroll
) -> None:
    ada = enroll()
    for i in range(30):
        reply(session, patient_id=ada.patient.id, sid=f"SMq{i}", at=NOW + timedelta(seconds=i))
    for i in range(12):
        reply(
            session, patient_id=ada.patient.id, sid=f"SMu{i}", at=NOW + timedelta(hours=1, seconds=i),
            triage="urgent", reason="fever or chills",
        )  # fmt: skip
    queue = attention_queue(session=session, critical_steps=frozenset(), limit=5)
    assert [i.urgent for i in queue.items] == [True] * 12 + [False] * 5
    assert (queue.open_count, queue.urgent_count, queue.truncated) == (42, 12, True)


def test_handling_takes_a_note_kept_on_the_item_the_timeline_and_the_audit(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(NOW)
    ada = enroll(blood_thinner="Eliquis")
    failed = ada.messages[2]
    session.execute(
        sa.update(Message)
        .where(Message.id == failed.id)
        .values(status="failed", error_code="30007", updated_at=NOW)
    )
    session.commit()
    pain = reply(session, patient_id=ada.patient.id, sid="SM1", at=NOW, body="8", triage="urgent",
                 reason="pain score 8 of 10", score=8)  # fmt: skip
    later = NOW + timedelta(minutes=20)
    mark_handled(
        session=session, kind="reply", item_id=pain.id, note="Called back; pain meds adjusted",
        actor="nurse@x.org", now=later,
    )  # fmt: skip
    mark_handled(
        session=session, kind="text", item_id=failed.id, note="Called; restarted Eliquis",
        actor="nurse@x.org", now=later,
    )  # fmt: skip
    session.commit()
    assert attention_queue(session=session, critical_steps=care.critical_steps()).items == []
    notes = handled_notes(session=session, patient_id=ada.patient.id)
    assert [(n.kind, n.handled_by, n.note, n.at) for n in notes] == [
        ("reply", "nurse@x.org", "Called back; pain meds adjusted", later),
        ("text", "nurse@x.org", "Called; restarted Eliquis", later),
    ]
    session.expire_all()
    stored = session.get(InboundMessage, pain.id)
    assert stored is not None
    assert (stored.handled_by, stored.handled_note) == (
        "nurse@x.org",
        "Called back; pain meds adjusted",
    )
    kinds = session.scalars(
        sa.select(MessageEvent.kind).where(MessageEvent.message_id == failed.id)
    )
    assert list(kinds)[-1] == "handled"
    details = session.scalars(
        sa.select(AuditEvent.detail)
        .where(AuditEvent.action == "attention.handled")
        .order_by(AuditEvent.id)
    ).all()
    assert details == [
        f"reply {pain.id} handled: Called back; pain meds adjusted",
        f"text {failed.id} handled: Called; restarted Eliquis",
    ]
    with pytest.raises(ValidationError, match="already handled by nurse@x.org"):
        mark_handled(
            session=session, kind="reply", item_id=pain.id, note="again", actor="a", now=NOW
        )
    with pytest.raises(ValidationError, match="already handled by nurse@x.org"):
        mark_handled(
            session=session, kind="text", item_id=failed.id, note="again", actor="a", now=NOW
        )


@pytest.mark.parametrize(
    ("kind", "note", "field"),
    [("text", "  ", "note"), ("call", "done", "kind"), ("reply", "x" * 501, "note")],
)
def test_mark_handled_refuses_bad_input_naming_the_field(
    session: so.Session, kind: str, note: str, field: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        mark_handled(session=session, kind=kind, item_id=1, note=note, actor="a", now=NOW)
    assert excinfo.value.field == field
    assert session.scalars(sa.select(AuditEvent)).all() == []


@pytest.mark.parametrize("kind", ["reply", "text", "unreachable"])
def test_mark_handled_an_unknown_item_is_not_found(session: so.Session, kind: str) -> None:
    with pytest.raises(NotFound):
        mark_handled(session=session, kind=kind, item_id=999, note="done", actor="a", now=NOW)


@pytest.mark.parametrize(
    ("minutes", "words"),
    [(0, "0 min"), (59, "59 min"), (60, "1 h 00 min"), (125, "2 h 05 min"),
     (24 * 60, "1 day 0 h"), (3 * 24 * 60 + 4 * 60, "3 days 4 h")],
)  # fmt: skip
def test_waited_words(minutes: int, words: str) -> None:
    assert waited_words(timedelta(minutes=minutes)) == words


def test_a_critical_text_brought_back_by_start_is_raised_again_when_it_fails(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # The patient texts STOP before the blood-thinner restart: the cancelled restart is an
    # item, and a nurse handles it. The patient texts START: the restart is back in the
    # queue. It then expires unsent: that is a new problem, raised again, not covered by
    # the note about the opt-out.
    clock.set(NOW)
    ada = enroll(blood_thinner="Eliquis")
    restart = ada.messages[2]
    critical = care.critical_steps()
    reason = f"patient replied STOP: {OPTED_OUT}"
    record_opt_out(session=session, patient_id=ada.patient.id, now=NOW, reason=reason)
    session.commit()
    queue = attention_queue(session=session, critical_steps=critical)
    assert [i.key for i in queue.items] == [f"text:{restart.id}"]
    later = NOW + timedelta(minutes=10)
    mark_handled(session=session, kind="text", item_id=restart.id, note="Called; knows",
                 actor="nurse@x.org", now=later)  # fmt: skip
    session.commit()
    assert attention_queue(session=session, critical_steps=critical).items == []
    record_opt_in(session=session, patient_id=ada.patient.id, care=care, now=later)
    session.commit()
    session.refresh(restart)
    assert restart.status == "pending"
    closed = restart.expires_at + timedelta(minutes=1)
    assert expire_overdue(session=session, now=closed) >= 1
    session.commit()
    queue = attention_queue(session=session, critical_steps=critical)
    assert [(i.key, i.reason) for i in queue.items] == [
        (f"text:{restart.id}", "blood-thinner-restart expired")
    ]
    mark_handled(session=session, kind="text", item_id=restart.id, note="Called again",
                 actor="nurse@x.org", now=closed)  # fmt: skip
    session.commit()
    assert attention_queue(session=session, critical_steps=critical).items == []
    notes = handled_notes(session=session, patient_id=ada.patient.id)
    assert [n.note for n in notes] == ["Called; knows", "Called again"]


def test_two_people_handling_one_critical_text_at_once_write_one_mark(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # Both press "handled" at once: the second waits for the first (the text's row lock on
    # PostgreSQL, the write lock on SQLite), then is told who handled it.
    clock.set(NOW)
    restart = enroll(blood_thinner="Eliquis").messages[2]
    session.execute(sa.update(Message).where(Message.id == restart.id).values(status="expired"))
    session.commit()
    mark_handled(session=session, kind="text", item_id=restart.id, note="Called",
                 actor="first@x.org", now=NOW)  # fmt: skip
    outcome: list[BaseException | None] = []
    other_session = session_factory()

    def second() -> None:
        try:
            mark_handled(session=other_session, kind="text", item_id=restart.id, note="Me too",
                         actor="second@x.org", now=NOW)  # fmt: skip
            other_session.commit()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            other_session.rollback()
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "the second did not wait for the first"
    session.commit()
    thread.join(30)
    other_session.close()
    assert isinstance(outcome[0], ValidationError), outcome
    assert "already handled by first@x.org" in str(outcome[0])
    marks = session.scalars(sa.select(AttentionResolution.handled_by)).all()
    assert marks == ["first@x.org"]
