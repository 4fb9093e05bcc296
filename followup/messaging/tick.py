"""One pass of the whole outbox at the clock's instant: plan, reap, dispatch (`followup tick`)."""

from __future__ import annotations

import random

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import Clock
from followup.messaging.claims import reaper_owner
from followup.messaging.dispatch import DEFAULT_CONCURRENCY, dispatch_due
from followup.messaging.lost_intros import replan_lost_intros
from followup.messaging.outbox import plan_procedures
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import TickReport
from followup.messaging.transports.base import SmsTransport


def run_tick(
    *,
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    clock: Clock,
    owner: str,
    rng: random.Random | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    reap: bool = True,
    lease_clock: Clock | None = None,
) -> TickReport:
    """Plan, reap and dispatch every due text; each hand-over checked at the clock's instant.

    A pinned clock (`followup --now`) stays pinned: every check and time written is then
    that instant, except the dispatcher's leases, kept on `lease_clock` (this host's) when
    given, as every other process keeps them. Without `reap` (a clock pinned ahead of this
    host's: `jobs.tasks.tick`) the reaper's part is skipped and counted `clock_skewed`.
    """
    report = TickReport()
    while True:
        plan = plan_procedures(session=session, care=care, now=clock.now())
        session.commit()
        report.plan.add(plan)
        if plan.procedures == 0:
            break
    report.plan.reintroduced += replan_lost_intros(session=session, care=care, now=clock.now())
    session.commit()
    if not reap:
        report.reap.clock_skewed = 1
    else:
        report.reap.add(
            reap_stale(
                session=session,
                transport=transport,
                now=clock.now(),
                owner=reaper_owner(owner),
                care=care,
                clock=clock,
            )  # fmt: skip
        )
    report.dispatch.add(
        dispatch_due(
            session=session,
            transport=transport,
            care=care,
            clock=clock,
            owner=owner,
            concurrency=concurrency,
            rng=rng,
            lease_clock=lease_clock,
        )
    )
    return report
