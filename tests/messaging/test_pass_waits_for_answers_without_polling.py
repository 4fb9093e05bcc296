"""A pass whose every slot is taken by a slow call, with more texts claimed and waiting for
a slot, blocks until an answer comes: it does not poll every millisecond.

`DispatchPass.wait` (turns.py) bounds its wait, whenever texts are ready, by the pacer's
wait time with a floor of 1 ms; with no rate cap (the default) that is 0, so while the
slots are full of calls to a slow Twilio the database thread wakes a thousand times a
second, each time collecting nothing and handing nothing over (no slot is free), and
competes with the worker threads for Python's lock for as long as the backlog lasts.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.dispatch import dispatch_due
from followup.messaging.transports.base import OutgoingSms, SendResult
from followup.messaging.turns import RECLAIM_EVERY, DispatchPass
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import midday_zone, seed

CALL_SECONDS = 0.3  # Twilio answering slowly


class SlowTwilio(ScriptedTransport):
    def send(self, sms: OutgoingSms) -> SendResult:
        time.sleep(CALL_SECONDS)
        return super().send(sms)


def test_a_pass_with_every_slot_busy_blocks_for_an_answer(
    session: so.Session, care: CareContext, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four patients' texts due, two slots: two calls under way, two texts ready behind them.
    now = clock.now()
    seed(session, 4, due=now, expires=now + timedelta(hours=6), tz=midday_zone(now))
    waits: list[float] = []
    wait = DispatchPass.wait

    def counted(self: DispatchPass) -> None:
        waits.append(time.monotonic())
        wait(self)

    monkeypatch.setattr(DispatchPass, "wait", counted)
    started = time.monotonic()
    report = dispatch_due(
        session=session, transport=SlowTwilio(), care=care, clock=clock, owner="w", concurrency=2
    )
    seconds = time.monotonic() - started
    assert report.sent == 4
    # Two rounds of calls: a handful of waits, or at most one per RECLAIM_EVERY (the pass's
    # look for newly due texts while calls are under way), not one per millisecond.
    most = seconds / RECLAIM_EVERY + 4
    assert len(waits) <= most, (
        f"{len(waits)} wake-ups of the database thread in a {seconds:.2f} s pass "
        f"({len(waits) / seconds:.0f} a second) with no slot free"
    )
