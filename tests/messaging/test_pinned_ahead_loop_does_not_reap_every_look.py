"""`followup --now <an hour ahead> worker` with a text parked for the reaper (an earlier
answer left its outcome unknown: a 5xx, a timeout; its retry time is its lease, on this
host's clock, 5 minutes away).

The dispatcher loop wakes for a parked text at its retry time (`claims.asks_due`,
`next_wake`) and runs the reaper inline (`DispatchLoop.reap_parked`). Both compare the
retry time, written on this host's clock (`Dispatcher.lease_at`), with the *pinned*
instant: an hour ahead, the text looks due at once. And the reaper it runs skips every
pass while the clock is pinned ahead (`tasks._pinned_ahead`), so nothing ever settles it:
every look of the loop (POLL_EVERY, twice a second) is a dispatcher pass plus a reaper
pass that only logs that it was skipped, two WARNING lines, for as long as the pin stays
ahead (an hour here: some 14,000 lines, 7,200 passes). A text whose retry is 5 minutes
away on the host's clock (and that no reaper of this process may settle) is no work.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock, SystemClock
from followup.messaging.models import SENDING, Message
from followup.runtime import Runtime
from jobs.dispatcher import DispatchLoop
from tests.messaging.helpers import midday_zone, seed


def test_a_worker_pinned_ahead_does_not_run_the_reaper_at_every_look_for_a_parked_text(
    runtime: Runtime, session: so.Session, caplog: pytest.LogCaptureFixture
) -> None:
    host = SystemClock()  # this host's clock (held against PostgreSQL's: it must be real)
    pinned = FakeClock(host.now() + timedelta(hours=1))  # `followup --now <in an hour>`
    [text_id] = seed(
        session,
        1,
        due=host.now() - timedelta(minutes=10),
        expires=host.now() + timedelta(days=1),
        tz=midday_zone(host.now()),
    )
    # Parked for the reaper by this worker's earlier pass: a 500 a minute ago, retry in 5
    # minutes (this host's clock, as `transient.record_transient` writes it through `lease_at`).
    session.execute(
        sa.update(Message)
        .where(Message.id == text_id)
        .values(
            status=SENDING,
            lease_owner="pinned-worker/reap",
            handed_at=host.now() - timedelta(minutes=1),
            lease_expires_at=host.now() + timedelta(minutes=5),
            attempts=1,
        )
    )
    session.commit()
    worker = replace(runtime, clock=pinned, host_clock=host, owner="pinned-worker", pinned=True)
    loop = DispatchLoop(worker)
    caplog.set_level(logging.INFO)
    try:
        waits = [loop.step() for _ in range(4)]  # two seconds of the worker's life
    finally:
        loop.dispatcher.close()

    reaper_lines = [r.getMessage() for r in caplog.records if "reap" in r.getMessage()]
    assert loop.passes == 0 and reaper_lines == [], (
        f"{loop.passes} dispatcher passes and {len(reaper_lines)} reaper log lines in 4 looks "
        f"(waits {waits}) for a text whose retry is 5 minutes away on this host's clock: "
        f"{reaper_lines[:2]}"
    )
