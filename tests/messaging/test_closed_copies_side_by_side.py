"""The reaper asks Twilio about many closed copies at once (a clinic day cancelled, a STOP
storm, while requests of theirs may be at Twilio): side by side, as it asks about texts
left `sending`, so that the pass ends within its lease at Twilio's list latency."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging import closed_copies
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import CANCELLED, SENT, Message, MessageEvent
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.transport import ScriptedTransport, TooManyRequests
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.helpers import Enroll, at

COPIES = 130  # one after another at 0.5 s each: 65 s, past the reaper's 60 s lease
LATENCY = 0.5  # seconds Twilio takes to answer a list request


class Elapsed:
    """The reaper's clock: the test's instant plus the real time the pass has taken so
    far (the fake Twilio's latency is real time)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.began = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began)


def closed_while_unknown(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, count: int
) -> list[Message]:
    """`count` patients' no-driving texts handed over by a dispatcher that died before any
    answer, then cancelled (their clinic day): each a closed copy marked for the reaper to
    ask Twilio about once its lease has run out, as `take_back` marks one."""
    clock.set(at("2026-03-06T15:00"))
    for i in range(count):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{1000 + i:04d}")
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * count)
    report = dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(clock.now()), owner="dead"
    )
    assert report.unknown == count
    no_driving = Message.step == "no-driving"
    session.execute(
        sa.update(Message)
        .where(no_driving)
        .values(status=CANCELLED, lease_owner="dead", lease_expires_at=clock.now() + LEASE)
    )
    session.commit()
    return list(session.scalars(sa.select(Message).where(no_driving).order_by(Message.id)))


def test_the_reaper_asks_about_many_closed_copies_side_by_side_within_its_lease(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    copies = closed_while_unknown(session, care, clock, enroll, COPIES)
    handed = clock.now()
    for copy in copies[::2]:  # Twilio has every other one
        twilio_fake.add_message(
            to=copy.to_phone or "", body=copy.body or "", created=handed, status="queued"
        )
    twilio_fake.latency = LATENCY
    start = handed + LEASE
    clock.set(start)
    elapsed = Elapsed(start)
    report = reap_stale(
        session=session, transport=twilio_transport, now=start, care=care, clock=elapsed
    )
    took = elapsed.now() - start
    assert took < LEASE, f"the pass took {took}"
    assert (report.reconciled, report.errors) == (COPIES // 2, 0)
    lists = [r for r in twilio_fake.requests if r.method == "GET" and "To" in r.query]
    assert len(lists) == COPIES  # each asked about once
    session.expire_all()
    assert [m.status for m in session.scalars(sa.select(Message).where(Message.id.in_(
        [c.id for c in copies]
    )).order_by(Message.id))] == [SENT, CANCELLED] * (COPIES // 2)  # fmt: skip
    # Each settled at the instant it was, within the lease it was taken under.
    settled = list(
        session.scalars(
            sa.select(MessageEvent.at).where(MessageEvent.kind.in_(("reconciled", "checked")))
        )
    )
    assert len(settled) == COPIES
    assert all(start <= when < start + LEASE for when in settled)
    assert max(settled) > start  # stamped as settled, not at the pass's start


def test_a_429_to_the_questions_about_closed_copies_puts_the_rest_off_until_its_retry_after(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Five closed copies, asked about two at a time. Twilio answers the first two questions
    # with 429 (Retry-After 45 s): the pass asks nothing more, and all five wait at least
    # until then. Afterwards each is asked about once and settled.
    monkeypatch.setattr(closed_copies, "REAP_PART", 2)
    copies = closed_while_unknown(session, care, clock, enroll, 5)
    start = clock.now() + LEASE
    busy = TooManyRequests()
    report = reap_stale(session=session, transport=busy, now=start, care=care)
    assert len(busy.questions) == 2
    assert (report.errors, report.put_off, report.held, report.reconciled) == (2, 3, 0, 0)
    session.expire_all()
    asked_after = dict(
        session.execute(
            sa.select(Message.id, Message.lease_expires_at).where(
                Message.id.in_([c.id for c in copies])
            )
        ).all()
    )
    retry_after = start + timedelta(seconds=45)
    assert all(when >= retry_after for when in asked_after.values())
    assert sorted(asked_after.values()).count(retry_after) >= 3  # the three not asked
    calm = TooManyRequests()
    reap_stale(session=session, transport=calm, now=retry_after - timedelta(seconds=1), care=care)
    assert calm.questions == []
    answering = ScriptedTransport(provider_has=[])
    later = reap_stale(
        session=session, transport=answering, now=start + timedelta(hours=1), care=care
    )
    assert (later.errors, later.put_off) == (0, 0)
    session.expire_all()
    rows = session.execute(
        sa.select(Message.status, Message.lease_owner).where(Message.id.in_([c.id for c in copies]))
    ).all()
    assert rows == [(CANCELLED, None)] * 5  # asked once each: Twilio has none of them
    checked = session.scalars(
        sa.select(MessageEvent.message_id).where(MessageEvent.kind == "checked")
    ).all()
    assert sorted(checked) == sorted(c.id for c in copies)


def test_a_429_from_the_official_twilio_client_stops_the_closed_copies_questions(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As the test above, through TwilioTransport and the official client at the fake
    # Twilio, which answers every list request 429 (Retry-After 45 s). The client raises a
    # refused list page as a bare TwilioException("Unable to fetch page", response), with
    # no status or code of its own: taken for an ordinary error, the pass went on asking
    # every part while Twilio said to slow down, and asked the refused copies again after
    # 15 s, not after the Retry-After.
    monkeypatch.setattr(closed_copies, "REAP_PART", 1)
    copies = closed_while_unknown(session, care, clock, enroll, 3)
    start = clock.now() + LEASE
    clock.set(start)
    refused = FakeError(20429, 429, "Too Many Requests", retry_after="45")
    for copy in copies:
        twilio_fake.list_faults[copy.to_phone or ""] = {0: refused}
    report = reap_stale(session=session, transport=twilio_transport, now=start, care=care)
    lists = [r for r in twilio_fake.requests if r.method == "GET" and "To" in r.query]
    session.expire_all()
    leases = session.scalars(
        sa.select(Message.lease_expires_at).where(Message.id.in_([c.id for c in copies]))
    ).all()
    assert len(lists) == 1, f"{len(lists)} list requests after Twilio's first 429"
    assert (report.errors, report.put_off) == (1, 2)
    assert all(when >= start + timedelta(seconds=45) for when in leases)
