"""Small helpers shared by the messaging tests: one dispatcher pass, texts and their
history, and the scenes the race tests start from."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher, dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import SmsTransport
from followup.messaging.turns import DispatchPass
from followup.patients.edits import change_completion_time
from followup.patients.validation import EnrollmentResult
from tests.fakes.transport import ScriptedTransport


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
