"""A worker told to stop (`jobs.scheduler.shut_down`, from `followup worker`'s SIGTERM
handler and `followup serve`'s `finally`) ends within systemd's stop timeout (60 s,
TimeoutStopSec in deploy/followup-worker@.service), even while its reap job is asking a
slow Twilio about many texts.

`shut_down` now stops the dispatcher loop first, then calls `scheduler.shutdown(wait=True)`,
which waits for every job under way however long it runs. A reap pass over 128 texts
(a dead worker's, or texts parked during a Twilio outage) at a list latency of 9 s (under
the 10 s timeout), 16 look-ups at a time, takes 72 s: the stopping worker outlives the stop
timeout and systemd SIGKILLs it in the middle of the pass, so the texts the reaper holds
under its lease are asked about again only once that lease has run out (and "worker
stopped" is never printed, the unit is marked failed), which is what
tests/test_worker_stops_dispatching_at_sigterm.py's docstring names as the harm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.transports.base import SendResult
from followup.runtime import Runtime
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import midday_zone, seconds_to_stop_during_the_reap_job, seed

DEAD = 128  # texts a killed worker left handed over
LIST_DELAY = 9.0  # seconds Twilio takes to answer each list request (under the timeout)
STOP_TIMEOUT = 60.0  # systemd's TimeoutStopSec for the worker


class SlowList(ScriptedTransport):
    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.asked = threading.Event()

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        self.asked.set()
        time.sleep(LIST_DELAY)
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_shut_down_during_a_slow_reap_pass_ends_within_the_stop_timeout(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    now = clock.now()
    dead = seed(session, DEAD, due=now, expires=now + timedelta(hours=6), tz=midday_zone(now))
    session.execute(
        sa.update(Message)
        .where(Message.id.in_(dead))
        .values(
            status="sending",
            lease_owner="gone:1:0badf00d",
            lease_expires_at=now - timedelta(seconds=1),
            handed_at=now - timedelta(minutes=1),
            attempts=1,
            body="Riverside Spine Center: You had sedation today.",
            to_phone=sa.func.printf("+1202555%04d", Message.id - min(dead)),
        )
    )
    session.commit()
    transport = SlowList()
    took = seconds_to_stop_during_the_reap_job(runtime, transport)
    assert took < STOP_TIMEOUT, (
        f"shut_down took {took:.0f} s (systemd SIGKILLs the worker after {STOP_TIMEOUT:.0f} s, "
        f"mid-pass): it waits for the reap job's whole pass over {DEAD} texts at a slow "
        f"Twilio (scheduler.shutdown(wait=True))"
    )
