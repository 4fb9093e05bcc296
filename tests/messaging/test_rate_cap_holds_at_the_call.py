"""TWILIO_MAX_PER_SECOND holds for the creates as they reach Twilio, not only for the guards.

README: TWILIO_MAX_PER_SECOND "texts per second at most"; the pacer: "a token bucket a
tenth of a second deep: never more than 10% over the rate in any second". The pacer is
asked when the database thread guards a group; with fast calls the pass guards texts
ahead of a free worker (`lookahead`), and they wait in the pool's queue. When one call is
slow (a single slow answer from Twilio), the texts guarded at the capped rate meanwhile
pile up behind it and are all called the moment it returns, on top of the next second's
texts: a single long code (which the setting exists for) is sent a burst.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import Dispatcher
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.messaging.transports.pacing import Pacer
from followup.patients.validation import EnrollmentResult
from tests.messaging.helpers import at

Enroll = Callable[..., EnrollmentResult]

CAP = 10  # TWILIO_MAX_PER_SECOND


class TwilioWithOneSlowAnswer:
    """Answers at once, except the `slow`-th create, answered after 0.8 s."""

    name = "twilio"
    timeout = 2.0

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self.pacer = Pacer(CAP)
        self.starts: list[float] = []  # monotonic instant each create reached "Twilio"
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._lock:
            self.starts.append(time.monotonic())
            n = len(self.starts)
        if n == self.slow:
            time.sleep(0.8)
        return SendResult(provider_sid=f"SM{next(self._ids):032d}", provider_status="queued")

    def find_sent(self, **kwargs: object) -> SendResult | None:
        return None

    def busiest_second(self) -> int:
        starts = sorted(self.starts)
        return max(sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts))


def test_one_slow_answer_does_not_let_the_capped_rate_burst_when_it_returns(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    clock.set(at("2026-03-06T15:00"))
    for i in range(45):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{i + 100:04d}")
    transport = TwilioWithOneSlowAnswer(slow=15)
    with Dispatcher(
        transport=transport,
        care=care,
        clock=clock,
        owner="w1",
        concurrency=1,
        handover_max_wait=1.0,  # the production limit (tests default to 10 s)
    ) as dispatcher:
        report = dispatcher.dispatch(session)
    assert report.sent == 45
    # A tenth of a second's burst over the cap at most (one text at this cap: 11).
    busiest = transport.busiest_second()
    assert busiest <= CAP + CAP // 10, (
        f"{busiest} creates reached Twilio within one second at TWILIO_MAX_PER_SECOND={CAP}"
    )
