"""The planner job's sweep for lost introductions: a procedure whose text chosen to carry
the introduction (HELP, STOP, the rates) closed unsent is re-planned, so that another text
carries it (`replan_procedure`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import cast

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.db import in_ids, is_postgresql, sqlite_write_lock
from followup.messaging.models import EXPIRED, PENDING, Message
from followup.messaging.replan import replan_procedure
from followup.messaging.text_state import maybe_at_provider
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)


def replan_lost_intros(*, session: so.Session, care: CareContext, now: datetime) -> int:
    """Re-plan the procedures whose introduction was lost: the text chosen to carry it
    (HELP, STOP, the rates) expired without reaching the provider (nor may any request of
    it have), while texts of theirs are still to go. Re-planning then gives the intro to
    the next text (or the welcome). Returns how many. (A text refused for good fails for
    the number: the next would too. Cancellations come from re-planning, which moves the
    intro itself, or from an opt-out, which START re-plans.)

    Nothing else moves the intro when its text expires unsent (its window closed while
    the provider refused it for now, or it was chosen with too little window left). The
    planner job runs it every minute: two queries driven by the pending texts, whatever
    the history's size. On PostgreSQL the procedure and patient rows are locked (SKIP
    LOCKED: one a nurse or a STOP is changing is left for the next run), so re-planning
    never works from what they were before that change.
    """
    # The pending range of the status index, made distinct here: for a DISTINCT in SQL,
    # SQLite reads the whole outbox in (procedure_id, step) order instead.
    waiting = sorted(
        set(session.scalars(sa.select(Message.procedure_id).where(Message.status == PENDING)))
    )
    if not waiting:
        return 0
    carrier = so.aliased(Message)
    query = (
        sa.select(Procedure, Patient, carrier.id)
        .join(Patient, Patient.id == Procedure.patient_id)
        .join(
            carrier,
            sa.and_(carrier.procedure_id == Procedure.id, carrier.step == Procedure.intro_step),
        )
        .where(
            in_ids(session, Procedure.id, waiting),
            Procedure.status.in_(("completed", "scheduled")),
            Patient.sms_consent_at.is_not(None),
            Patient.opted_out_at.is_(None),
            carrier.status == EXPIRED,
            _without_sid(session, carrier),
        )
        .execution_options(populate_existing=True)
    )
    if is_postgresql(session):
        query = query.with_for_update(of=(Procedure, Patient), skip_locked=True)
    rows = session.execute(query).all()
    if rows and not is_postgresql(session):
        # SQLite locks nothing it reads before the transaction's first write: a nurse's
        # correction committed between this read and the re-plan's write lock would be
        # re-planned from the times it replaced. Read again under the write lock.
        sqlite_write_lock(session, cast(sa.Table, Procedure.__table__))
        rows = session.execute(query).all()
    maybe = maybe_at_provider(session, [carrier_id for _, _, carrier_id in rows])
    replanned = 0
    for procedure, patient, carrier_id in rows:
        if carrier_id in maybe:
            continue  # it may have reached the patient: the intro counts as given
        lost_step = procedure.intro_step
        attempt = session.begin_nested()
        texts = replan_procedure(
            session=session, procedure=procedure, patient=patient, care=care, now=now
        )
        carrier_now = next((m for m in texts if m.step == procedure.intro_step), None)
        if procedure.intro_step == lost_step and (
            carrier_now is None or carrier_now.status == EXPIRED
        ):
            # No text can carry it yet (those left may be at the provider without it): the
            # re-plan would only re-time what is left, every minute. Undone; a later change
            # (START, a correction, the procedure's status) chooses again.
            attempt.rollback()
            continue
        attempt.commit()
        log.info("procedure %s: its intro text closed unsent; re-planned", procedure.id)
        replanned += 1
    return replanned


def _without_sid(session: so.Session, carrier: type[Message]) -> sa.ColumnElement[bool]:
    """`provider_sid IS NULL`; on SQLite written so that the SID's unique index cannot serve
    it. SQLite's statistics give that index one or two rows a value, and it plans `IS NULL`
    as such a value: it read every text without a SID (the pending ones and the history's
    expired and cancelled ones) rather than look each carrier up by its procedure and step.
    PostgreSQL counts the NULLs, and reads the expired texts without a SID only while that
    is cheaper than the look-ups."""
    if is_postgresql(session):
        return carrier.provider_sid.is_(None)
    return carrier.provider_sid.concat("").is_(None)
