"""Pacing and the transport under concurrency: TWILIO_MAX_PER_SECOND, 429s, one client per
thread, and the retry schedule."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import PENDING, SENT, Message, MessageEvent
from followup.messaging.reconcile import reap_stale
from followup.messaging.retries import HANDOVER_MARGIN, MIN_RETRY, next_try
from followup.messaging.transports.base import OutgoingSms
from followup.messaging.transports.pacing import MIN_RATE, THROTTLE_PAUSE, Pacer
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import dispatch

Enroll = Callable[..., EnrollmentResult]


class Ticker:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_pacer_caps_the_rate_with_a_tenth_of_a_second_of_burst() -> None:
    tick = Ticker()
    pacer = Pacer(50, monotonic=tick)
    assert pacer.take(100) == 5  # a tenth of a second's worth at once
    assert pacer.take(1) == 0
    assert pacer.wait_time() == pytest.approx(0.02)
    tick.t += 0.02
    assert pacer.take(10) == 1
    tick.t += 10
    assert pacer.take(100) == 5  # never more than a tenth of a second's worth saved up
    slow = Pacer(2, monotonic=tick)
    assert slow.take(10) == 1  # at least one, however low the rate


def test_pacer_without_a_cap_takes_all_until_a_429_then_pauses_halves_and_recovers() -> None:
    tick = Ticker()
    pacer = Pacer(None, monotonic=tick)
    assert pacer.rate is None
    assert pacer.take(40) == 40
    pause = pacer.throttled(retry_after=3)
    assert pause == 3
    assert pacer.take(1) == 0 and pacer.wait_time() == pytest.approx(3)
    assert pacer.rate == pytest.approx(20)  # half of the 40 a second it was sending
    tick.t += 3.0
    assert pacer.take(100) == 1  # a token at the reduced rate, not a burst of 40
    tick.t += 1.0
    assert 20 < (pacer.rate or 0) < 40  # growing back while Twilio accepts
    tick.t += 60
    assert pacer.rate is None  # back to no limit
    assert pacer.throttles == 1


def test_pacer_never_slows_below_its_floor_or_pauses_less_than_its_minimum() -> None:
    tick = Ticker()
    pacer = Pacer(2, monotonic=tick)
    for _ in range(10):
        assert pacer.throttled(retry_after=None) == THROTTLE_PAUSE
    assert pacer.rate == MIN_RATE


def test_one_transport_used_by_many_threads_gives_each_text_its_own_answer(
    twilio_fake: FakeTwilio, twilio_transport: TwilioTransport, clock: FakeClock
) -> None:
    twilio_fake.latency = 0.01
    sms = [
        OutgoingSms(
            message_id=i,
            step="no-driving",
            to=f"+1202555{i:04d}",
            body=f"text {i}",
            now=clock.now(),
        )
        for i in range(64)
    ]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(twilio_transport.send, sms))
    for text, result in zip(sms, results, strict=True):
        created = twilio_fake.messages[result.provider_sid]
        assert (created["to"], created["body"]) == (text.to, text.body)
    assert len({r.provider_sid for r in results}) == 64
    # One HTTP session per thread that sent (not one shared by all).
    assert 1 < len(twilio_transport._clients) <= 16


def test_twilio_max_per_second_spaces_the_creates(
    twilio_fake: FakeTwilio,
    twilio_settings: Settings,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    for i in range(30):
        enroll(phone=f"(202) 555-{i + 100:04d}")
    transport = TwilioTransport.from_settings(replace(twilio_settings, twilio_max_per_second=20))
    try:
        report = dispatch(session, transport, care, clock.now())
    finally:
        transport.close()
    assert report.sent == 30
    received = sorted(r.received_at for r in twilio_fake.requests if r.method == "POST")
    # Two may go at once (a tenth of a second's worth); the other 28 follow at 20 a second
    # (1.4 s; without the cap these 30 take a few hundredths of a second).
    assert received[-1] - received[0] >= 1.2
    # After the first few (each worker thread's first request also opens its connection,
    # so those arrive bunched): at most 20 a second and a tenth of a second's burst.
    steady = received[4:]
    for start in range(len(steady)):
        within_a_second = [t for t in steady[start:] if t < steady[start] + 1.0]
        assert len(within_a_second) <= 23


def test_a_429_slows_the_dispatcher_down_without_spending_the_texts_retries(
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    for i in range(10):
        enroll(phone=f"(202) 555-{i + 100:04d}")
    twilio_fake.throttle_next = 3
    twilio_fake.down_retry_after = "120"
    report = dispatch(session, twilio_transport, care, clock.now())
    assert report.throttled >= 3 and report.failed == 0 and report.retried == 0
    assert twilio_transport.pacer.throttles >= 1
    assert twilio_transport.pacer.wait_time() > 1  # every hand-over now waits (Retry-After)
    session.expire_all()
    waiting = session.scalars(
        sa.select(Message).where(Message.status == PENDING, Message.step == "no-driving")
    ).all()
    assert len(waiting) == report.throttled
    for text in waiting:
        assert text.attempts == 0  # the refused call is not an attempt
        # Refused: after Retry-After; held back before their call (the 429 came while
        # they waited for a worker): after the pacer's pause (at most MAX_PAUSE, 60 s).
        assert text.not_before is not None and text.not_before >= clock.now() + timedelta(
            seconds=50
        )
    refused = [t for t in waiting if t.not_before >= clock.now() + timedelta(seconds=120)]
    assert len(refused) >= 3
    # After the pause they go out, each once.
    clock.advance(timedelta(seconds=121))
    twilio_transport.pacer = Pacer(None)  # (the real pause is in real seconds)
    dispatch(session, twilio_transport, care, clock.now())
    assert Counter(m["to"] for m in twilio_fake.messages.values()) == Counter(
        {f"+1202555{i + 100:04d}": 1 for i in range(10)}
    )


@pytest.mark.parametrize(
    ("left", "retry_after", "expected"),
    [
        (timedelta(hours=48), None, "backoff"),  # plenty of window: the normal backoff
        (timedelta(minutes=3), None, "last chance"),  # a last try squeezed in before expiry
        (timedelta(minutes=3), 600.0, None),  # Retry-After reaches past the window: expire
        (timedelta(seconds=5), None, None),  # no try fits any more
    ],
)
def test_next_try_retries_until_the_window_closes(
    left: timedelta, retry_after: float | None, expected: str | None
) -> None:
    now = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)
    when = next_try(
        attempts=8, expires_at=now + left, now=now, rng=random.Random(1), retry_after=retry_after
    )
    if expected is None:
        assert when is None
    elif expected == "backoff":
        assert when is not None and now + timedelta(minutes=7) <= when <= now + timedelta(
            minutes=15
        )
    else:
        assert when == now + left - 2 * HANDOVER_MARGIN
        assert when - now >= MIN_RETRY


def test_one_reaper_pass_settles_every_stale_text_and_two_reapers_never_settle_one_twice(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    for i in range(24):
        enroll(phone=f"(202) 555-{i + 100:04d}")
    # Every hand-over ended with no answer: the first 12 never reached Twilio (500), the
    # other 12 did (created, then the connection dropped). All 24 wait in `sending`.
    twilio_fake.fail_next = 12
    twilio_fake.drop_after_accept = 12
    with Dispatcher(
        transport=twilio_transport, care=care, clock=clock, owner="w1", concurrency=1
    ) as d:
        assert d.dispatch(session).unknown == 24
    assert len(twilio_fake.messages) == 12
    clock.advance(timedelta(minutes=2))
    barrier = threading.Barrier(2)
    reports = []

    def reap(owner: str) -> None:
        with session_factory() as s:
            barrier.wait()
            reports.append(
                reap_stale(
                    session=s, transport=twilio_transport, now=clock.now(), owner=owner, batch=5
                )
            )

    threads = [threading.Thread(target=reap, args=(f"r{k}/reap",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.reconciled for r in reports) + sum(r.requeued for r in reports) == 24
    session.expire_all()
    settled = Counter(
        session.scalars(
            sa.select(MessageEvent.message_id).where(
                MessageEvent.kind.in_(("reconciled", "requeued"))
            )
        )
    )
    assert len(settled) == 24 and max(settled.values()) == 1  # each settled exactly once
    assert Counter(
        session.scalars(sa.select(Message.status).where(Message.step == "no-driving"))
    ) == {
        SENT: 12,
        PENDING: 12,
    }
