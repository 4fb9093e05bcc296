"""`followup --now` pinned *ahead* of this host's clock, run as a support `tick`, whose
request to Twilio ends in an unknown outcome (the connection died after Twilio took it).

The text stays `sending` for the reaper, marked handed over. A live worker's reaper, on
the real clock, asks Twilio for a text with those words to that number created since the
hand-over (less a slack of 2 minutes). Written from the pinned clock, `handed_at` lay in
the future: Twilio, which created the text at the real time, listed nothing after it, and
the reaper requeued the text; the worker sent it again. `handed_at` is reconciliation's
bookkeeping, kept on the lease clock (this host's), as the leases are.
"""

from __future__ import annotations

import random
from datetime import timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.transport import ScriptedTransport
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import Enroll, at, messages


def test_an_unknown_outcome_of_a_tick_pinned_ahead_is_found_at_twilio_by_a_live_reaper(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    clock.set(at("2026-03-06T15:00"))  # the host's (and Twilio's) time
    enroll(completed_at="2026-03-06T14:30")
    pinned = FakeClock(clock.now() + timedelta(minutes=30))  # `followup --now 15:30 tick`
    dispatch_due(
        session=session,
        transport=ScriptedTransport(outcomes=[RuntimeError("socket died")]),
        care=care,
        clock=pinned,
        owner="support-tick",
        rng=random.Random(7),
        lease_clock=clock,
    )
    message = messages(session)["no-driving"]
    assert message.status == "sending" and message.handed_at is not None
    # Twilio took the request when it came: at the real time.
    at_twilio = twilio_fake.add_message(
        to=message.to_phone or "", body=message.body or "", created=clock.now(), status="queued"
    )
    twilio_fake.set_status(at_twilio["sid"], "sent")

    clock.advance(LEASE + timedelta(seconds=1))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    message = messages(session)["no-driving"]
    assert (report.reconciled, report.requeued) == (1, 0)
    assert (message.status, message.provider_sid) == ("sent", at_twilio["sid"])
