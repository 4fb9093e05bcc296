"""The scheduler stopped and its jobs started again in one process (as
tests/messaging/test_promises_status_and_retries.py::test_a_loop_started_again_after_a_stop_sends
requires of the dispatcher loop, which `start()` makes new for that) still runs its
status polls and its reaper in full.

`jobs.scheduler.shut_down` now sets `Runtime.stopping`, a threading.Event on the Runtime
shared by every job and by the loop, and nothing ever clears it: `DispatchLoop.start()`
clears its own `_stopping` and builds a new dispatcher, but the Runtime's flag stays set.
Every later `poll-statuses` job breaks out before its first look-up
(`poll_stale_statuses`: `if stopping(): break`), so a text whose delivery report was lost
is never asked about again: an undelivered aftercare text (Twilio 30003, 30005) stays
`sent` and is never retried nor shown to staff. Every later reap pass also skips the closed
copies and ends each batch after its first part.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy.orm as so
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import SENT, UNDELIVERED
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from jobs.scheduler import build_jobs, shut_down
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import dispatch, messages


def test_a_scheduler_started_again_after_a_stop_still_polls_a_lost_delivery_report(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_transport: TwilioTransport,
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    care: CareContext,
    clock: FakeClock,
) -> None:
    enroll(blood_thinner="warfarin")
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT and text.provider_sid
    # Its report was lost: Twilio says undelivered (the phone is off the network).
    twilio_fake.set_status(text.provider_sid, "undelivered", error_code=30003)

    first, first_loop = build_jobs(twilio_runtime, blocking=False)
    first.start(paused=True)
    shut_down(first, first_loop)  # stopped ...
    # ... and started again in the same process, on its Runtime (APScheduler drops its
    # jobs at shutdown: they are built again).
    scheduler, loop = build_jobs(twilio_runtime, blocking=False)
    scheduler.start(paused=True)
    polled = threading.Event()

    def ran(event: JobExecutionEvent) -> None:
        if event.job_id == "poll-statuses":
            polled.set()

    scheduler.add_listener(ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    try:
        clock.advance(timedelta(minutes=31))  # past status_poll_after_minutes (30)
        scheduler.modify_job("poll-statuses", next_run_time=datetime.now(UTC))
        scheduler.resume()
        assert polled.wait(30), "the poll-statuses job never ran"
    finally:
        shut_down(scheduler, loop)
    asked = [r for r in twilio_fake.requests if r.path.endswith(f"{text.provider_sid}.json")]
    text = messages(session)["no-driving"]
    assert text.status == UNDELIVERED, (
        f"the status poll after the scheduler started again asked Twilio {len(asked)} times "
        f"and left the text {text.status!r}: Runtime.stopping, set by the first shut_down, "
        "was never cleared, and every poll ends before its first look-up"
    )
