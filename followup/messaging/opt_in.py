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
from followup.care.protocol import BEFORE, CareContext, is_correction
from followup.care.timing import zone
from followup.db import in_ids, is_postgresql
from followup.messaging.corrections import correction_plan
from followup.messaging.events import add_events, event_row
from followup.messaging.models import CANCELLED, PENDING, Message, MessageEvent
from followup.messaging.outbox import (
    OPTED_OUT,
    locked_patient,
    plan_procedures,
    procedure_anchors,
    reason_not_to_send,
)
from followup.messaging.replan import replan_procedure
from followup.messaging.text_state import maybe_at_provider
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)


def record_opt_in(*, session: so.Session, patient_id: int, care: CareContext, now: datetime) -> int:
    """Clear a patient's opt-out and bring back the texts it cancelled; return how many.

    Only texts cancelled because of the opt-out, whose window is still open, return to
    pending (re-planned at `now`: quiet hours apply); nothing whose window has passed is
    sent, nor a text a request of which may have reached the patient (its answer came back
    unknown and the reaper never found it missing at the provider). Procedures left
    unplanned while opted out are planned now (re-planned if they have texts, and so is a
    finished one whose welcome is to carry the intro, and one whose intro text stays
    cancelled: another text carries the intro). The procedures, then the texts, are
    locked first (PostgreSQL, in a nurse's edit's order; on SQLite the flush of the patient
    took the write lock), so a late answer cannot land between read and write.
    """
    patient = locked_patient(session, patient_id)
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
    query = (
        sa.select(Message, Procedure)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(
            Message.patient_id == patient_id,
            Message.status == CANCELLED,
            cancelled_by_opt_out(),
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
        fate = reopen(patient=patient, procedure=procedure, message=message, care=care, now=now)
        if fate == BACK:
            events.append(event_row(message.id, now, "replanned", PENDING, "patient opted back in"))
        elif fate == REPLAN:
            intro_again.add(procedure.id)
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


BACK = "back"  # pending again, at the times START plans
REPLAN = "replan"  # its procedure is to be re-planned (the intro, a text before a finished one)
STAYS = "stays"  # stays cancelled


def reopen(
    *, patient: Patient, procedure: Procedure, message: Message, care: CareContext, now: datetime
) -> str:
    """START's rule for one text its opt-out cancelled, none of whose requests may be at the
    provider: BACK (pending, planned from the procedure's times now: quiet hours apply, and
    nothing whose window has passed), REPLAN or STAYS. Re-planning decides a text before a
    finished procedure (the welcome as its intro is timed like choose_intro, not capped by
    the booked time, which has passed), and who introduces the program when the text chosen
    for it stays closed (else no text would carry HELP, STOP and the rates)."""
    if reason_not_to_send(patient=patient, procedure=procedure, care=care, step=message.step):
        return _intro_lost(patient, procedure, message)
    step = care.protocol(procedure.kind).step(message.step)
    if procedure.status == "completed" and step.phase == BEFORE:
        return REPLAN
    planned = plan_step(
        step=step,
        anchors=procedure_anchors(procedure),
        tz=zone(patient.timezone),
        quiet_hours=care.quiet_hours,
        now=now,
    )
    if planned.status != PENDING:
        return _intro_lost(patient, procedure, message)  # its window has passed
    if is_correction(message.step):
        # At once, as it was to go, unless its step's text comes soon: that says it.
        planned, both = correction_plan(
            planned=planned, key=message.step, now=now, tz=zone(patient.timezone),
            quiet_hours=care.quiet_hours,
        )  # fmt: skip
        if not both:
            return STAYS
    message.status = PENDING
    message.due_at = planned.due_at
    message.expires_at = planned.expires_at
    message.not_before = None
    message.updated_at = now
    return BACK


def _intro_lost(patient: Patient, procedure: Procedure, message: Message) -> str:
    """A text that stays cancelled: REPLAN if it was to introduce the program."""
    if message.step == procedure.intro_step and patient.can_receive_texts():
        return REPLAN
    return STAYS


def reopen_found_missing(
    *, session: so.Session, message_id: int, care: CareContext, now: datetime
) -> tuple[str, Procedure | None, Patient | None]:
    """START's rule (`reopen`) for a copy its opt-out cancelled that START passed over (a
    request of it might have been at the provider) and that the reaper has just found
    missing there, if the patient can receive texts again. The caller (the reaper) records
    the outcome, then re-plans the procedure returned for REPLAN. On PostgreSQL the caller
    locked the patient, then the procedure (START's order), before the text."""
    row = session.execute(
        sa.select(Message, Procedure, Patient)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .join(Patient, Patient.id == Message.patient_id)
        .where(Message.id == message_id, Message.status == CANCELLED, cancelled_by_opt_out())
        .execution_options(populate_existing=True)
    ).first()
    if row is None or not row.Patient.can_receive_texts():
        return STAYS, None, None
    message, procedure, patient = row
    fate = reopen(patient=patient, procedure=procedure, message=message, care=care, now=now)
    session.flush()
    return fate, procedure, patient


def cancelled_by_opt_out() -> sa.ColumnElement[bool]:
    """The text was cancelled by an opt-out (START undoes those)."""
    return sa.exists().where(
        MessageEvent.message_id == Message.id,
        MessageEvent.kind == "cancelled",
        MessageEvent.detail.contains(OPTED_OUT),
    )


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
