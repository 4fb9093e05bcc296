"""Two same-words texts to one phone handed over minutes apart, both left unknown and both
at Twilio. find_sent returned the NEWEST match created since the earlier text's hand-over,
so the earlier text took the later one's message; the later text's own window (its
hand-over minus RECONCILE_SLACK) does not reach the earlier message, so it was found
missing and sent again: a second copy, and the first text recorded with the wrong SID.
find_sent now takes the earliest match at or after `since`."""

from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import SENDING, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import Enroll, at


def test_two_same_words_texts_handed_minutes_apart_each_take_their_own_message(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    enroll(first_name="Ada", completed_at="2026-03-06T14:30", phone="(202) 555-0143")
    enroll(first_name="Ben", completed_at="2026-03-06T14:29", phone="(202) 555-0143")
    a, b = session.scalars(
        sa.select(Message).where(Message.step == "no-driving").order_by(Message.id)
    ).all()
    t0 = clock.now()
    for m, handed in ((a, t0), (b, t0 + timedelta(minutes=3))):
        session.execute(
            sa.update(Message)
            .where(Message.id == m.id)
            .values(
                status=SENDING,
                handed_at=handed,
                body="Same words.",
                to_phone="+12025550143",
                lease_owner="dead",
                lease_expires_at=t0 + timedelta(minutes=4),
            )
        )
        twilio_fake.add_message(
            to="+12025550143", body="Same words.", created=handed, status="delivered"
        )
    session.commit()
    clock.set(t0 + timedelta(minutes=5))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    assert (report.reconciled, report.requeued) == (2, 0)
    session.expire_all()
    sids = {m.provider_sid for m in (a, b)}
    assert len(sids) == 2 and None not in sids  # each its own message at Twilio
