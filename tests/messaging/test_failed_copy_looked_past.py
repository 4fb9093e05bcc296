"""A copy that failed with 30001 (the text retried) is never taken for a later request's
copy: the reaper looks past it (`FailedCopy`). A review found it taken so after a
tick pinned with `--now` (its `handed_at` on the pinned clock, Twilio's dates on the real
one): the text went out a third time."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import SENDING, SENT
from followup.messaging.reconcile import reap_stale
from followup.messaging.status import record_status_callback
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import dispatch, messages


def test_a_30001_on_a_pinned_ticks_copy_then_a_5xx_does_not_send_the_text_twice(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # A tick pinned 20 minutes behind sends; Twilio fails its copy with 30001 and the text
    # is retried. The live worker's retry is created at Twilio but answered 500 (maybe
    # sent); its reaper looks for that request's copy from 2 minutes before it and finds
    # the failed first copy too (same words, same number, no text carries its SID any
    # more): taken for the new request's, the 30001 on it would retry the text again, a
    # third copy beside the one the patient got.
    enroll()
    clock.advance(timedelta(minutes=30))  # the host's clock: 15:30 in New York
    pinned = clock.now() - timedelta(minutes=20)
    dispatch_due(
        session=session, transport=twilio_transport, care=care, clock=FakeClock(pinned),
        owner="support-tick", rng=random.Random(7), lease_clock=clock,
    )  # fmt: skip
    first_sid = messages(session)["no-driving"].provider_sid or ""
    clock.advance(timedelta(seconds=20))
    twilio_fake.set_status(first_sid, "failed", error_code=30001)
    record_status_callback(
        session=session, provider_sid=first_sid, status="failed", error_code=30001,
        now=clock.now(),
    )  # fmt: skip
    session.commit()
    retry_at = messages(session)["no-driving"].not_before
    assert retry_at is not None
    clock.set(retry_at + timedelta(seconds=1))
    twilio_fake.fail_after_accept = 1
    dispatch(session, twilio_transport, care, clock.now(), owner="worker")
    text = messages(session)["no-driving"]
    assert text.status == SENDING
    [second_sid] = [sid for sid in twilio_fake.messages if sid != first_sid]
    twilio_fake.set_status(second_sid, "delivered")  # the patient has it

    for _ in range(40):  # the worker's reaper and dispatcher, every 20 s, for 13 minutes
        clock.advance(timedelta(seconds=20))
        reap_stale(
            session=session, transport=twilio_transport, now=clock.now(), owner="worker/reap"
        )
        dispatch(session, twilio_transport, care, clock.now(), owner="worker")

    text = messages(session)["no-driving"]
    copies = [m for m in twilio_fake.messages.values() if m["sid"] != first_sid]
    assert len(copies) == 1, (
        f"{len(copies)} copies after the failed one (recorded {text.status}, sid "
        f"{'first' if text.provider_sid == first_sid else text.provider_sid})"
    )


def test_every_failed_copy_is_looked_past_not_only_the_last(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
) -> None:
    # Twilio's queue overflows twice in a row: two copies fail with 30001 within a minute
    # (the first retries wait 15-60 s). The third request is created but answered 500; the
    # reaper's look-back (2 minutes before it) holds both failed copies. Kept only the last
    # one, it took the first for the third request's copy and tried the text a fourth time.
    enroll()
    failed: list[str] = []
    for _ in range(2):
        dispatch(session, twilio_transport, care, clock.now())
        text = messages(session)["no-driving"]
        assert text.status == SENT and text.provider_sid
        failed.append(text.provider_sid)
        clock.advance(timedelta(seconds=5))
        twilio_fake.set_status(text.provider_sid, "failed", error_code=30001)
        record_status_callback(
            session=session, provider_sid=text.provider_sid, status="failed",
            error_code=30001, now=clock.now(), care=care,
        )  # fmt: skip
        session.commit()
        retry_at = messages(session)["no-driving"].not_before
        assert retry_at is not None
        clock.set(retry_at + timedelta(seconds=1))
    twilio_fake.fail_after_accept = 1
    dispatch(session, twilio_transport, care, clock.now())
    assert messages(session)["no-driving"].status == SENDING
    [third] = [sid for sid in twilio_fake.messages if sid not in failed]
    twilio_fake.set_status(third, "delivered")

    for _ in range(20):  # the reaper and the dispatcher, every 20 s
        clock.advance(timedelta(seconds=20))
        reap_stale(session=session, transport=twilio_transport, now=clock.now(), care=care)
        dispatch(session, twilio_transport, care, clock.now())

    text = messages(session)["no-driving"]
    assert len(twilio_fake.messages) == 3, f"{len(twilio_fake.messages)} copies in all"
    assert (text.status, text.provider_sid) == ("delivered", third)
