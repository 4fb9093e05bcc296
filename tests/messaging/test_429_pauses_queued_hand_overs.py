"""A 429 pauses every hand-over, including texts already guarded and queued for a worker.

README ("The dispatcher", Fast): "A 429 from Twilio pauses every hand-over for
`Retry-After` (at least a second) and halves the rate". The pacer is asked only when the
database thread forms a group; texts guarded ahead of a free worker (the pass's
`lookahead`, up to GROUP_MAX, when calls are fast) sit in the pool's queue and are called
by the worker threads whatever the pacer says since. After Twilio's first 429 they keep
reaching Twilio inside the pause it asked for, each refused again, and each refusal halves
the rate once more.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import Message
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.messaging.transports.pacing import Pacer
from followup.patients.validation import EnrollmentResult
from tests.messaging.helpers import at

Enroll = Callable[..., EnrollmentResult]


class TwilioThatThrottles:
    """Accepts the first `accept` creates at once, then answers 429 (Retry-After 30 s), as
    Twilio does for as long as the pause it asked for lasts."""

    name = "twilio"
    timeout = 2.0

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.pacer = Pacer(None)
        self.calls: list[tuple[float, str]] = []  # (monotonic start, "sent" or "429")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._lock:
            started = time.monotonic()
            if len(self.calls) < self.accept:
                self.calls.append((started, "sent"))
                return SendResult(
                    provider_sid=f"SM{next(self._ids):032d}", provider_status="queued"
                )
            self.calls.append((started, "429"))
            first = sum(1 for _, kind in self.calls if kind == "429") == 1
        if first:
            time.sleep(0.2)  # the answer's round trip (the texts guarded meanwhile queue up)
        raise TransientSendError("20429", "Too Many Requests", retry_after=30, throttled=True)

    def find_sent(self, **kwargs: object) -> SendResult | None:
        return None

    def after_first_429(self) -> list[str]:
        first = next(i for i, (_, kind) in enumerate(self.calls) if kind == "429")
        return [kind for _, kind in self.calls[first + 1 :]]


def test_after_a_429_no_text_guarded_before_it_is_handed_to_twilio_during_the_pause(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(at("2026-03-06T15:00"))
    for i in range(120):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{i + 100:04d}")
    # Fast calls (Twilio answering at once) make the pass guard texts ahead of the one
    # worker thread; the 41st create is refused with Retry-After 30 s (answered after
    # 0.2 s, while the next texts wait in the pool's queue, as they do at any latency).
    transport = TwilioThatThrottles(accept=40)
    with Dispatcher(
        transport=transport, care=care, clock=clock, owner="w1", concurrency=1
    ) as dispatcher:
        report = dispatcher.dispatch(session)
    # One worker thread: every call after the 429 started after Twilio said "wait 30 s"
    # and after the pacer was told (the same thread did it before its next call).
    late = transport.after_first_429()
    session.expire_all()
    sent = session.scalar(sa.select(sa.func.count()).where(Message.status == "sent"))
    pending = session.scalar(
        sa.select(sa.func.count()).where(
            Message.status == "pending", Message.due_at <= at("2026-03-06T15:00")
        )
    )
    assert (sent, pending) == (40, 80)  # the rest back in the queue (or never claimed)
    assert report.claimed <= 120
    assert late == [], (
        f"{len(late)} creates handed to Twilio inside the 30 s pause it asked for "
        f"(pacer throttled {transport.pacer.throttles} times, rate now {transport.pacer.rate})"
    )
    assert transport.pacer.throttles == 1
