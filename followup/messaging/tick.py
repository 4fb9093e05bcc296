"""One pass of the whole outbox at one instant: plan, reap, dispatch (`followup tick`)."""

from __future__ import annotations

import random
from datetime import datetime

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.messaging.dispatch import dispatch_due
from followup.messaging.outbox import plan_procedures
from followup.messaging.reconcile import reap_stale
from followup.messaging.reports import TickReport
from followup.messaging.transports.base import SmsTransport


def run_tick(
    *,
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    now: datetime,
    owner: str,
    rng: random.Random | None = None,
    max_batches: int = 1000,
) -> TickReport:
    """Plan, dispatch every due text and reap, all at the one instant `now`."""
    report = TickReport()
    while True:
        plan = plan_procedures(session=session, care=care, now=now)
        session.commit()
        report.plan.add(plan)
        if plan.procedures == 0:
            break
    report.reap.add(reap_stale(session=session, transport=transport, now=now))
    for _ in range(max_batches):
        batch = dispatch_due(
            session=session, transport=transport, care=care, now=now, owner=owner, rng=rng
        )
        report.dispatch.add(batch)
        if batch.claimed == 0:
            break
    return report
