import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.queue import attention_queue
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher, dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.retries import retry_delay
from followup.messaging.tick import run_tick
from followup.messaging.transports.base import (
    PermanentSendError,
    SendResult,
    TransientSendError,
)
from followup.patients.edits import cancel_procedure
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport

Enroll = Callable[..., EnrollmentResult]


def tick(
    session: so.Session, transport: ScriptedTransport, care: CareContext, now: datetime
) -> None:
    run_tick(
        session=session,
        transport=transport,
        care=care,
        clock=FakeClock(now),
        owner="w1",
        rng=random.Random(7),
    )


def statuses(session: so.Session) -> dict[str, str]:
    session.expire_all()
    return {m.step: m.status for m in session.scalars(sa.select(Message))}


def events(session: so.Session, step: str) -> list[str]:
    return list(
        session.scalars(
            sa.select(MessageEvent.kind)
            .join(Message)
            .where(Message.step == step)
            .order_by(MessageEvent.id)
        )
    )


def at(local: str) -> datetime:
    """A New York wall-clock time as a UTC instant."""
    from zoneinfo import ZoneInfo

    return (
        datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    )


def test_each_step_is_sent_once_at_its_instant_and_not_a_second_earlier(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T14:35"))
    enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    restart_at = at("2026-03-06T14:30") + timedelta(hours=48)  # 15:30 EDT on Sunday
    instants = [
        at("2026-03-06T14:35"),  # no-driving goes now
        at("2026-03-07T09:59:59"),
        at("2026-03-07T10:00"),  # soreness
        restart_at - timedelta(seconds=1),
        restart_at,  # blood-thinner restart: exactly 48 h
        at("2026-03-09T09:59:59"),
        at("2026-03-09T10:00"),  # warning signs
        at("2026-03-13T10:00"),  # pain check
    ]
    sent_per_instant = []
    for now in instants:
        before = len(transport.sent)
        tick(session, transport, care, now)
        tick(session, transport, care, now)  # the same instant again sends nothing
        sent_per_instant.append(transport.steps_sent()[before:])
    assert sent_per_instant == [
        ["no-driving"],
        [],
        ["soreness"],
        [],
        ["blood-thinner-restart"],
        [],
        ["warning-signs"],
        ["pain-check"],
    ]
    restart = next(s for s in transport.sent if s.step == "blood-thinner-restart")
    assert restart.now == restart_at
    assert "You may restart your Eliquis from 3:30 PM on Sunday, March 8." in restart.body
    assert set(statuses(session).values()) == {"sent"}
    assert events(session, "soreness") == ["planned", "claimed", "sent"]


def test_a_transient_error_retries_with_backoff_until_it_succeeds(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    transport.outcomes = [TransientSendError("20429", "Too Many Requests", retry_after=120)]
    now = clock.now()
    report = dispatch_due(
        session=session,
        transport=transport,
        care=care,
        clock=FakeClock(now),
        owner="w1",
        rng=random.Random(1),
    )
    assert report.retried == 1 and transport.sent == []
    message = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    assert message.status == "pending"
    assert message.error_code == "20429"
    assert message.not_before is not None and message.not_before - now >= timedelta(seconds=120)
    # Not before the backoff...
    tick(session, transport, care, message.not_before - timedelta(seconds=1))
    assert transport.sent == []
    # ...then exactly once.
    tick(session, transport, care, message.not_before)
    tick(session, transport, care, message.not_before)
    assert transport.steps_sent() == ["no-driving"]
    assert events(session, "no-driving") == ["planned", "claimed", "retry", "claimed", "sent"]
    session.expire_all()
    assert message.attempts == 2 and message.error_code is None


def test_retries_stop_at_expiry_and_the_text_is_never_sent_late(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T20:50"))  # ten minutes before the no-driving text expires
    enroll(completed_at="2026-03-06T20:45")
    transport.outcomes = [TransientSendError("30001", "Queue overflow")] * 50
    now = clock.now()
    for _ in range(40):
        tick(session, transport, care, now)
        now += timedelta(minutes=1)
    assert transport.sent == []
    assert statuses(session)["no-driving"] == "expired"


def test_a_permanent_error_fails_the_text_with_its_reason(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    transport.outcomes = [PermanentSendError("21614", "To number is not a mobile number")]
    tick(session, transport, care, clock.now())
    message = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    assert (message.status, message.error_code) == ("failed", "21614")
    assert message.error_message == "To number is not a mobile number"
    tick(session, transport, care, clock.now() + timedelta(hours=1))
    assert transport.sent == []


def test_an_opt_out_error_cancels_every_pending_text_of_the_patient(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="warfarin")
    transport.outcomes = [
        PermanentSendError("21610", "Attempt to send to unsubscribed recipient", opted_out=True)
    ]
    tick(session, transport, care, clock.now())
    assert statuses(session) == {
        "no-driving": "failed",
        "soreness": "cancelled",
        "blood-thinner-restart": "cancelled",
        "warning-signs": "cancelled",
        "pain-check": "cancelled",
    }
    session.expire_all()
    assert session.get(Patient, result.patient.id).opted_out_at == clock.now()  # type: ignore[union-attr]
    tick(session, transport, care, at("2026-03-20T12:00"))
    assert transport.sent == []


def test_claim_time_checks_stop_texts_for_cancelled_procedures_and_opted_out_patients(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    first = enroll(completed_at="2026-03-06T14:30")
    second = enroll(completed_at="2026-03-06T14:40", phone="(202) 555-0177")
    # Changes made behind the outbox's back (another process, a direct fix in the database)
    # are still caught when the text is claimed.
    session.execute(
        sa.text("UPDATE procedures SET status = 'cancelled' WHERE id = :id"),
        {"id": first.procedure.id},
    )
    session.execute(
        sa.update(Patient).where(Patient.id == second.patient.id).values(opted_out_at=clock.now())
    )
    session.commit()
    report = dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="w1")
    assert report.cancelled == 2 and transport.sent == []
    details = session.scalars(
        sa.select(MessageEvent.detail).where(MessageEvent.kind == "cancelled")
    ).all()
    assert sorted(details) == ["patient opted out", "procedure cancelled"]


def test_cancelling_a_procedure_cancels_its_pending_texts(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    tick(session, transport, care, clock.now())
    count = cancel_procedure(
        session=session,
        procedure_id=result.procedure.id,
        now=clock.now(),
        actor="nurse@example.org",
    )
    session.commit()
    assert count == 3
    assert statuses(session) == {
        "no-driving": "sent",
        "soreness": "cancelled",
        "warning-signs": "cancelled",
        "pain-check": "cancelled",
    }
    tick(session, transport, care, at("2026-03-20T12:00"))
    assert transport.steps_sent() == ["no-driving"]


def test_a_backlog_found_in_quiet_hours_waits_for_the_morning(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30", blood_thinner="Plavix")
    tick(session, transport, care, clock.now())
    # The scheduler was down from Saturday morning until 23:00 on Sunday night.
    tick(session, transport, care, at("2026-03-08T23:00"))
    assert transport.steps_sent() == ["no-driving"]
    assert statuses(session)["soreness"] == "expired"
    assert statuses(session)["blood-thinner-restart"] == "pending"
    tick(session, transport, care, at("2026-03-09T07:59"))
    assert transport.steps_sent() == ["no-driving"]
    tick(session, transport, care, at("2026-03-09T08:00"))
    assert transport.steps_sent() == ["no-driving", "blood-thinner-restart"]


def test_a_changed_phone_number_is_used_from_the_next_send_on(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    tick(session, transport, care, clock.now())
    session.execute(
        sa.update(Patient).where(Patient.id == result.patient.id).values(phone="+12025550188")
    )
    session.commit()
    tick(session, transport, care, at("2026-03-07T10:00"))
    assert [s.to for s in transport.sent] == ["+12025550143", "+12025550188"]


def test_transient_failures_retry_until_the_window_closes_then_expire_into_attention(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:

    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30", blood_thinner="Xarelto")
    tick(session, transport, care, clock.now())
    session.execute(
        sa.update(Message).where(Message.step != "blood-thinner-restart").values(status="cancelled")
    )
    session.commit()
    transport.outcomes = [TransientSendError("500", "Internal error")] * 1000
    restart = session.scalars(
        sa.select(Message).where(Message.step == "blood-thinner-restart")
    ).one()
    now, expires = restart.due_at, restart.expires_at
    attempts_seen = []
    while now < expires + timedelta(minutes=1):  # wake exactly when the dispatcher would
        tick(session, transport, care, now)
        session.refresh(restart)
        attempts_seen.append(restart.attempts)
        if restart.status != "pending":
            break
        assert restart.not_before is not None
        now = max(restart.not_before, now + timedelta(seconds=1))
    assert transport.steps_sent() == ["no-driving"]  # sent before the outage began
    assert restart.status == "expired"
    # Never gave up early: a try at most RETRY_BACKOFF_MAX apart across the 48-hour window,
    # except nights (quiet hours), with the last one just before the window closed.
    assert restart.attempts > 48 * 60 // 15 - 3 * 11 * 4
    last_try = session.scalars(
        sa.select(MessageEvent.at)
        .where(MessageEvent.message_id == restart.id, MessageEvent.kind == "retry")
        .order_by(MessageEvent.id.desc())
    ).first()
    assert last_try is not None and expires - last_try < timedelta(minutes=16)
    [item] = [
        i
        for i in attention_queue(session=session, critical_steps=care.critical_steps()).items
        if i.kind == "text"
    ]
    assert item.item_id == restart.id


@pytest.mark.parametrize("attempts", [1, 2, 5, 10, 20])
def test_retry_delay_doubles_with_jitter_and_honours_retry_after(attempts: int) -> None:
    rng = random.Random(3)
    base = min(30 * 2 ** (attempts - 1), 900)
    for _ in range(50):
        delay = retry_delay(attempts, rng=rng).total_seconds()
        assert base / 2 <= delay <= base
    assert retry_delay(1, rng=rng, retry_after=600) >= timedelta(seconds=600)


def test_two_dispatchers_never_claim_the_same_text(
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    for i in range(30):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{i + 100:04d}")
    now = clock.now()
    with session_factory() as a, session_factory() as b:
        first = claim_due(session=a, now=now, owner="a", limit=20)
        if a.get_bind().dialect.name == "postgresql":
            # While `a` holds its row locks, `b` skips them instead of waiting.
            second = claim_due(session=b, now=now, owner="b", limit=20)
            a.commit()
            b.commit()
        else:
            a.commit()
            second = claim_due(session=b, now=now, owner="b", limit=20)
            b.commit()
    assert len(first) == 20 and len(second) == 10
    assert not set(first) & set(second)


def test_a_stopping_dispatcher_finishes_its_calls_and_hands_the_rest_back(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:

    from followup.messaging.dispatch import Dispatcher
    from followup.messaging.transports.base import OutgoingSms

    clock.set(at("2026-03-06T15:00"))
    for i in range(5):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{i + 100:04d}")
    calling, release = threading.Event(), threading.Event()

    class Held(ScriptedTransport):
        def send(self, sms: OutgoingSms) -> SendResult:
            calling.set()
            release.wait(10)
            return super().send(sms)

    transport = Held()
    reports = []
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1", concurrency=1) as d:

        def run() -> None:
            with session_factory() as s:
                reports.append(d.dispatch(s))

        worker = threading.Thread(target=run)
        worker.start()
        assert calling.wait(10)  # the first text is with the provider
        d.request_stop()  # SIGTERM: finish what is under way, send nothing new
        release.set()
        worker.join(30)
    [report] = reports
    assert (report.claimed, report.sent, report.returned) == (5, 1, 4)
    assert len(transport.sent) == 1
    session.expire_all()
    returned = session.scalars(
        sa.select(Message).where(Message.step == "no-driving", Message.status == "pending")
    ).all()
    assert len(returned) == 4
    assert all(m.lease_owner is None and m.not_before is None and m.attempts == 0 for m in returned)


def test_a_call_that_cannot_start_soon_after_its_guard_is_not_made_and_the_text_goes_again(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # The guard checked opt-out and cancellation; a worker thread that starts the call
    # later than the dispatcher's limit (a stalled process) gives the text back unsent, so
    # a STOP that landed meanwhile is read again. Here the limit is none at all.
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    with Dispatcher(
        transport=transport, care=care, clock=clock, owner="w1", handover_max_wait=0.0
    ) as stalled:
        report = stalled.dispatch(session)
    # Given back each time (the pass may claim it again before it ends), never sent.
    assert report.claimed == report.returned >= 1 and report.sent == 0
    assert transport.steps_sent() == []
    assert statuses(session)["no-driving"] == "pending"
    tick(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]
    kinds = events(session, "no-driving")
    assert kinds == ["planned", *["claimed", "requeued"] * report.returned, "claimed", "sent"]
