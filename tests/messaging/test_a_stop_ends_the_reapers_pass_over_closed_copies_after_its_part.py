"""A worker told to stop while its reap job asks Twilio about closed copies (a clinic day
cancelled, a STOP storm, while requests of theirs may be at Twilio) ends that pass after
the part under way, as it does a pass over texts left `sending`.

`reap_stale(..., stopping=...)` checks `stopping()` between the parts of its batches of
stale texts, and skips `reap_closed` if the process is stopping before it begins. But
`reap_closed` (followup/messaging/closed_copies.py) is never told: once under way it asks
about every closed copy left, part after part, however long a slow Twilio takes. A worker
told to stop there (a common case: no text is stale, the reap job goes straight to the
closed copies) waits for the whole pass in `scheduler.shutdown(wait=True)`, outlives
systemd's TimeoutStopSec=60 and is SIGKILLed mid-pass: the copies it holds under its lease
wait for that lease to run out, and the unit is marked failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from datetime import datetime

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging import closed_copies
from followup.messaging.claims import LEASE
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import CANCELLED, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.base import SendResult
from followup.runtime import Runtime
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, seconds_to_stop_during_the_reap_job

STOP_TIMEOUT = 60.0  # systemd's TimeoutStopSec for the worker


def closed_while_unknown(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll, count: int
) -> list[int]:
    """`count` patients' no-driving texts handed over by a dispatcher that died before any
    answer, then cancelled: each a closed copy marked for the reaper to ask Twilio about
    once its lease has run out (as `take_back` marks one)."""
    clock.set(at("2026-03-06T15:00"))
    for i in range(count):
        enroll(completed_at="2026-03-06T14:30", phone=f"(202) 555-{1000 + i:04d}")
    crashing = ScriptedTransport(outcomes=[RuntimeError("killed")] * count)
    report = dispatch_due(
        session=session, transport=crashing, care=care, clock=FakeClock(clock.now()), owner="dead"
    )
    assert report.unknown == count
    no_driving = Message.step == "no-driving"
    session.execute(
        sa.update(Message)
        .where(no_driving)
        .values(status=CANCELLED, lease_owner="dead", lease_expires_at=clock.now() + LEASE)
    )
    session.commit()
    return list(session.scalars(sa.select(Message.id).where(no_driving).order_by(Message.id)))


class Asked(ScriptedTransport):
    """Twilio has none of them; counts the list requests, sleeping `delay` on each."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(provider_has=[])
        self.delay = delay
        self.count = 0
        self.asked = threading.Event()
        self._count_lock = threading.Lock()

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        with self._count_lock:
            self.count += 1
        self.asked.set()
        if self.delay:
            time.sleep(self.delay)
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def test_a_stop_during_the_closed_copies_part_of_a_reap_pass_ends_it_after_the_part(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six closed copies, asked about two at a time: the stop comes while the first two are
    # being asked. The pass must end after that part (the other four asked by the next
    # reaper), as it does for texts left `sending`.
    monkeypatch.setattr(closed_copies, "REAP_PART", 2)
    copies = closed_while_unknown(session, care, clock, enroll, 6)
    start = clock.now() + LEASE
    clock.set(start)
    transport = Asked()
    stopping = transport.asked.is_set  # told to stop once the first question is asked
    reap_stale(session=session, transport=transport, now=start, care=care, stopping=stopping)
    assert transport.count <= 2, (
        f"told to stop while its first part (2) was asked, the reap pass still asked Twilio "
        f"about {transport.count} of {len(copies)} closed copies: reap_closed never checks "
        "stopping()"
    )


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_shut_down_during_a_slow_pass_over_closed_copies_ends_within_the_stop_timeout(
    runtime: Runtime,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    # 128 closed copies (a STOP storm while Twilio was slow to answer), asked 16 at a time
    # at a list latency of 9 s (under the 10 s timeout): 72 s, as the stale texts of
    # tests/test_shutdown_ends_within_the_stop_timeout_during_a_slow_reap_pass.py.
    closed_while_unknown(session, care, clock, enroll, 128)
    clock.set(clock.now() + LEASE)
    transport = Asked(delay=9.0)
    took = seconds_to_stop_during_the_reap_job(runtime, transport)
    assert took < STOP_TIMEOUT, (
        f"shut_down took {took:.0f} s (systemd SIGKILLs the worker after {STOP_TIMEOUT:.0f} s, "
        f"mid-pass): the reap job's pass over closed copies went on to ask Twilio about "
        f"{transport.count} of 128 in all (reap_closed never checks stopping())"
    )
