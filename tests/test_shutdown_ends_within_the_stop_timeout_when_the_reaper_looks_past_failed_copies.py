"""A worker told to stop (`jobs.scheduler.shut_down`) ends within systemd's stop timeout
(60 s, TimeoutStopSec in deploy/followup-worker@.service) even when the texts its reap job
is asking Twilio about each need a second question: the first copy Twilio lists is one
that failed and was retried (30001, Twilio's queue overflowed: kept in `failed_copies`),
which the reaper must look past (README, "What happens to a text").

`reap_stale` ends a pass "after the part under way" once Runtime.stopping is set, and a
part's first questions are asked 16 at a time (`first_looks`). But a text whose first
answer is a failed copy (or a copy recorded for another text with the same words to the
same number) is asked again in `_reconcile`, one text after another, on the pass's own
thread, and `stopping()` is only looked at once the whole part is settled. On a bad day
(Twilio overflowing its queue, hence 30001s and retries, and slow to answer, hence texts
whose outcome is unknown) a part of 64 such texts is 4 rounds side by side and then 64
questions one after another: at 9 s a list request (under the 10 s timeout) the stop waits
more than ten minutes. Here 7 such texts at 9 s hold the stop over 70 s: systemd SIGKILLs
the worker mid-pass, the texts it holds wait a whole lease for the next reaper, and the
unit is marked failed (the harm tests/test_worker_stops_dispatching_at_sigterm.py names).
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
from followup.messaging.models import SENDING, FailedCopy, Message
from followup.messaging.transports.base import SendResult
from followup.runtime import Runtime
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import midday_zone, seconds_to_stop_during_the_reap_job, seed

RETRIED = 7  # a dead worker's texts, each retried after a 30001 on its first copy
LIST_DELAY = 9.0  # seconds Twilio takes to answer each list request (under the timeout)
STOP_TIMEOUT = 60.0  # systemd's TimeoutStopSec for the worker
BODY = "Riverside Spine Center: You had sedation today."


def failed_sid(phone: str) -> str:
    return "SM" + phone.lstrip("+").rjust(32, "0")


class SlowListWithFailedCopies(ScriptedTransport):
    """Twilio lists each number's failed first copy until the reaper looks past it; the
    retried request never reached it. Each list request takes LIST_DELAY."""

    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.asked = threading.Event()
        self.questions = 0
        self._count = threading.Lock()

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        with self._count:
            self.questions += 1
        self.asked.set()
        time.sleep(LIST_DELAY)
        sid = failed_sid(to)
        if sid in exclude:
            return None
        return SendResult(provider_sid=sid, provider_status="failed", segments=1)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_shut_down_while_the_reaper_looks_past_failed_copies_ends_within_the_stop_timeout(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    now = clock.now()
    dead = seed(session, RETRIED, due=now, expires=now + timedelta(hours=6), tz=midday_zone(now))
    for i, message_id in enumerate(dead):
        phone = f"+1202555{i:04d}"
        session.execute(
            sa.update(Message)
            .where(Message.id == message_id)
            .values(
                status=SENDING,
                lease_owner="gone:1:0badf00d",
                lease_expires_at=now - timedelta(seconds=1),
                handed_at=now - timedelta(minutes=1),
                attempts=2,
                body=BODY,
                to_phone=phone,
            )
        )
        # Its first copy failed with 30001 half a minute before the retry was handed over.
        session.add(
            FailedCopy(
                provider_sid=failed_sid(phone),
                message_id=message_id,
                failed_at=now - timedelta(seconds=80),
            )
        )
    session.commit()
    transport = SlowListWithFailedCopies()
    took = seconds_to_stop_during_the_reap_job(runtime, transport)
    assert took < STOP_TIMEOUT, (
        f"shut_down took {took:.0f} s (systemd SIGKILLs the worker after {STOP_TIMEOUT:.0f} s, "
        f"mid-pass): told to stop during its part's first questions, the reap pass still "
        f"asked Twilio {transport.questions - RETRIED} more times one text after another "
        f"(each text's failed copy looked past in `_reconcile`) before it looked at "
        f"`stopping()`"
    )
