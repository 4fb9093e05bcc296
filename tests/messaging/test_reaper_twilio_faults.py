"""The reaper asking the real twilio client, against the fake Twilio, about texts whose
outcome is unknown: only Twilio's positive answer that it has no such text lets one go
again; a 429, a 5xx, a timeout, a dropped connection, a broken page, a failed later page or
an authentication error leaves it to be asked again later, and never touches another text's
answer."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import LEASE
from followup.messaging.models import PENDING, SENDING, SENT, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from tests.fakes.twilio_server import DROP, NO_RECORDS, TRUNCATED, FakeError, FakeTwilio, ListFault
from tests.messaging.helpers import Enroll, assert_each_at_twilio_once
from tests.messaging.test_dispatch import tick
from tests.messaging.test_reaper import dead_dispatcher_left

TIMEOUT = 3.0  # seconds the fake waits: past the transport's 2 s read timeout

# What Twilio answers the list request for each text's number. None: it answers.
FAULTS: list[dict[int, ListFault]] = [
    {0: FakeError(20429, 429, "Too Many Requests")},
    {0: FakeError(20429, 429, "Too Many Requests", retry_after="30")},
    {0: FakeError(20500, 500, "Internal Server Error")},
    {0: FakeError(20503, 503, "Service Unavailable", retry_after="5")},
    {0: FakeError(None, 502, "Bad Gateway")},
    {0: TIMEOUT},
    {0: DROP},
    {0: TRUNCATED},
    {0: NO_RECORDS},
    {0: FakeError(20003, 401, "Authenticate")},
    {0: FakeError(20003, 403, "Forbidden")},
    {0: FakeError(20404, 404, "The requested resource was not found")},
    {1: FakeError(20500, 500, "Internal Server Error")},  # the second page fails
    {1: FakeError(20429, 429, "Too Many Requests")},
    {1: TIMEOUT},
    {1: TRUNCATED},
    {1: DROP},
]
ANSWERED = 3  # texts whose number Twilio lists without a fault (it has none of them)


def stale_texts(session: so.Session) -> list[Message]:
    session.expire_all()
    no_driving = sa.select(Message).where(Message.step == "no-driving").order_by(Message.id)
    return list(session.scalars(no_driving))


def put_at_twilio(fake: FakeTwilio, text: Message, created: datetime, newer: int) -> None:
    """Twilio has `text` (created at `created`, still queued: no date_sent yet), with
    `newer` other texts to its number created after it (listed before it: 50 or more put
    it on the second page)."""
    fake.add_message(to=text.to_phone or "", body=text.body or "", created=created, status="queued")
    for i in range(newer):
        fake.add_message(
            to=text.to_phone or "",
            body=f"another text {i}",
            created=created + timedelta(seconds=i + 1),
        )


def test_a_text_twilio_cannot_be_asked_about_now_is_asked_again_later_never_resent(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # A dead dispatcher left 20 texts handed over, outcome unknown; Twilio has each of the
    # first 17 (the pass asks 16 at a time), but their list requests fail, each its own way;
    # it lists the other 3 numbers and has none of their texts.
    count = len(FAULTS) + ANSWERED
    now, _ = dead_dispatcher_left(session, care, clock, enroll, count)
    texts = stale_texts(session)
    assert [t.status for t in texts] == [SENDING] * count
    for text, faults in zip(texts, FAULTS, strict=False):
        put_at_twilio(twilio_fake, text, now, newer=60 if 1 in faults else 0)
        twilio_fake.list_faults[text.to_phone or ""] = faults
    at_twilio = dict(twilio_fake.messages)

    clock.set(now + LEASE)
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    assert (report.stale, report.errors, report.reconciled, report.requeued) == (
        count, len(FAULTS), 0, ANSWERED,
    )  # fmt: skip
    texts = stale_texts(session)
    faulted, answered = texts[: len(FAULTS)], texts[len(FAULTS) :]
    assert [t.status for t in faulted] == [SENDING] * len(FAULTS)
    assert all(t.lease_expires_at and t.lease_expires_at > clock.now() for t in faulted)
    assert [t.status for t in answered] == [PENDING] * ANSWERED
    # Nothing was created: only the three Twilio does not have go again, at the next tick.
    assert twilio_fake.messages == at_twilio
    tick(session, twilio_transport, care, clock.now())
    assert len(twilio_fake.messages) == len(at_twilio) + ANSWERED

    # Twilio answers again: each text it had is recorded with its SID, none sent twice.
    twilio_fake.list_faults.clear()
    clock.advance(LEASE + timedelta(seconds=1))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())
    assert (report.reconciled, report.requeued, report.errors) == (len(FAULTS), 0, 0)
    tick(session, twilio_transport, care, clock.now())
    texts = stale_texts(session)
    assert [t.status for t in texts] == [SENT] * count
    mine = {m["sid"]: m for m in twilio_fake.messages.values() if "another" not in m["body"]}
    assert len(mine) == count
    assert {t.provider_sid for t in texts} == set(mine)
    for t in texts:
        assert (mine[t.provider_sid or ""]["to"], mine[t.provider_sid or ""]["body"]) == (
            t.to_phone, t.body,
        )  # fmt: skip
    for sid in [s for s, m in twilio_fake.messages.items() if "another" in m["body"]]:
        del twilio_fake.messages[sid]
    assert_each_at_twilio_once(session, twilio_fake)
