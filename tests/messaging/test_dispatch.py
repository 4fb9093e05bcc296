import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.inbox.queue import attention_queue
from followup.messaging.claims import LEASE, claim_due
from followup.messaging.dispatch import Dispatcher, dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.outcomes import retry_delay
from followup.messaging.reconcile import reap_stale
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


def test_a_claimed_text_never_handed_over_is_requeued_without_asking_and_sent_once(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    now = clock.now()
    # A dispatcher claimed it and died before handing it to the transport.
    claim_due(session=session, now=now, owner="dead-worker", limit=10)
    session.commit()
    assert (
        reap_stale(
            session=session, transport=transport, now=now + LEASE - timedelta(seconds=1)
        ).stale
        == 0
    )
    # The console-like transport cannot be asked, and need not be: it never had the text.
    report = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (report.stale, report.requeued, report.held) == (1, 1, 0)
    tick(session, transport, care, now + LEASE)
    assert transport.steps_sent() == ["no-driving"]
    assert events(session, "no-driving") == ["planned", "claimed", "requeued", "claimed", "sent"]


def test_a_text_handed_over_with_no_answer_is_held_when_the_transport_cannot_be_asked(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    now = clock.now()
    transport.outcomes = [RuntimeError("the socket died mid-answer")]
    report = dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="w1")
    assert report.unknown == 1
    assert statuses(session)["no-driving"] == "sending"
    reap = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert reap.held == 1
    tick(session, transport, care, now + timedelta(hours=1))
    assert transport.sent == []  # not resent on a guess
    assert statuses(session)["no-driving"] == "sending"
    assert events(session, "no-driving") == ["planned", "claimed", "outcome-unknown", "held"]
    # Held once: later passes do not report it again.
    assert reap_stale(session=session, transport=transport, now=now + timedelta(hours=2)).stale == 0


def test_reaper_records_a_text_the_provider_has_and_requeues_one_it_has_not(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    enroll(completed_at="2026-03-06T14:31", phone="(202) 555-0177")
    transport = ScriptedTransport(provider_has=[])

    class CrashAfterSend(Exception):
        pass

    # The first text reaches the provider, then the process "dies" before the commit.
    original_send = transport.send
    calls = {"n": 0}

    def send_then_crash(sms):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            original_send(sms)
            raise CrashAfterSend
        raise CrashAfterSend  # the second never reaches the provider

    transport.send = send_then_crash  # type: ignore[method-assign]
    now = clock.now()
    report = dispatch_due(
        session=session, transport=transport, care=care, clock=FakeClock(now), owner="w1"
    )
    assert report.unknown == 2
    transport.send = original_send  # type: ignore[method-assign]
    reap = reap_stale(session=session, transport=transport, now=now + LEASE)
    assert (reap.reconciled, reap.requeued) == (1, 1)
    tick(session, transport, care, now + LEASE)
    assert len(transport.sent) == 2  # one from before the crash, one resend of the lost one
    assert sorted(s.to for s in transport.sent) == ["+12025550143", "+12025550177"]
    assert set(statuses(session).values()) >= {"sent"}
    session.expire_all()
    sent = session.scalars(sa.select(Message).where(Message.step == "no-driving")).all()
    assert all(m.status == "sent" and m.provider_sid for m in sent)


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
    import threading

    from followup.messaging.dispatch import Dispatcher
    from followup.messaging.transports.base import OutgoingSms, SendResult

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


@pytest.mark.parametrize(("at_twilio", "recorded"), [("undelivered", "undelivered"), ("failed", "failed"), ("delivered", "delivered"), ("queued", "sent")])  # fmt: skip
def test_reaper_records_what_twilio_says_became_of_a_text_it_finds(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    at_twilio: str,
    recorded: str,
) -> None:
    # The dispatcher died after Twilio took the text; by the time the reaper asks, Twilio
    # lists it as already undelivered (or failed): the send log and the nurses' queue say
    # so now, not sent until the next status poll.
    clock.set(at("2026-03-06T15:00"))
    enroll(completed_at="2026-03-06T14:30")
    transport = ScriptedTransport(provider_has=[])
    transport.outcomes = [RuntimeError("the socket died mid-answer")]
    dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="w1")
    message = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    session.refresh(message)

    class ListsIt(ScriptedTransport):
        def find_sent(self, **_: object) -> SendResult | None:
            return SendResult(provider_sid="SM-found", provider_status=at_twilio)

    reap = reap_stale(session=session, transport=ListsIt(), now=clock.now() + LEASE)
    assert reap.reconciled == 1
    session.refresh(message)
    assert (message.status, message.provider_sid) == (recorded, "SM-found")


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


def dead_dispatcher_left(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, count: int
) -> tuple[datetime, ScriptedTransport]:
    """`count` patients' no-driving texts handed over by a dispatcher that died before any
    answer was recorded (outcome unknown); returns the instant and its transport."""
    clock.set(at("2026-03-06T15:00"))
    for i in range(count):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-01{40 + i}")
    now = clock.now()
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * count)
    assert dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(now), owner="dead"
    ).unknown == count  # fmt: skip
    return now, crashing


def test_the_reaper_asks_the_provider_about_a_dead_dispatchers_texts_side_by_side(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # A dispatcher died with four texts handed over, their answers never recorded. The
    # reaper's questions go to the provider together, not one after another (at list
    # latency, a hundred in a row would outlast the 2 minutes the texts are to be settled
    # in): each question here waits until all four are being asked.
    now, crashing = dead_dispatcher_left(session, care, clock, enroll, 4)
    all_asked = threading.Barrier(4, timeout=10)

    class Together(ScriptedTransport):
        def find_sent(self, **kwargs: Any) -> SendResult | None:
            all_asked.wait()  # raises BrokenBarrierError if the questions come one by one
            return super().find_sent(**kwargs)

    report = reap_stale(session=session, transport=Together(provider_has=[]), now=now + LEASE)
    assert (report.stale, report.requeued, report.errors) == (4, 4, 0)
    tick(session, crashing, care, now + LEASE)
    assert sorted(crashing.steps_sent()) == ["no-driving"] * 4


def test_each_text_the_reaper_settles_is_stamped_when_it_is_settled_not_when_the_pass_began(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # Asking the provider takes time: a pass over a dead dispatcher's texts settles the
    # last one later than the first, and the send log says when each was settled.
    now, _ = dead_dispatcher_left(session, care, clock, enroll, 3)
    start = now + LEASE
    running = FakeClock(start)

    class Ticking:
        """The reaper's clock: each reading is two seconds after the last."""

        def now(self) -> datetime:
            return running.advance(timedelta(seconds=2))

    report = reap_stale(
        session=session, transport=ScriptedTransport(provider_has=[]), now=start, clock=Ticking()
    )
    assert report.requeued == 3
    times = sorted(
        session.scalars(sa.select(MessageEvent.at).where(MessageEvent.kind == "requeued"))
    )
    assert len(set(times)) == 3 and times[0] > start
