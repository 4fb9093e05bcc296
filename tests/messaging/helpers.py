"""Small helpers shared by the messaging tests: one dispatcher pass, texts and their
history, and the scenes the race tests start from."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher, dispatch_due
from followup.messaging.handover import Answer
from followup.messaging.models import (
    PENDING,
    SENT,
    Message,
    MessageEvent,
)
from followup.messaging.outbox import record_opt_out
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import (
    OutgoingSms,
    SendResult,
    SmsTransport,
    TransientSendError,
)
from followup.messaging.transports.twilio import TwilioTransport
from followup.messaging.turns import DispatchPass
from followup.patients.edits import change_completion_time
from followup.patients.models import Patient, Procedure
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from followup.settings import Settings
from jobs.scheduler import build_jobs, shut_down
from tests.fakes.transport import ScriptedTransport
from tests.fakes.twilio_server import FakeTwilio


def dispatch(
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    now: datetime,
    owner: str = "test-worker",
) -> DispatchReport:
    """One dispatcher pass at the pinned instant `now`, with a seeded jitter."""
    return dispatch_due(
        session=session,
        transport=transport,
        care=care,
        clock=FakeClock(now),
        owner=owner,
        rng=random.Random(7),
    )


def messages(session: so.Session, patient_id: int | None = None) -> dict[str, Message]:
    """Texts by step, read fresh from the database."""
    session.expire_all()
    query = sa.select(Message).order_by(Message.id)
    if patient_id is not None:
        query = query.where(Message.patient_id == patient_id)
    return {m.step: m for m in session.scalars(query)}


def event_kinds(session: so.Session, message_id: int) -> list[str]:
    return list(
        session.scalars(
            sa.select(MessageEvent.kind)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
    )


def event_details(session: so.Session, message_id: int, kind: str) -> list[str]:
    return [
        d or ""
        for d in session.scalars(
            sa.select(MessageEvent.detail)
            .where(MessageEvent.message_id == message_id, MessageEvent.kind == kind)
            .order_by(MessageEvent.id)
        )
    ]


Enroll = Callable[..., EnrollmentResult]
NEW_YORK = ZoneInfo("America/New_York")


def at(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=NEW_YORK).astimezone(UTC)


def text(session: so.Session, step: str) -> Message:
    session.expire_all()
    return session.scalars(sa.select(Message).where(Message.step == step)).one()


def history(session: so.Session, step: str) -> list[str]:
    return list(
        session.scalars(
            sa.select(MessageEvent.kind)
            .join(Message)
            .where(Message.step == step)
            .order_by(MessageEvent.id)
        )
    )


def correct_end(
    session: so.Session, care: CareContext, procedure_id: int, local: str, now: datetime
) -> None:
    """A nurse corrects when the procedure finished (committed)."""
    change_completion_time(
        session=session,
        procedure_id=procedure_id,
        completed_at=local,
        care=care,
        now=now,
        actor="nurse@example.org",
    )
    session.commit()


def restart_due_now(
    session: so.Session,
    transport: ScriptedTransport,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> tuple[int, datetime, datetime]:
    """A procedure finished at 14:30 with a blood thinner, its texts before the restart
    sent: (procedure id, the restart's 48 h mark, the mark once the end moves to 16:30)."""
    clock.set(at("2026-03-06T14:35"))
    result = enroll(completed_at="2026-03-06T14:30", blood_thinner="Eliquis")
    dispatch(session, transport, care, at("2026-03-06T14:35"))  # the no-driving text
    dispatch(session, transport, care, at("2026-03-07T10:00"))  # soreness
    transport.sent.clear()
    return (
        result.procedure.id,
        at("2026-03-06T14:30") + timedelta(hours=48),
        at("2026-03-06T16:30") + timedelta(hours=48),  # 5:30 PM EDT: across the DST change
    )


@contextmanager
def no_driving_claimed(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> Iterator[tuple[DispatchPass, EnrollmentResult]]:
    """15:00, a procedure finished at 14:30: its no-driving text (due now) claimed by a
    pass of dispatcher w1, not yet handed over."""
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        assert turn.claim()
        session.commit()
        yield turn, result


def seed(
    session: so.Session,
    count: int,
    *,
    due: datetime,
    expires: datetime,
    tz: str,
    step: str = "no-driving",
    blood_thinner: str | None = None,
    first_phone: int = 0,
) -> list[int]:
    """`count` consented patients, each with a completed procedure and one pending text."""
    now = due
    ids = []
    for i in range(count):
        patient = Patient(
            first_name="Test",
            last_name=f"Patient{first_phone + i}",
            phone=f"+1202555{first_phone + i:04d}",
            timezone=tz,
            language="en",
            sms_consent_at=now - timedelta(days=1),
            created_at=now - timedelta(days=1),
        )
        session.add(patient)
        session.flush()
        procedure = Procedure(
            patient_id=patient.id,
            kind="kyphoplasty",
            status="completed",
            completed_at=due - timedelta(hours=1),
            blood_thinner=blood_thinner,
            planned_at=now,
            created_at=now,
        )
        session.add(procedure)
        session.flush()
        message = Message(
            procedure_id=procedure.id,
            patient_id=patient.id,
            step=step,
            due_at=due,
            expires_at=expires,
            status=PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        session.add(message)
        session.flush()
        ids.append(message.id)
    session.commit()
    return ids


def midday_zone(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is early afternoon at `now` (the test's clock; the real
    time if none), so no quiet hours are near, whatever the hour the suite runs at."""
    offset = (13 - (now or datetime.now(UTC)).astimezone(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}"


def statuses(session: so.Session) -> Counter[str]:
    session.expire_all()
    return Counter(session.scalars(sa.select(Message.status)))


def assert_each_at_twilio_once(session: so.Session, fake: FakeTwilio) -> None:
    """Every `sent` text is at the fake exactly once, with the SID the database recorded."""
    at_twilio = Counter(m["to"] for m in fake.messages.values())
    assert at_twilio and max(at_twilio.values()) == 1, at_twilio.most_common(3)
    session.expire_all()
    sent = session.scalars(sa.select(Message).where(Message.status == SENT)).all()
    assert {m.provider_sid for m in sent} == set(fake.messages)
    for m in sent:
        assert fake.messages[m.provider_sid or ""]["to"] == m.to_phone


def quick_transport(settings: Settings) -> TwilioTransport:
    """Gives up after 0.25 s: leases can then be short (two calls' worth, 3 s)."""
    return TwilioTransport.from_settings(replace(settings, twilio_timeout_seconds=0.25))


class TimedOutAtTwilio(ScriptedTransport):
    """Twilio takes the first text but the client times out reading the answer: the
    request may have reached Twilio (what the Twilio transport reports for a timeout)."""

    def send(self, sms: OutgoingSms) -> SendResult:
        result = super().send(sms)
        if len(self.sent) == 1:
            raise TransientSendError("timeout", "no answer", maybe_sent=True)
        return result


@contextmanager
def requeued_mid_request(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    *,
    attempts: int = 0,
) -> Iterator[tuple[DispatchPass, Answer]]:
    """The no-driving text's request timed out at Twilio (which has it); its dispatcher
    stalled before taking the answer and, past its lease, the reaper asked Twilio, which
    did not list the text yet, and requeued it. `attempts`: tries before this one."""
    with no_driving_claimed(session, care, clock, transport, enroll) as (turn, _):
        session.execute(sa.update(Message).values(attempts=attempts))
        session.commit()
        group = list(turn.ready)
        turn.ready.clear()  # taken for hand-over, as the pass's loop does
        turn.start_calls(turn.hand_over(group))
        session.commit()
        answer = turn.answers.get(timeout=5)
        transport.provider_has = []
        clock.set(clock.now() + timedelta(minutes=2))
        assert reap_stale(session=other_session, transport=transport, now=clock.now()).requeued
        yield turn, answer


def stop_closes_the_requeued_copy(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> tuple[int, Answer]:
    """`requeued_mid_request`, then the patient's STOP cancels the requeued copy before the
    stalled dispatcher's late answer comes, which is then recorded: (patient id, answer)."""
    with requeued_mid_request(session, other_session, care, clock, transport, enroll) as (
        turn,
        answer,
    ):
        patient_id = text(session, "no-driving").patient_id
        record_opt_out(
            session=other_session, patient_id=patient_id, now=clock.now(), reason="STOP: opted out"
        )
        other_session.commit()
        turn.answers.put(answer)
        turn.outcomes.record(turn.collect())
        session.commit()
    return patient_id, answer


def listed_then_settled(
    session: so.Session,
    other_session: so.Session,
    transport: Any,
    care: CareContext,
    clock: FakeClock,
    minutes: tuple[int, ...] = (1, 5, 20),
) -> None:
    """Twilio now lists what it has (`transport.listing`); the reaper, then a dispatcher,
    run at each of `minutes` after the clock."""
    transport.listing = True
    for m in minutes:
        later = clock.now() + timedelta(minutes=m)
        reap_stale(session=other_session, transport=transport, now=later)
        other_session.commit()
        dispatch(session, transport, care, later)


def seconds_to_stop_during_the_reap_job(runtime: Runtime, transport: Any) -> float:
    """Start a worker's jobs on `transport` (whose `asked` Event is set once Twilio is asked),
    bring the reap job's round, and once that pass is asking, stop as SIGTERM does
    (`shut_down`): return how long the stop took, in seconds of the real clock."""
    worker = Runtime(**{**runtime.__dict__, "transport": transport, "stopping": threading.Event()})
    scheduler, loop = build_jobs(worker, blocking=False)
    scheduler.start()
    try:
        scheduler.modify_job("reap", next_run_time=datetime.now(UTC))  # its round comes
        assert transport.asked.wait(30), "the reap job never asked Twilio"
        time.sleep(0.5)
        started = time.monotonic()
        shut_down(scheduler, loop)  # SIGTERM
        return time.monotonic() - started
    finally:
        if scheduler.running:  # pragma: no cover
            scheduler.shutdown(wait=True)
        loop.stop()
