"""A patient opting back in (START): the texts the opt-out cancelled come back, and what
changed meanwhile (a procedure finished or rescheduled) is re-planned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.planner import plan_step
from followup.care.protocol import BEFORE, CareContext
from followup.care.timing import zone
from followup.db import in_ids, is_postgresql
from followup.messaging.events import add_events, event_row
from followup.messaging.models import CANCELLED, PENDING, Message, MessageEvent
from followup.messaging.outbox import (
    OPTED_OUT,
    plan_procedures,
    procedure_anchors,
    reason_not_to_send,
)
from followup.messaging.replan import maybe_at_provider, replan_procedure
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)


def record_opt_in(*, session: so.Session, patient_id: int, care: CareContext, now: datetime) -> int:
    """Clear a patient's opt-out and bring back the texts it cancelled; return how many.

    Only texts cancelled because of the opt-out, whose window is still open, return to
    pending (re-planned at `now`: quiet hours apply); nothing whose window has passed is
    sent, nor a text a request of which may have reached the patient (its answer came back
    unknown and the reaper never found it missing at the provider). Procedures left
    unplanned while opted out are planned now (re-planned if they have texts, and so is a
    finished one whose welcome is to carry the intro). The procedures, then the texts, are
    locked first (PostgreSQL, in a nurse's edit's order; on SQLite the flush of the patient
    took the write lock), so a late answer cannot land between read and write.
    """
    patient = session.get(Patient, patient_id)
    if patient is None or patient.opted_out_at is None:
        return 0
    patient.opted_out_at = None
    session.flush()
    if is_postgresql(session):
        # The procedures first, as a nurse's edit does (its UPDATE comes before it locks
        # the texts): the texts are locked after them, never in the opposite order.
        session.execute(
            sa.select(Procedure.id)
            .where(Procedure.patient_id == patient_id)
            .order_by(Procedure.id)
            .with_for_update()
        )
    cancelled_by_opt_out = sa.exists().where(
        MessageEvent.message_id == Message.id,
        MessageEvent.kind == "cancelled",
        MessageEvent.detail.contains(OPTED_OUT),
    )
    query = (
        sa.select(Message, Procedure)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(
            Message.patient_id == patient_id,
            Message.status == CANCELLED,
            cancelled_by_opt_out,
        )
        .order_by(Message.due_at)
    )
    if is_postgresql(session):
        query = query.with_for_update(of=Message)
    rows = session.execute(query).all()
    maybe_sent = maybe_at_provider(session, [m.id for m, _ in rows])
    events: list[dict[str, Any]] = []
    intro_again: set[int] = set()
    for message, procedure in rows:
        if message.id in maybe_sent:
            log.info("message %s stays cancelled: it may have reached the patient", message.id)
            continue
        if reason_not_to_send(patient=patient, procedure=procedure, care=care, step=message.step):
            continue
        if (
            procedure.status == "completed"
            and care.protocol(procedure.kind).step(message.step).phase == BEFORE
        ):
            # The welcome as the intro of a finished procedure: timed like choose_intro
            # (not capped by the booked time, which has passed), by re-planning below.
            intro_again.add(procedure.id)
            continue
        planned = plan_step(
            step=care.protocol(procedure.kind).step(message.step),
            anchors=procedure_anchors(procedure),
            tz=zone(patient.timezone),
            quiet_hours=care.quiet_hours,
            now=now,
        )
        if planned.status != PENDING:
            continue  # its window has passed: it stays cancelled
        message.status = PENDING
        message.due_at = planned.due_at
        message.expires_at = planned.expires_at
        message.not_before = None
        message.updated_at = now
        events.append(event_row(message.id, now, "replanned", PENDING, "patient opted back in"))
    add_events(session, events)
    # Procedures not planned while opted out: never planned (no texts yet) are planned;
    # finished or rescheduled meanwhile (texts from before) are re-planned, so what is
    # left of the steps before them is settled and the intro chosen with what exists.
    unplanned = session.scalars(
        sa.select(Procedure).where(
            Procedure.patient_id == patient_id,
            sa.or_(Procedure.planned_at.is_(None), Procedure.id.in_(intro_again)),
        )
    ).all()
    _plan_left_unplanned(session, patient=patient, procedures=unplanned, care=care, now=now)
    log.info("patient %s opted back in; %d texts back", patient_id, len(events))
    return len(events)


def _plan_left_unplanned(
    session: so.Session,
    *,
    patient: Patient,
    procedures: Sequence[Procedure],
    care: CareContext,
    now: datetime,
) -> None:
    """Plan what was left unplanned while the patient was opted out: re-plan a procedure
    that has texts already, plan one that has none."""
    if not procedures:
        return
    with_texts = set(
        session.scalars(
            sa.select(Message.procedure_id)
            .where(in_ids(session, Message.procedure_id, [p.id for p in procedures]))
            .distinct()
        )
    )
    for procedure in procedures:
        if procedure.id in with_texts:
            replan_procedure(
                session=session, procedure=procedure, patient=patient, care=care, now=now
            )
    fresh = [p.id for p in procedures if p.id not in with_texts]
    if fresh:
        plan_procedures(session=session, care=care, now=now, procedure_ids=fresh)
