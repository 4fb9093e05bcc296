"""Dispatching: claim due texts under a lease, hand each to the transport, record outcomes.

One pass (`Dispatcher.dispatch`) sends everything due at the clock's instant, and what
falls due while it runs:

- **expire**: pending texts whose window has closed are marked expired (one ranged UPDATE).
- **claim**: due texts are leased to this dispatcher in batches (`FOR UPDATE SKIP LOCKED`
  on PostgreSQL), committed before any of them is handed over.
- **hand over**: whenever one of DISPATCH_CONCURRENCY slots is free and the pacer allows
  (TWILIO_MAX_PER_SECOND, 429s), a group of claimed texts is read again and checked at the
  clock's instant: `reason_not_to_send`, expiry and the patient's quiet hours, each with
  HANDOVER_MARGIN to spare. Each is rendered, then one guarded UPDATE confirms it is still
  `sending` under our unexpired lease (and its patient not opted out, its window open),
  extends the lease and marks it handed over (`handed_at`); committed. A worker thread
  checks the clock (and the lease's time left) once more and calls the transport;
  `sent_at` is that instant.
- **record**: answers are written in groups, each outcome guarded on our lease, in the
  same transaction as the next group's guard. A crash between the provider's answer and
  that commit leaves the text `sending` with `handed_at` set: the reaper asks the
  provider, and records it instead of resending.
- **heartbeat**: every HEARTBEAT the leases of every text still held are extended, so a
  slow provider never lets a lease run out under a live dispatcher.

Only the calling thread touches the database (one session: no write contention on SQLite);
worker threads only call the transport. A transport that makes no network call (the
console: `in_process`) is called on the calling thread instead, after the same guard.
Transient failures retry with capped, jittered exponential backoff until the text's window
closes (Retry-After honoured); a "too many requests" answer slows the pacer down instead of
spending the text's backoff.

The pass's loop on the database thread (claim, hand over, heartbeat) is in turns.py, its
worker threads in workers.py; the queue's queries (expire, claim, next wake) in claims.py;
recording the answers in outcomes.py; the hand-over margin and the retry timing in
retries.py.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import Clock
from followup.messaging.claims import (
    LEASE,
    expire_overdue,
)
from followup.messaging.handover import Answer, Item
from followup.messaging.reports import DispatchReport
from followup.messaging.retries import HANDOVER_MARGIN, quiet_end_near
from followup.messaging.transports.base import (
    OutgoingSms,
    SendError,
    SmsTransport,
    TransientSendError,
)
from followup.messaging.transports.pacing import Pacer
from followup.messaging.turns import DispatchPass
from followup.messaging.workers import Workers

log = logging.getLogger(__name__)


DEFAULT_CONCURRENCY = 16  # DISPATCH_CONCURRENCY's default


HEARTBEAT = timedelta(seconds=15)  # how often a working dispatcher renews its leases
# A text's call starts at most this long after its guard (else it goes back to the queue);
# normally within one database turn: a few milliseconds.
HANDOVER_MAX_WAIT = 1.0


def call_allowance(transport: SmsTransport) -> timedelta:
    """The longest one transport call can take: its connect and read timeouts, and a second."""
    timeout = float(getattr(transport, "timeout", 0.0) or 0.0)
    return timedelta(seconds=2 * timeout + 1)


def pacer_of(transport: SmsTransport) -> Pacer:
    """The transport's pacer (rate cap, 429s), or one without limits."""
    pacer = getattr(transport, "pacer", None)
    return pacer if isinstance(pacer, Pacer) else Pacer(None)


