"""A last try after an unknown outcome (a Twilio 5xx), squeezed in before quiet hours,
whose retry time comes while this worker's reap job is in the middle of a pass.

The dispatcher loop wakes at a parked text's retry time and runs the reaper inline
(`DispatchLoop.reap_parked`), "skipped while this process's reap job is under way: that
pass settles it and wakes the loop". It does not: a reaper pass takes only the texts
stale when it began (`reap_stale`: "one ... that goes stale meanwhile waits for the next
pass"), so a pass that began before the retry time leaves the parked text alone, and the
loop skips it at every look until that pass is over. A reap pass lasts as long as
Twilio's list requests take (the outage that answered 500 to the creates is slow to
list, too): here it began at 20:59:50 for a crashed worker's text and took 8.5 s. The
last try was due at 20:59:56, 4 s before quiet hours (which outlast the window); asked
about only at 20:59:58.5, inside the hand-over margin, the text expired unsent.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.models import SENDING, SENT, Message
from followup.messaging.reports import ReapReport
from followup.messaging.transports.base import SendResult
from followup.runtime import Runtime
from jobs import tasks
from jobs.dispatcher import DispatchLoop
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import at, event_details, seed

CRASHED_WORKERS_NUMBER = "+12025550001"


class SlowToList(ScriptedTransport):
    """Twilio has neither text; listing the crashed worker's number is slow (it answers
    when the test lets it)."""

    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.asking = threading.Event()
        self.answer = threading.Event()

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        if to == CRASHED_WORKERS_NUMBER:
            self.asking.set()
            self.answer.wait(30)
        return super().find_sent(to=to, body=body, since=since, exclude=exclude)


def park(
    session: so.Session, text_id: int, *, owner: str, handed: datetime, lease: datetime
) -> None:
    """Leave the text `sending` under `owner`, handed over (number and words written)."""
    phone = f"+1202555{text_id - 1:04d}"  # `seed`'s numbers, in order
    session.execute(
        sa.update(Message)
        .where(Message.id == text_id)
        .values(
            status=SENDING,
            lease_owner=owner,
            handed_at=handed,
            lease_expires_at=lease,
            attempts=3,
            to_phone=phone,
            body="Please do not drive today.",
        )
    )
    session.commit()


def test_a_last_try_due_during_a_reap_jobs_pass_is_still_made_before_quiet_hours(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    # Due at 16:00 in New York, open until 05:00 tomorrow, inside quiet hours (21:00-08:00):
    # it can go until just before 21:00.
    [last_try, crashed] = seed(
        session,
        2,
        due=at("2026-03-11T16:00"),
        expires=at("2026-03-12T05:00"),
        tz="America/New_York",
    )
    # Twilio answered 500 to the create at 20:57:50: the text waits for the reaper, its
    # last try put at 20:59:56 (as `retry_time` puts it: 21:00 less two margins).
    park(
        session,
        last_try,
        owner="test-worker/reap",
        handed=at("2026-03-11T20:57:50"),
        lease=at("2026-03-11T20:59:56"),
    )
    # Another worker crashed with a text handed over: its lease ran out at 20:59:40.
    park(
        session,
        crashed,
        owner="crashed-worker",
        handed=at("2026-03-11T20:58:30"),
        lease=at("2026-03-11T20:59:40"),
    )
    transport = SlowToList()
    worker = Runtime(**{**runtime.__dict__, "transport": transport})
    loop = DispatchLoop(worker)
    loop.dispatcher.rng = random.Random(7)
    reports: list[ReapReport] = []
    # The reap job's round at 20:59:50 (REAP_EVERY): it takes the crashed worker's text
    # and asks Twilio about it, slowly.
    clock.set(at("2026-03-11T20:59:50"))
    job = threading.Thread(target=lambda: reports.append(tasks.reap(worker)), name="reap-job")
    job.start()
    try:
        assert transport.asking.wait(10)
        clock.set(at("2026-03-11T20:59:56"))  # the last try's time: the loop wakes for it
        loop.step()
        # Its prompt reaper asks Twilio about the parked text (not the crashed one, which
        # the job holds) and, finding nothing, requeues it and wakes the loop: it looks
        # again at once.
        assert loop.wait_for_reaps()
        loop.step()
        clock.set(at("2026-03-11T20:59:58") + timedelta(milliseconds=500))
        transport.answer.set()  # the job's pass ends
        job.join(30)
        loop.step()  # the loop's next look (POLL_EVERY later)
    finally:
        transport.answer.set()
        job.join(30)
        loop.dispatcher.close()

    session.expire_all()
    message = session.get(Message, last_try)
    assert message is not None
    assert reports and reports[0].stale == 1, reports  # the job's pass took the crashed one
    assert message.status == SENT, (
        f"{message.status}: the last try due at 20:59:56 was asked about only after the reap "
        f"job's pass (begun 20:59:50) ended; expired: {event_details(session, last_try, 'expired')}"
    )
