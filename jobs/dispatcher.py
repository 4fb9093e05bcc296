"""The dispatcher's loop: wake for the next due text, notice other processes' texts quickly.

One thread per process (started and stopped with the scheduler). After each pass it asks
the database when it next has work (`next_wake`: four index lookups in one statement)
and sleeps until then, but never longer than POLL_EVERY (half a second): a text enrolled
by another process (the web app, an import, a second worker) is noticed within that. The plan and
reap jobs of this process wake it at once when they make texts due.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import is_retryable
from followup.logsafe import log_failure
from followup.messaging.claims import asks_due, hand_back_unhanded, next_wake
from followup.messaging.dispatch import Dispatcher
from followup.messaging.reports import DispatchReport
from followup.ops.runs import record_failure, record_run
from followup.runtime import Runtime
from jobs import tasks
from jobs.tasks import clock_skew_problem

log = logging.getLogger(__name__)

# The longest a text enrolled elsewhere waits unnoticed: half a second, so that with the
# pass that sends it, it still goes out within the second.
POLL_EVERY = timedelta(seconds=0.5)
ERROR_PAUSE = timedelta(seconds=5)  # after a failed pass (database down), try again after
IDLE_FLOOR = 0.05  # seconds: the next look after a conflict the database rolled back
STOP_TIMEOUT = 60.0  # seconds a stopping loop waits for the calls in flight
REAPER_IDLE = 60.0  # seconds the prompt reaper's thread waits for work before it ends
REAPER_STOP_TIMEOUT = 5.0  # seconds a stopping loop waits at least for its prompt reaper
CLOCK_PAUSE = timedelta(seconds=5)  # how often a paused loop holds the clocks again


class DispatchLoop:
    """Run dispatcher passes on a thread of their own, each as soon as a text is due."""

    def __init__(self, runtime: Runtime, *, poll: timedelta = POLL_EVERY) -> None:
        self.runtime = runtime
        self.poll = poll
        self.dispatcher = self._new_dispatcher()
        self.total = DispatchReport()  # everything this loop did (for logs and tests)
        self.passes = 0
        self.paused_for_clock = False  # this host's clock is far from the database's
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reap_wanted = threading.Event()  # a prompt reaper pass is wanted
        self._reaping = threading.Event()  # one is under way
        self._reaper: threading.Thread | None = None
        self._reaper_lock = threading.Lock()

    def _new_dispatcher(self) -> Dispatcher:
        runtime = self.runtime
        return Dispatcher(
            transport=runtime.transport,
            care=runtime.care,
            clock=runtime.clock,
            owner=runtime.owner,
            concurrency=runtime.settings.dispatch_concurrency,
            # `--now` (worker, serve): leases on this host's clock, as a pinned tick's.
            lease_clock=runtime.host_clock if runtime.pinned else None,
        )

    def wake(self) -> None:
        """Look for due texts now (the plan and reap jobs call it)."""
        self._wake.set()

    def step(self) -> float:
        """Run a pass if a text is due now; return the seconds until the next look."""
        clock = self.runtime.clock
        claimed = True
        with self.runtime.session_factory() as session:
            wake_at = self._next_wake(session)
            if wake_at is not None and wake_at <= clock.now() and self._clock_skewed(session):
                return CLOCK_PAUSE.total_seconds()
            if wake_at is not None and wake_at <= clock.now():
                if not self.runtime.pinned and asks_due(session=session, now=clock.now()):
                    self.reap_parked()
                started = time.monotonic()
                try:
                    report = self.dispatcher.dispatch(session)
                except Exception:
                    record_failure(
                        metrics=self.runtime.metrics,
                        job="dispatch",
                        seconds=time.monotonic() - started,
                    )
                    raise
                self.total.add(report)
                self.passes += 1
                claimed = report.claimed > 0
                # One line if the pass did anything ("dispatch: 12 sent, 1 retried"), metrics.
                record_run(
                    metrics=self.runtime.metrics,
                    job="dispatch",
                    report=report,
                    seconds=time.monotonic() - started,
                    now=clock.now(),
                )
                wake_at = self._next_wake(session)
        wait = self.poll.total_seconds()
        if wake_at is not None:
            wait = min(wait, max((wake_at - clock.now()).total_seconds(), 0.0))
        # A pass that claimed none while texts are still ready: they are another
        # dispatcher's (its claim under way): looking again at once would only ask again,
        # 20 times a second. (Texts held for a patient another dispatcher has a text under
        # way for are not ready to `next_wake`: the loop sleeps until the next one due.)
        return wait if claimed or wait > 0 else POLL_EVERY.total_seconds()

    def _next_wake(self, session: so.Session) -> datetime | None:
        """`next_wake` for this loop's dispatcher: leases judged on its lease clock."""
        now = self.runtime.clock.now()
        return next_wake(
            session=session,
            now=now,
            owner=self.runtime.owner,
            lease_now=self.dispatcher.lease_at(now),
            parked=not self.runtime.pinned,
        )

    def reap_parked(self) -> None:
        """A text parked for the reaper (its answer left the outcome unknown) reached its
        retry time: the prompt reaper (a thread of this loop's) asks the provider now, and
        requeues it and wakes the loop if the provider does not have it, instead of at the
        reap job's next round (up to 20 s later: past a last try squeezed in before quiet
        hours). On a thread of its own: the provider's look-ups (slow when texts get
        parked) hold up no pass; and beside the reap job's pass, which takes only what was
        stale when it began. Not for a pinned clock (`--now`): the texts' retry times are
        on this host's clock, and its reaper may not run."""
        self._reap_wanted.set()
        with self._reaper_lock:
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(
                    target=self._reap_when_wanted, name="prompt-reaper", daemon=True
                )
                self._reaper.start()

    def _reap_when_wanted(self) -> None:
        """The prompt reaper's thread: a pass each time one is wanted; it ends when none
        has been for REAPER_IDLE (the next `reap_parked` starts another)."""
        while True:
            if not self._reap_wanted.wait(REAPER_IDLE):
                with self._reaper_lock:  # a pass wanted meanwhile is not lost
                    if self._reap_wanted.is_set():
                        continue
                    self._reaper = None
                    return
            if self._stopping.is_set():
                return
            self._reaping.set()
            self._reap_wanted.clear()
            try:
                self._prompt_reap()
            finally:
                self._reaping.clear()

    def _prompt_reap(self) -> None:
        started = time.monotonic()
        try:
            report = tasks.reap(self.runtime, parked_only=True)
        except Exception as exc:
            record_failure(
                metrics=self.runtime.metrics, job="reap", seconds=time.monotonic() - started
            )
            log_failure(log, "prompt reaper pass failed; the reap job settles it", exc=exc)
            return
        record_run(
            metrics=self.runtime.metrics,
            job="reap",
            report=report,
            seconds=time.monotonic() - started,
            now=self.runtime.clock.now(),
        )
        if report.requeued or report.expired:
            self.wake()

    def wait_for_reaps(self, timeout: float = 30.0) -> bool:
        """Block until the prompt reaper has no pass under way or wanted (tests on a fake
        clock, which must let its thread finish before moving time on)."""
        deadline = time.monotonic() + timeout
        while self._reap_wanted.is_set() or self._reaping.is_set():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _clock_skewed(self, session: so.Session) -> bool:
        """Whether passes must wait: this host's clock is far from the database server's
        (PostgreSQL). Its instants decide quiet hours, expiry and leases: a clock stepped an
        hour ahead would send the blood-thinner restart an hour early, one far behind would
        write leases a reaper elsewhere takes while the requests are under way. Logged when
        the pause starts and when it ends; the skew is on /metrics meanwhile."""
        problem = clock_skew_problem(self.runtime, session)
        if problem is not None and not self.paused_for_clock:
            log.error("dispatch paused: %s", problem)
        elif problem is None and self.paused_for_clock:
            log.warning("dispatch resumed: this host's clock agrees with the database's again")
        self.paused_for_clock = problem is not None
        return self.paused_for_clock

    def run_once(self) -> float:
        """One step. After a pass the database failed (a deadlock's victim, a lost
        connection), its claimed texts go back to the queue at once, and the next look
        comes at once after a conflict the database rolled back, ERROR_PAUSE after anything
        else. A failure of the code itself (a text it cannot render, say) would only fail
        again: those texts wait for their lease and the reaper, as the pass's log says."""
        try:
            return self.step()
        except Exception as exc:
            log_failure(log, "dispatch pass failed; trying again shortly", exc=exc)
            if isinstance(exc, sa.exc.DBAPIError):
                self.hand_back_claims()
            return IDLE_FLOOR if is_retryable(exc) else ERROR_PAUSE.total_seconds()

    def hand_back_claims(self) -> None:
        """Texts this process claimed and never handed over, back in the queue (else they
        wait for their lease to run out and the reaper: more than a minute)."""
        try:
            with self.runtime.session_factory() as session:
                back = hand_back_unhanded(
                    session=session, now=self.runtime.clock.now(), owner=self.runtime.owner
                )
                session.commit()
        except Exception as exc:
            log_failure(log, "claimed texts not handed back; the reaper settles them", exc=exc)
            return
        if back:
            log.warning("%d claimed texts back in the queue after a failed pass", len(back))

    def run(self) -> None:
        """Loop until stop(): a pass whenever a text is due, a look at least every POLL_EVERY."""
        while not self._stopping.is_set():
            wait = self.run_once()
            if self._wake.wait(wait):
                self._wake.clear()

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.dispatcher.stopping:  # stopped before: its passes would do nothing
            self.dispatcher = self._new_dispatcher()
        self._stopping.clear()
        self._reap_wanted.clear()
        self.runtime.stopping.clear()  # started again after a stop (`shut_down`)
        thread = threading.Thread(target=self.run, name="dispatcher", daemon=True)
        self._thread = thread
        thread.start()  # a stop (a signal's) may land in here: the thread then ends at once

    def stop(self) -> None:
        """Finish the pass under way (handing claimed texts back), then stop."""
        self._stopping.set()
        self.dispatcher.request_stop()
        self._wake.set()
        self._reap_wanted.set()  # the prompt reaper's thread ends (after its pass under way)
        deadline = time.monotonic() + STOP_TIMEOUT
        thread, self._thread = self._thread, None
        # Not started yet: the signal that stops us landed inside start(); the thread, once
        # started, sees _stopping and ends at once (joining it raised, and the worker hung).
        if thread is not None and thread.ident is not None:
            thread.join(STOP_TIMEOUT)
        reaper = self._reaper
        if reaper is not None and reaper.ident is not None:
            # Still asking: it ends after its part (told by Runtime.stopping), as the reap
            # job's pass does, which the scheduler waits for. Waited for as long, within the
            # same stop timeout: a daemon thread cut short at exit wrote none of the answers
            # it had, and its texts stayed held under its lease for a minute.
            reaper.join(max(deadline - time.monotonic(), REAPER_STOP_TIMEOUT))
        self.dispatcher.close()
