"""Small helpers shared by the Twilio tests."""

from __future__ import annotations

import random
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import Message, MessageEvent
from followup.messaging.reports import DispatchReport
from followup.messaging.transports.base import SmsTransport


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
