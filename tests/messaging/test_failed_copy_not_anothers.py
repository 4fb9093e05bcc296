"""A text whose own request's copy failed with 30001 takes that copy (and is retried), not
the copy of another text with the same words to the same number (a phone two patients
share). Skipping every copy that failed so (6a1120f, `never_reached`) took the other's:
recorded delivered though nothing of it reached the phone, while the other, which Twilio
delivered, was found "not at provider" and sent a second time. Now only a copy recorded as
failed and retried (`FailedCopy`) is looked past."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import DELIVERED, SENDING, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import Enroll, at

PHONE = "+12025550143"


@pytest.mark.parametrize("apart", [3, 1], ids=["3-min-apart", "1-min-apart"])
def test_a_text_whose_own_copy_failed_30001_does_not_take_the_same_words_text_of_another(
    apart: int,
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
    sids = {}
    # Both handed over by a dispatcher that died before recording either answer: Ada's
    # reached Twilio first and failed there with 30001 (the patient got nothing); Ben's,
    # `apart` minutes later, was delivered. (3 minutes apart, Ben's look-back does not
    # reach Ada's copy: this passed before 6a1120f.)
    for m, handed, status, code in (
        (a, t0, "failed", 30001),
        (b, t0 + timedelta(minutes=apart), "delivered", None),
    ):
        session.execute(
            sa.update(Message)
            .where(Message.id == m.id)
            .values(
                status=SENDING,
                handed_at=handed,
                attempts=1,
                body="Same words.",
                to_phone=PHONE,
                lease_owner="dead",
                lease_expires_at=t0 + timedelta(minutes=apart + 1),
            )
        )
        copy = twilio_fake.add_message(to=PHONE, body="Same words.", created=handed, status=status)
        if code is not None:
            twilio_fake.set_status(copy["sid"], status, error_code=code)
        sids[m.id] = copy["sid"]
    session.commit()
    clock.set(t0 + timedelta(minutes=apart + 2))
    reap_stale(session=session, transport=twilio_transport, now=clock.now())
    session.expire_all()
    a2 = session.get_one(Message, a.id)
    b2 = session.get_one(Message, b.id)
    # Ben's text is the one Twilio delivered: it must not be sent again, nor may Ada's,
    # whose copy never reached the phone, be recorded delivered with Ben's copy.
    assert a2.provider_sid != sids[b.id], (
        f"Ada's text took Ben's copy ({a2.status}); Ben's is {b2.status}, sid {b2.provider_sid}"
    )
    assert (b2.status, b2.provider_sid) == (DELIVERED, sids[b.id]), (
        f"Ben's delivered text recorded {b2.status} (sid {b2.provider_sid}): sent again"
    )