class Dispatcher:
    """Hands due texts to a transport, at most `concurrency` at a time.

    Keep one per process (it owns a thread pool; `close()` it); `dispatch(session)` runs one
    pass on the caller's thread and session.
    """

    def __init__(
        self,
        *,
        transport: SmsTransport,
        care: CareContext,
        clock: Clock,
        owner: str,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease: timedelta = LEASE,
        heartbeat: timedelta = HEARTBEAT,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
        handover_max_wait: float | None = None,
        lease_clock: Clock | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.transport = transport
        self.care = care
        self.clock = clock
        # Leases are how processes keep off each other's texts, so they run on the time
        # every process shares: `lease_clock` (this host's) when `clock` is pinned
        # (`--now`). Written from a pinned clock, a lease looked run out to a live worker's
        # reaper (an hour behind: at once), which sent the text again beside this pass.
        self.lease_clock = lease_clock
        self.owner = owner
        self.concurrency = concurrency
        # A call starts only while its lease has a whole call's allowance left, so the
        # lease is never shorter than two allowances (60 s covers TWILIO_TIMEOUT_SECONDS 10).
        self.lease = max(lease, 2 * call_allowance(transport))
        self.heartbeat = min(heartbeat, self.lease / 4)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.pacer = pacer or pacer_of(transport)
        # A call may start only while this much of its lease is left (connect + read).
        self.allowance_seconds = call_allowance(transport).total_seconds()
        # A call starts at most this long after its guard checked opt-out and cancellation.
        self.handover_max_wait = (
            HANDOVER_MAX_WAIT if handover_max_wait is None else handover_max_wait
        )
        # A transport that makes no network call (the console writes a line) is called on
        # the pass's own thread: worker threads would only contend with it for the GIL.
        self.calls_in_place = getattr(transport, "in_process", False) is True
        self._workers: Workers | None = None
        self._stop = threading.Event()

    def lease_at(self, instant: datetime) -> datetime:
        """`instant` of `clock` on the lease clock (itself without one): where a lease
        counted from it runs out, and what "now" is for leases."""
        if self.lease_clock is None:
            return instant
        return instant + (self.lease_clock.now() - self.clock.now())

    def request_stop(self) -> None:
        """Make the pass under way hand its claimed texts back and end after the calls in
        flight (a shutdown); later passes do nothing."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the worker threads once their calls have returned."""
        if self._workers is not None:
            self._workers.shutdown()
            self._workers = None

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def workers(self) -> Workers:
        if self._workers is None:
            self._workers = Workers(self.concurrency, self.hand_over)
        return self._workers

    def dispatch(self, session: so.Session, *, limit: int | None = None) -> DispatchReport:
        """Send every text due now (at most `limit` claimed); return what happened."""
        report = DispatchReport()
        if self.stopping:
            return report
        report.expired += expire_overdue(session=session, now=self.clock.now())
        session.commit()
        DispatchPass(self, session, report, limit).run()
        # Outcomes were written with Core UPDATEs: objects the caller holds must reload.
        session.expire_all()
        return report

    # --- the worker threads' part ---------------------------------------------------------

    def hand_over(self, item: Item) -> Answer:
        """Check the clock once more, then call the transport (on a worker thread)."""
        at = self.clock.now()
        started = time.monotonic()
        if started > item.deadline:
            return Answer(item, at, at, withheld="lease")
        if started - item.guarded > self.handover_max_wait:
            return Answer(item, at, at, withheld="stale")
        if self.pacer.paused():  # a 429 came back since this text was guarded
            return Answer(item, at, at, withheld="throttled")
        if item.expires_at <= at + HANDOVER_MARGIN:
            return Answer(item, at, at, withheld="expired")
        quiet_end = quiet_end_near(at, item.tz, self.care)
        if quiet_end is not None:
            return Answer(item, at, at, withheld="quiet", quiet_end=quiet_end)
        sms = OutgoingSms(
            message_id=item.id,
            step=item.step,
            to=item.to,
            body=item.body,
            now=at,
            due_at=item.due_at,
        )
        try:
            result = self.transport.send(sms)
        except SendError as exc:
            if isinstance(exc, TransientSendError) and exc.throttled:
                self.pacer.throttled(exc.retry_after)
            return Answer(item, at, self.clock.now(), error=exc, seconds=time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - an unknown outcome must not stop the batch
            return Answer(item, at, self.clock.now(), unknown=type(exc).__name__)
        return Answer(item, at, self.clock.now(), result=result, seconds=time.monotonic() - started)


def dispatch_due(
    *,
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    clock: Clock,
    owner: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    limit: int | None = None,
    rng: random.Random | None = None,
    lease_clock: Clock | None = None,
) -> DispatchReport:
    """Send every text due at the clock's instant (at most `limit` claimed): one pass.
    Leases on `lease_clock` when given (`Dispatcher`)."""
    with Dispatcher(
        transport=transport,
        care=care,
        clock=clock,
        owner=owner,
        concurrency=concurrency,
        rng=rng,
        lease_clock=lease_clock,
    ) as dispatcher:
        return dispatcher.dispatch(session, limit=limit)
