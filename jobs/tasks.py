"""The scheduler's jobs: each a thin call into followup's services at the clock's instant.

Each returns its report; the scheduler logs one line per run that did something and
counts it (followup.ops.runs).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import is_postgresql
from followup.errors import ConfigurationError
from followup.inbox.alerts import AlertReport, AlertSettings, run_alerts
from followup.inbox.mail import build_mailer
from followup.messaging.claims import reaper_owner
from followup.messaging.dispatch import dispatch_due
from followup.messaging.lost_intros import replan_lost_intros
from followup.messaging.models import SENDING, Message
from followup.messaging.outbox import plan_procedures
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import (
    DispatchReport,
    PlanReport,
    PollReport,
    ReapReport,
    TickReport,
)
from followup.messaging.status import StatusLookup, poll_stale_statuses
from followup.messaging.tick import run_tick
from followup.ops.database_check import MAX_CLOCK_SKEW, clock_skew, skew_problem
from followup.retention.service import PurgeReport, purge_expired
from followup.runtime import Runtime

log = logging.getLogger(__name__)

MAX_BATCHES_PER_RUN = 50  # then yield: the next run picks up the rest


def plan(runtime: Runtime) -> PlanReport:
    """Plan the texts of newly completed procedures; give a lost intro to another text."""
    total = PlanReport()
    with runtime.session_factory() as session:
        for _ in range(MAX_BATCHES_PER_RUN):
            report = plan_procedures(session=session, care=runtime.care, now=runtime.clock.now())
            session.commit()
            total.add(report)
            if report.procedures == 0:
                break
        total.reintroduced += replan_lost_intros(
            session=session, care=runtime.care, now=runtime.clock.now()
        )
        session.commit()
    return total


def dispatch(runtime: Runtime) -> DispatchReport:
    """Send every due text now: one dispatcher pass (the loop in jobs.dispatcher runs these)."""
    with runtime.session_factory() as session:
        report = dispatch_due(
            session=session,
            transport=runtime.transport,
            care=runtime.care,
            clock=runtime.clock,
            owner=runtime.owner,
            concurrency=runtime.settings.dispatch_concurrency,
        )
    return report


def reap(runtime: Runtime, *, parked_only: bool = False) -> ReapReport:
    """Settle texts whose lease ran out in `sending` (unless this host's clock is off, or
    the clock is pinned ahead of it: see `tick`). `parked_only`: the dispatcher loop's
    prompt pass for texts parked for the reaper whose retry time has come (`reap_stale`),
    under a reaper name of its own, beside the reap job's (as two processes' reapers)."""
    with runtime.session_factory() as session:
        problem = clock_skew_problem(runtime, session)
        if problem is not None:
            log.error("reaper pass skipped: %s", problem)
            return ReapReport(clock_skewed=1)
        if runtime.pinned and _pinned_ahead(runtime, session):
            return ReapReport(clock_skewed=1)
        report = reap_stale(
            session=session,
            transport=runtime.transport,
            now=runtime.clock.now(),
            # The prompt pass's name: one character more (within the column's 64).
            owner=reaper_owner(f"{runtime.owner}~" if parked_only else runtime.owner),
            care=runtime.care,
            clock=runtime.clock,
            parked_only=parked_only,
            stopping=runtime.stopping.is_set,
        )
    return report


def tick(runtime: Runtime, session: so.Session, *, pinned: bool = False) -> TickReport:
    """`followup tick`: plan, reap and dispatch once at the clock's instant.

    Not at all while this host's clock is far from the database server's (ConfigurationError,
    nothing done), as the worker's loop pauses: its instants would decide quiet hours,
    expiry and leases. A clock `pinned` (`--now`) keeps its dispatcher's leases on this
    host's clock, as every other process keeps them: written from a pinned clock an hour
    behind, they looked run out to a live worker's reaper at once, which found the text
    not yet at the provider and sent it again. Pinned ahead of this host's, it skips the
    reaper part: at a future instant a live dispatcher's lease looks run out while it is
    still sending, and a reaper would find the text not yet at the provider and send it
    again. (Its reaper pinned behind judges leases later than they ran out, and every
    write it makes is guarded on its own lease: safe.)
    """
    problem = clock_skew_problem(runtime, session)
    if problem is not None:
        raise ConfigurationError(f"{problem}; nothing done: synchronise the clocks (NTP)")
    return run_tick(
        session=session,
        transport=runtime.transport,
        care=runtime.care,
        clock=runtime.clock,
        owner=runtime.owner,
        concurrency=runtime.settings.dispatch_concurrency,
        reap=not (pinned and _pinned_ahead(runtime, session)),
        lease_clock=runtime.host_clock if pinned else None,
    )


def _pinned_ahead(runtime: Runtime, session: so.Session) -> bool:
    """A clock pinned ahead of this host's: leases would be judged before their time (one
    pinned behind judges them later than they ran out: safe)."""
    ahead = (runtime.clock.now() - runtime.host_clock.now()).total_seconds()
    if ahead <= MAX_CLOCK_SKEW:
        return False
    if session.scalar(sa.select(Message.id).where(Message.status == SENDING).limit(1)):
        log.warning(
            "reaper pass skipped: the clock is pinned %.0f s ahead of this host's (--now); "
            "texts in sending are judged at the real time only",
            ahead,
        )
    session.rollback()
    return True


def clock_skew_problem(runtime: Runtime, session: so.Session) -> str | None:
    """What is wrong with this host's clock, or None: on PostgreSQL it is held against the
    server's (the skew goes on /metrics), and more than MAX_CLOCK_SKEW apart is a problem.

    The reaper judges leases other processes wrote with their clocks, and the dispatcher
    decides quiet hours, expiry and its own leases with this one: NTP stopped since
    start-up (where `followup check` compared them), or a clock stepped after a virtual
    machine was paused, would have a reaper take texts whose requests are under way, or a
    dispatcher send the blood-thinner restart an hour early. On SQLite the database is a
    file on this host: one clock.
    """
    if not is_postgresql(session):
        return None
    skew = clock_skew(session.connection(), wall=runtime.host_clock.now)
    session.rollback()
    runtime.metrics.clock_skew.set(skew)
    return skew_problem(skew) if abs(skew) > MAX_CLOCK_SKEW else None


def poll_statuses(runtime: Runtime) -> PollReport:
    """Ask the provider about texts whose delivery report has not come (lost callbacks)."""
    transport = runtime.transport
    if not isinstance(transport, StatusLookup):
        return PollReport()  # the console transport has nothing to ask
    with runtime.session_factory() as session:
        report = poll_stale_statuses(
            session=session,
            lookup=transport,
            now=runtime.clock.now(),
            older_than=timedelta(minutes=runtime.settings.status_poll_after_minutes),
            care=runtime.care,
            stopping=runtime.stopping.is_set,
        )
    return report


def purge(runtime: Runtime) -> PurgeReport:
    """Remove names, phones and text bodies of patients past RETENTION_DAYS."""
    with runtime.session_factory() as session:
        return purge_expired(
            session=session,
            now=runtime.clock.now(),
            retention_days=runtime.settings.retention_days,
            actor="scheduler",
        )


def alerts(runtime: Runtime) -> AlertReport:
    """Alert staff about urgent replies at once, and again when nobody has handled them."""
    with runtime.session_factory() as session:
        report = run_alerts(
            session=session,
            settings=AlertSettings.from_settings(runtime.settings),
            sms=runtime.transport,
            mailer=build_mailer(runtime.settings),
            now=runtime.clock.now(),
            owner=runtime.owner,
        )
    return report
