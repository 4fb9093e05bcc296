"""Claiming due texts (claims.py): what a claim may lease, on its own, without the hand-over
checks that follow it."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.models import PENDING, Message
from tests.messaging.helpers import at, seed

NOON = at("2026-03-06T12:00")


def test_claim_due_never_leases_a_text_whose_window_has_closed(
    session: so.Session, clock: FakeClock
) -> None:
    clock.set(NOON)
    due = NOON - timedelta(hours=1)
    [closed] = seed(session, 1, due=due, expires=NOON, tz="America/New_York")
    [still_open] = seed(
        session, 1, due=due, expires=NOON + timedelta(seconds=1), tz="America/New_York",
        first_phone=1,
    )  # fmt: skip
    assert claim_due(session=session, now=NOON, owner="w1", limit=10) == [still_open]
    session.commit()
    message = session.get(Message, closed)
    # Left for expire_overdue, which says why: a claim would hold it as if it could go out.
    assert message is not None and message.status == PENDING and message.lease_owner is None
