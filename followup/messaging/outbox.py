"""Planning the outbox: a completed procedure's texts, re-planning, cancelling, opt-out and in.

Every function takes the session and `now`; the caller owns the clock and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.planner import plan_procedure, plan_step
from followup.care.protocol import CareContext
from followup.care.timing import zone
from followup.db import is_postgresql
from followup.messaging.events import add_events, event_row, insert_ignoring_duplicates
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    PENDING,
    Message,
    MessageEvent,
)
from followup.messaging.reports import PlanReport
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

OPTED_OUT = "opted out"  # every opt-out cancellation reason contains this (START undoes them)
PLAN_BATCH = 1000
REPLANNABLE = (PENDING, EXPIRED)


def plan_procedures(
    *,
    session: so.Session,
    care: CareContext,
    now: datetime,
    procedure_ids: Sequence[int] | None = None,
    limit: int = PLAN_BATCH,
) -> PlanReport:
    """Plan the texts of completed, consented procedures that have no plan yet.

    Set-based: one query for the batch, one bulk insert of its texts, one of their events.
    Planning twice plans nothing new (unique procedure and step).
    """
    query = (
        sa.select(
            Procedure.id,
            Procedure.kind,
            Procedure.completed_at,
            Procedure.blood_thinner,
            Procedure.patient_id,
            Patient.timezone,
        )
        .join(Patient, Patient.id == Procedure.patient_id)
        .where(
            Procedure.status == "completed",
            Procedure.planned_at.is_(None),
            Procedure.completed_at.is_not(None),
            Patient.sms_consent_at.is_not(None),
            Patient.opted_out_at.is_(None),
        )
        .order_by(Procedure.id)
        .limit(limit)
    )
    if procedure_ids is not None:
        query = query.where(Procedure.id.in_(procedure_ids))
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Procedure)
    procedures = session.execute(query).all()
    report = PlanReport(procedures=len(procedures))
    if not procedures:
        return report
    rows: list[dict[str, Any]] = []
    for proc in procedures:
        for planned in plan_procedure(
            protocol=care.protocol(proc.kind),
            completed_at=proc.completed_at,
            tz=zone(proc.timezone),
            has_blood_thinner=proc.blood_thinner is not None,
            quiet_hours=care.quiet_hours,
            now=now,
        ):
            rows.append(
                {
                    "procedure_id": proc.id,
                    "patient_id": proc.patient_id,
                    "step": planned.step,
                    "due_at": planned.due_at,
                    "expires_at": planned.expires_at,
                    "status": planned.status,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if rows:
        inserted = session.execute(
            insert_ignoring_duplicates(session).returning(Message.id, Message.status), rows
        ).all()
        events = []
        for message_id, status in inserted:
            if status == EXPIRED:
                report.expired += 1
                events.append(
                    event_row(message_id, now, "expired", EXPIRED, "window had passed when planned")
                )
            else:
                report.planned += 1
                events.append(event_row(message_id, now, "planned", PENDING))
        add_events(session, events)
    session.execute(
        sa.update(Procedure)
        .where(Procedure.id.in_([proc.id for proc in procedures]))
        .values(planned_at=now),
    )
    log.info(
        "planned procedures=%d texts=%d expired=%d",
        report.procedures,
        report.planned,
        report.expired,
    )
    return report


def replan_procedure(
    *, session: so.Session, procedure: Procedure, patient: Patient, care: CareContext, now: datetime
) -> list[Message]:
    """Bring a procedure's unsent texts in line with its current completion time and details.

    Texts already handed to the provider, and texts cancelled on purpose, are left alone.
    Returns the procedure's texts after the change, in due order.
    """
    existing = {
        m.step: m
        for m in session.scalars(
            sa.select(Message)
            .where(Message.procedure_id == procedure.id)
            .execution_options(populate_existing=True)
        )
    }
    if (
        procedure.status != "completed"
        or procedure.completed_at is None
        or not patient.can_receive_texts()
    ):
        return sorted(existing.values(), key=lambda m: m.due_at)
    protocol = care.protocol(procedure.kind)
    tz = zone(patient.timezone)
    wanted = {
        step.key
        for step in protocol.steps
        if step.applies(has_blood_thinner=procedure.blood_thinner is not None)
    }
    events: list[dict[str, Any]] = []
    for step in protocol.steps:
        message = existing.get(step.key)
        if step.key not in wanted:
            if message is not None and message.status == PENDING:
                message.status = CANCELLED
                message.updated_at = now
                session.flush()
                events.append(
                    event_row(message.id, now, "cancelled", CANCELLED, "step no longer applies")
                )
            continue
        planned = plan_step(
            step=step,
            completed_at=procedure.completed_at,
            tz=tz,
            quiet_hours=care.quiet_hours,
            now=now,
        )
        if message is None:
            message = Message(
                procedure_id=procedure.id,
                patient_id=patient.id,
                step=step.key,
                attempts=0,
                created_at=now,
            )
            session.add(message)
        elif message.status not in REPLANNABLE or message.attempts > 0:
            continue
        message.due_at = planned.due_at
        message.expires_at = planned.expires_at
        message.status = planned.status
        message.not_before = None
        message.updated_at = now
        session.flush()
        detail = "re-planned" + (": window has passed" if planned.status == EXPIRED else "")
        events.append(event_row(message.id, now, "replanned", planned.status, detail))
        existing[step.key] = message
    procedure.planned_at = now
    add_events(session, events)
    return sorted(existing.values(), key=lambda m: m.due_at)


def cancel_pending(
    *,
    session: so.Session,
    now: datetime,
    reason: str,
    procedure_id: int | None = None,
    patient_id: int | None = None,
) -> int:
    """Cancel the pending texts of one procedure or one patient; return how many."""
    query = sa.update(Message).where(Message.status == PENDING)
    if procedure_id is not None:
        query = query.where(Message.procedure_id == procedure_id)
    elif patient_id is not None:
        query = query.where(Message.patient_id == patient_id)
    else:
        raise ValueError("cancel_pending needs procedure_id or patient_id")
    ids = session.scalars(
        query.values(status=CANCELLED, updated_at=now).returning(Message.id),
    ).all()
    add_events(session, [event_row(i, now, "cancelled", CANCELLED, reason) for i in ids])
    return len(ids)


def record_opt_out(*, session: so.Session, patient_id: int, now: datetime, reason: str) -> int:
    """Mark a patient opted out and cancel every pending text of theirs; return how many."""
    patient = session.get(Patient, patient_id)
    if patient is not None and patient.opted_out_at is None:
        patient.opted_out_at = now
    return cancel_pending(session=session, now=now, reason=reason, patient_id=patient_id)


def reason_not_to_send(
    *, patient: Patient, procedure: Procedure, care: CareContext, step: str
) -> str | None:
    if procedure.status == "cancelled":
        return "procedure cancelled"
    if procedure.status != "completed" or procedure.completed_at is None:
        return "procedure not completed"
    if patient.opted_out_at is not None:
        return "patient opted out"
    if patient.sms_consent_at is None:
        return "no SMS consent on record"
    protocol = care.protocols.get(procedure.kind)
    if protocol is None or all(s.key != step for s in protocol.steps):
        return "step no longer in the care protocol"
    if not protocol.step(step).applies(has_blood_thinner=procedure.blood_thinner is not None):
        return "step no longer applies"
    return None


def record_opt_in(*, session: so.Session, patient_id: int, care: CareContext, now: datetime) -> int:
    """Clear a patient's opt-out and bring back the texts it cancelled; return how many.

    Only texts cancelled because of the opt-out, whose window is still open, return to
    pending (re-planned at `now`: quiet hours apply); nothing whose window has passed is
    sent. Procedures never planned while opted out are planned now.
    """
    patient = session.get(Patient, patient_id)
    if patient is None or patient.opted_out_at is None:
        return 0
    patient.opted_out_at = None
    session.flush()
    cancelled_by_opt_out = sa.exists().where(
        MessageEvent.message_id == Message.id,
        MessageEvent.kind == "cancelled",
        MessageEvent.detail.contains(OPTED_OUT),
    )
    rows = session.execute(
        sa.select(Message, Procedure)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(
            Message.patient_id == patient_id,
            Message.status == CANCELLED,
            cancelled_by_opt_out,
        )
        .order_by(Message.due_at)
    ).all()
    events: list[dict[str, Any]] = []
    for message, procedure in rows:
        if reason_not_to_send(patient=patient, procedure=procedure, care=care, step=message.step):
            continue
        assert procedure.completed_at is not None  # noqa: S101 - checked just above
        planned = plan_step(
            step=care.protocol(procedure.kind).step(message.step),
            completed_at=procedure.completed_at,
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
    unplanned = session.scalars(
        sa.select(Procedure.id).where(
            Procedure.patient_id == patient_id, Procedure.planned_at.is_(None)
        )
    ).all()
    if unplanned:
        plan_procedures(session=session, care=care, now=now, procedure_ids=list(unplanned))
    log.info("patient %s opted back in; %d texts back", patient_id, len(events))
    return len(events)
