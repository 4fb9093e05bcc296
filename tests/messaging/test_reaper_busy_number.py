"""A text whose number Twilio lists too many texts to since the hand-over for the reaper's
scan (RECONCILE_SCAN) to tell whether it is there: asking again cannot help (texts to the
number only accumulate), so it is held for a person, never resent and never asked about
forever out of sight."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.models import CANCELLED, SENDING, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import RECONCILE_SCAN, TwilioTransport
from followup.ops.metrics import DatabaseCollector
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import Enroll, event_kinds
from tests.messaging.test_reaper import dead_dispatcher_left


def busier_than_a_scan(fake: FakeTwilio, clock: FakeClock, text: Message, handed: datetime) -> None:
    """RECONCILE_SCAN + 1 other texts to `text`'s number since its hand-over."""
    for i in range(RECONCILE_SCAN + 1):
        clock.set(handed + timedelta(seconds=i + 1))
        fake.add_message(to=text.to_phone or "", body=f"another patient's text {i}")


def reaper_rounds(
    session: so.Session,
    transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
    handed: datetime,
    count: int,
) -> None:
    """`count` reaper passes 20 minutes apart, the first 20 s after the lease ran out."""
    instant = handed + LEASE + timedelta(seconds=20)
    for _ in range(count):
        clock.set(instant)
        reap_stale(session=session, transport=transport, now=instant, care=care)
        instant += timedelta(minutes=20)


def test_a_text_to_a_number_too_busy_to_scan_is_held_for_a_person_not_asked_forever(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # A care home's desk: a dead worker left a text to it handed over; by the time Twilio
    # answers list requests again, more than RECONCILE_SCAN texts went to that number.
    handed, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    text = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    busier_than_a_scan(twilio_fake, clock, text, handed)
    sent_before = len(twilio_fake.messages)
    reaper_rounds(session, twilio_transport, care, clock, handed, 4)  # an hour and more
    session.expire_all()
    text = session.get_one(Message, text.id)
    assert len(twilio_fake.messages) == sent_before  # never resent on a guess
    assert text.status == SENDING
    assert event_kinds(session, text.id)[-1] == "held"  # for a person, as the log shows
    assert text.lease_owner is None and text.lease_expires_at is None  # asked no more
    gets = [r for r in twilio_fake.requests if r.method == "GET"]
    assert len(gets) <= RECONCILE_SCAN // 50  # one scan, not one every 15 minutes


def test_a_closed_copy_to_a_number_too_busy_to_scan_stays_closed_and_is_asked_no_more(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    handed, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    text = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(status=CANCELLED, lease_owner="dead", lease_expires_at=handed + LEASE)
    )
    session.commit()
    busier_than_a_scan(twilio_fake, clock, text, handed)
    reaper_rounds(session, twilio_transport, care, clock, handed, 3)
    session.expire_all()
    text = session.get_one(Message, text.id)
    assert (text.status, text.lease_owner, text.provider_sid) == (CANCELLED, None, None)
    assert event_kinds(session, text.id)[-1] == "checked"
    assert len([r for r in twilio_fake.requests if r.method == "GET"]) <= RECONCILE_SCAN // 50


def test_a_held_text_counts_in_the_stuck_gauge_until_a_person_settles_it(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session_factory: so.sessionmaker[so.Session],
) -> None:
    # FollowupTextsStuck ("held ones need a person") fires on followup_texts_stuck: a held
    # text (sending, its lease released) must count there, or nobody is told of it.
    handed, _ = dead_dispatcher_left(session, care, clock, enroll, 1)
    text = session.scalars(sa.select(Message).where(Message.step == "no-driving")).one()
    busier_than_a_scan(twilio_fake, clock, text, handed)
    clock.set(handed + LEASE + timedelta(seconds=20))
    assert reap_stale(session=session, transport=twilio_transport, now=clock.now()).held == 1
    clock.advance(timedelta(hours=2))
    collector = DatabaseCollector(session_factory=session_factory, care=care, clock=clock)
    collected = {m.name: m for m in collector.collect()}
    assert [s.value for s in collected["followup_texts_stuck"].samples] == [1]
    # ... and in the needs-attention queue, where a person settles it.
    items = collected["followup_attention_items"].samples
    assert {s.labels["kind"]: s.value for s in items}["unknown"] == 1
