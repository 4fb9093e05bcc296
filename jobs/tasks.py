"""The scheduler's jobs: each a thin call into followup's services at the clock's instant.

Each returns its report; the scheduler logs one line per run that did something and
counts it (followup.ops.runs).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from followup.db import is_postgresql
from followup.inbox.alerts import AlertReport, AlertSettings, run_alerts
from followup.inbox.mail import build_mailer
from followup.messaging.dispatch import dispatch_due
from followup.messaging.outbox import plan_procedures
from followup.messaging.reconcile import reap_stale
from followup.messaging.replan import replan_lost_intros
from followup.messaging.reports import DispatchReport, PlanReport, PollReport, ReapReport
from followup.messaging.status import StatusLookup, poll_stale_statuses
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


def reap(runtime: Runtime) -> ReapReport:
    """Settle texts whose lease ran out in `sending`.

    The reaper judges leases other processes wrote with their clocks, so on PostgreSQL each
    pass first holds this host's clock against the server's: more than MAX_CLOCK_SKEW
    apart (NTP stopped since start-up, where `followup check` compared them), the pass does
    not run, with an error logged, rather than take texts whose requests are under way.
    """
    with runtime.session_factory() as session:
        if is_postgresql(session):
            skew = clock_skew(session.connection(), wall=runtime.host_clock.now)
            session.rollback()
            runtime.metrics.clock_skew.set(skew)
            if abs(skew) > MAX_CLOCK_SKEW:
                log.error("reaper pass skipped: %s", skew_problem(skew))
                return ReapReport(clock_skewed=1)
        report = reap_stale(
            session=session,
            transport=runtime.transport,
            now=runtime.clock.now(),
            owner=f"{runtime.owner}/reap",
            care=runtime.care,
            clock=runtime.clock,
        )
    return report


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
