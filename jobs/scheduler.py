"""APScheduler wiring: a few code-defined interval jobs; the database is the queue."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from followup.logsafe import log_failure
from followup.ops.runs import record_failure, record_run
from followup.runtime import Runtime
from jobs import tasks

log = logging.getLogger(__name__)

PLAN_EVERY = timedelta(seconds=60)
DISPATCH_EVERY = timedelta(seconds=15)
REAP_EVERY = timedelta(seconds=60)
POLL_STATUSES_EVERY = timedelta(minutes=5)
PURGE_EVERY = timedelta(days=1)
# A daily job also runs this soon after start: processes restarted every day still purge.
FIRST_RUN_AFTER = {"purge": timedelta(minutes=10)}
ALERTS_EVERY = timedelta(seconds=15)  # an urgent reply reaches on-call staff within this
MISFIRE_GRACE_SECONDS = 120  # a job late by less than this still runs (well above 1 s)

JOBS: tuple[tuple[str, Callable[[Runtime], Any], timedelta], ...] = (
    ("plan", tasks.plan, PLAN_EVERY),
    ("dispatch", tasks.dispatch, DISPATCH_EVERY),
    ("reap", tasks.reap, REAP_EVERY),
    ("poll-statuses", tasks.poll_statuses, POLL_STATUSES_EVERY),
    ("purge", tasks.purge, PURGE_EVERY),
    ("alerts", tasks.alerts, ALERTS_EVERY),
)


def _guarded(name: str, job: Callable[[Runtime], Any], runtime: Runtime) -> None:
    started = time.monotonic()
    try:
        report = job(runtime)
    except Exception as exc:
        record_failure(metrics=runtime.metrics, job=name, seconds=time.monotonic() - started)
        # The exception's text may quote a number or a body: log its type and frames only.
        log_failure(log, "job %s failed; it runs again at its next interval", name, exc=exc)
        return
    # One line if the run did anything ("dispatch: 12 sent, 1 retried"), and its metrics.
    record_run(
        metrics=runtime.metrics,
        job=name,
        report=report,
        seconds=time.monotonic() - started,
        now=runtime.clock.now(),
    )


def add_jobs(scheduler: BaseScheduler, runtime: Runtime) -> BaseScheduler:
    """Add the plan, dispatch, reap, status-poll, alerts and purge interval jobs to `scheduler`."""
    for name, job, every in JOBS:
        first = FIRST_RUN_AFTER.get(name)
        scheduler.add_job(
            _guarded,
            "interval",
            args=(name, job, runtime),
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


def build_scheduler(runtime: Runtime, *, blocking: bool) -> BaseScheduler:
    """A BlockingScheduler for `followup worker`, a BackgroundScheduler for `serve`."""
    scheduler: BaseScheduler = (
        BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
    )
    return add_jobs(scheduler, runtime)


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
