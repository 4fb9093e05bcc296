"""APScheduler wiring: a few code-defined interval jobs and the dispatcher's loop.

The database is the queue. `plan`, `reap`, `poll-statuses`, `alerts` and `purge` are
interval jobs; sending
is not polled: a DispatchLoop thread (jobs.dispatcher), started and stopped with the
scheduler, wakes for the next due text. Jobs that make texts due wake it at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, EVENT_SCHEDULER_STARTED, SchedulerEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from followup.logsafe import log_failure
from followup.ops.runs import record_failure, record_run
from followup.runtime import Runtime
from jobs import tasks
from jobs.dispatcher import DispatchLoop

log = logging.getLogger(__name__)

PLAN_EVERY = timedelta(seconds=60)
# A dead dispatcher's texts are settled at most LEASE (60 s) + REAP_EVERY after its last
# heartbeat, then sent at once: within the 2 minutes promised.
REAP_EVERY = timedelta(seconds=20)
POLL_STATUSES_EVERY = timedelta(minutes=5)
PURGE_EVERY = timedelta(days=1)
# A daily job also runs this soon after start: processes restarted every day still purge.
FIRST_RUN_AFTER = {"purge": timedelta(minutes=10)}
ALERTS_EVERY = timedelta(seconds=15)  # an urgent reply reaches on-call staff within this
MISFIRE_GRACE_SECONDS = 120  # a job late by less than this still runs (well above 1 s)

JOBS: tuple[tuple[str, Callable[[Runtime], Any], timedelta], ...] = (
    ("plan", tasks.plan, PLAN_EVERY),
    ("reap", tasks.reap, REAP_EVERY),
    ("poll-statuses", tasks.poll_statuses, POLL_STATUSES_EVERY),
    ("purge", tasks.purge, PURGE_EVERY),
    ("alerts", tasks.alerts, ALERTS_EVERY),
)


def _makes_texts_due(report: Any) -> bool:
    """Did the job put texts in the queue (planned or requeued)?"""
    return bool(getattr(report, "planned", 0) or getattr(report, "requeued", 0))


def _guarded(
    name: str,
    job: Callable[[Runtime], Any],
    runtime: Runtime,
    loop: DispatchLoop | None = None,
) -> None:
    started = time.monotonic()
    try:
        report = job(runtime)
    except Exception as exc:
        record_failure(metrics=runtime.metrics, job=name, seconds=time.monotonic() - started)
        # The exception's text may quote a number or a body: log its type and frames only.
        log_failure(log, "job %s failed; it runs again at its next interval", name, exc=exc)
        return
    # One line if the run did anything ("reap: 2 stale, 2 requeued"), and its metrics.
    record_run(
        metrics=runtime.metrics,
        job=name,
        report=report,
        seconds=time.monotonic() - started,
        now=runtime.clock.now(),
    )
    if loop is not None and _makes_texts_due(report):
        loop.wake()


def add_jobs(
    scheduler: BaseScheduler, runtime: Runtime, loop: DispatchLoop | None = None
) -> BaseScheduler:
    """Add the plan, reap, status-poll, alerts and purge interval jobs to `scheduler` (plan and
    reap wake `loop` when they make texts due)."""
    for name, job, every in JOBS:
        first = FIRST_RUN_AFTER.get(name)
        scheduler.add_job(
            _guarded,
            "interval",
            args=(name, job, runtime, loop),
            seconds=every.total_seconds(),
            id=name,
            name=name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            replace_existing=True,
            **({"next_run_time": datetime.now(UTC) + first} if first else {}),
        )
    return scheduler


def attach_dispatcher(scheduler: BaseScheduler, runtime: Runtime) -> DispatchLoop:
    """A DispatchLoop that starts when `scheduler` starts and stops when it shuts down."""
    loop = DispatchLoop(runtime)

    def follow(event: SchedulerEvent) -> None:
        if event.code == EVENT_SCHEDULER_STARTED:
            loop.start()
        elif event.code == EVENT_SCHEDULER_SHUTDOWN:
            loop.stop()

    scheduler.add_listener(follow, EVENT_SCHEDULER_STARTED | EVENT_SCHEDULER_SHUTDOWN)
    return loop


def build_jobs(runtime: Runtime, *, blocking: bool) -> tuple[BaseScheduler, DispatchLoop]:
    """A BlockingScheduler for `followup worker`, a BackgroundScheduler for `serve`; each
    with the interval jobs and the dispatcher's loop (returned too, for `shut_down`)."""
    scheduler: BaseScheduler = (
        BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
    )
    loop = attach_dispatcher(scheduler, runtime)
    return add_jobs(scheduler, runtime, loop), loop


def build_scheduler(runtime: Runtime, *, blocking: bool) -> BaseScheduler:
    """`build_jobs`' scheduler alone."""
    return build_jobs(runtime, blocking=blocking)[0]


def shut_down(scheduler: BaseScheduler, loop: DispatchLoop | None) -> None:
    """Stop sending first, then wait for the jobs under way. The dispatcher loop hands its
    claimed texts back and ends once its calls under way have answered; APScheduler stops
    it only after the jobs under way (a reap pass at a slow provider: minutes), and a
    worker told to stop kept claiming and sending texts until then, and past systemd's
    stop timeout. The reap and status-poll passes end after the part under way (what is
    left goes to the next reaper at once, or the next poll)."""
    if loop is not None:
        loop.runtime.stopping.set()  # the reap and status-poll passes end after their part
        loop.stop()
    if scheduler.running:
        scheduler.shutdown(wait=True)


def install_shutdown(stop: Callable[[], None]) -> None:
    """Call `stop` once on SIGINT or SIGTERM (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    done = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not done.is_set():
            done.set()
            log.info("signal %s: shutting down", signal.Signals(signum).name)
            stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
