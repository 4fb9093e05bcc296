"""Planning the outbox: a procedure's texts before and after it, cancelling, opt-out.
Re-planning after a change is in replan.py, opting back in (START) in opt_in.py.

Every function takes the session and `now`; the caller owns the clock and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any
from typing import Protocol as Shape
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.planner import PlannedText, choose_intro, plan_procedure
from followup.care.protocol import BEFORE, CareContext, Protocol, step_key
from followup.care.timing import STOP, Anchors, zone
from followup.db import (
    analyze_if_never_analyzed,
    analyze_if_without_statistics,
    in_ids,
    is_postgresql,
    locked_get,
)
from followup.messaging.events import add_events, event_row, insert_planned
from followup.messaging.models import (
    CANCELLED,
    PENDING,
    Message,
)
from followup.messaging.reports import PlanReport
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

OPTED_OUT = "opted out"  # every opt-out cancellation reason contains this (START undoes them)
PATIENT_OPTED_OUT = f"patient {OPTED_OUT}"  # reason_not_to_send's, for a claimed text
PLAN_BATCH = 1000
PLANNER_TABLES = ("patients", "procedures")  # what the plan query joins
# What the dispatcher's claim reads, statistics taken once planning's first texts are in
# (PostgreSQL): with none, it sorts every due text on each claim instead of reading the
# (status, due_at) range in order, and a backlog of thousands is claimed in quadratic time.
OUTBOX_TABLES = ("messages",)


class ProcedureFacts(Shape):
    """What sending a procedure's text reads of it: a Procedure, or the dispatcher's
    lighter copy of the columns (handover.py)."""

    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def scheduled_at(self) -> datetime | None: ...
    @property
    def stop_blood_thinner_on(self) -> date | None: ...
    @property
    def blood_thinner(self) -> str | None: ...
    @property
    def intro_step(self) -> str | None: ...


class PatientFacts(Shape):
    """What deciding whether a text may go reads of its patient (a Patient, or a copy)."""

    @property
    def opted_out_at(self) -> datetime | None: ...
    @property
    def sms_consent_at(self) -> datetime | None: ...


def procedure_anchors(procedure: Procedure) -> Anchors:
    """The instants a procedure's step times count from."""
    return Anchors(
        completed_at=procedure.completed_at,
        scheduled_at=procedure.scheduled_at,
        stop_on=procedure.stop_blood_thinner_on,
    )


def render_message(
    care: CareContext, *, procedure: ProcedureFacts, language: str, tz: ZoneInfo, step: str
) -> str:
    """One planned step's text as this procedure's patient receives it (their language, local
    time, blood thinner, and the first text's wording when it is the procedure's first)."""
    return care.render_text(
        kind=procedure.kind,
        step_key=step,
        language=language,
        tz=tz,
        completed_at=procedure.completed_at,
        blood_thinner=procedure.blood_thinner,
        scheduled_at=procedure.scheduled_at,
        stop_blood_thinner_on=procedure.stop_blood_thinner_on,
        intro=step == procedure.intro_step,
    )


def phase_plan(
    *, protocol: Protocol, row: Any, tz: ZoneInfo, care: CareContext, now: datetime
) -> list[PlannedText]:
    """Plan a procedure's current phase from a row with its times (a Procedure or a Row)."""
    if row.status == "completed":
        return plan_procedure(
            protocol=protocol,
            completed_at=row.completed_at,
            tz=tz,
            has_blood_thinner=row.blood_thinner is not None,
            quiet_hours=care.quiet_hours,
            now=now,
        )
    return plan_procedure(
        protocol=protocol,
        scheduled_at=row.scheduled_at,
        stop_on=row.stop_blood_thinner_on,
        tz=tz,
        has_blood_thinner=row.blood_thinner is not None,
        quiet_hours=care.quiet_hours,
        now=now,
    )


def plan_procedures(
    *,
    session: so.Session,
    care: CareContext,
    now: datetime,
    procedure_ids: Sequence[int] | None = None,
    limit: int = PLAN_BATCH,
) -> PlanReport:
    """Plan the texts of consented procedures that have no plan yet.

    A booked procedure gets the welcome and the steps before it; a completed one the steps
    after it, the first of which introduces the program (or the welcome, when that first
    text cannot). Set-based: one query for the batch, one bulk insert of its texts, one of
    their events, one UPDATE of the procedures. Planning twice plans nothing new (unique
    procedure and step). Procedures that were booked and are now done are re-planned one
    by one (`replan_procedure`) when they are completed, not here; one completed or
    rescheduled while its patient could not receive texts is left unplanned by that, and
    planned here when they can again.
    """
    query = (
        sa.select(
            Procedure.id,
            Procedure.kind,
            Procedure.status,
            Procedure.completed_at,
            Procedure.scheduled_at,
            Procedure.stop_blood_thinner_on,
            Procedure.blood_thinner,
            Procedure.patient_id,
            Patient.timezone,
        )
        .join(Patient, Patient.id == Procedure.patient_id)
        .where(
            sa.or_(
                sa.and_(Procedure.status == "completed", Procedure.completed_at.is_not(None)),
                sa.and_(Procedure.status == "scheduled", Procedure.scheduled_at.is_not(None)),
            ),
            Procedure.planned_at.is_(None),
            Patient.sms_consent_at.is_not(None),
            Patient.opted_out_at.is_(None),
        )
        # No ORDER BY: any `limit` unplanned procedures will do, and sorting them all on
        # every batch (PostgreSQL before its first ANALYZE sorts the whole backlog)
        # made planning quadratic in the backlog.
        .limit(limit)
    )
    if procedure_ids is not None:
        query = query.where(Procedure.id.in_(procedure_ids))
    # The join needs statistics on PostgreSQL; a bulk load autovacuum has not seen yet
    # gets them here, once, so that its first plan does not join every pair of rows.
    analyze_if_never_analyzed(session, PLANNER_TABLES)
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Procedure)
    procedures = session.execute(query).all()
    report = PlanReport(procedures=len(procedures))
    if not procedures:
        return report
    handed_over = _procedures_with_texts_handed_over(session, [proc.id for proc in procedures])
    texts: list[tuple[int, int, str, datetime, datetime, str]] = []
    intro_steps: dict[str, list[int]] = {}
    for proc in procedures:
        protocol = care.protocol(proc.kind)
        tz = zone(proc.timezone)
        planned = phase_plan(protocol=protocol, row=proc, tz=tz, care=care, now=now)
        if proc.id not in handed_over:
            intro_key, welcome = choose_intro(
                protocol=protocol, planned=planned, tz=tz, quiet_hours=care.quiet_hours, now=now
            )
            if welcome is not None:
                planned = [welcome, *planned]
            if intro_key is not None:
                intro_steps.setdefault(intro_key, []).append(proc.id)
        texts.extend(
            (proc.id, proc.patient_id, t.step, t.due_at, t.expires_at, t.status) for t in planned
        )
    report.planned, report.expired = insert_planned(session, texts, now)
    if texts:
        analyze_if_without_statistics(session, OUTBOX_TABLES)
    ids = [proc.id for proc in procedures]
    values: dict[str, Any] = {"planned_at": now}
    if intro_steps:  # one new version of each procedure row, not one per column set
        values["intro_step"] = sa.case(
            *(
                (in_ids(session, Procedure.id, with_intro), step_key)
                for step_key, with_intro in intro_steps.items()
            ),
            else_=Procedure.intro_step,
        )
    session.execute(sa.update(Procedure).where(in_ids(session, Procedure.id, ids)).values(values))
    log.debug(  # the plan job logs one line per run; enrollment logs its own
        "planned procedures=%d texts=%d expired=%d",
        report.procedures,
        report.planned,
        report.expired,
    )
    return report


def _procedures_with_texts_handed_over(session: so.Session, ids: list[int]) -> set[int]:
    """The procedures (of `ids`) at least one of whose texts was handed to the provider."""
    return set(
        session.scalars(
            sa.select(Message.procedure_id)
            .where(in_ids(session, Message.procedure_id, ids), Message.attempts > 0)
            .distinct()
        )
    )


def cancel_pending(
    *,
    session: so.Session,
    now: datetime,
    reason: str,
    procedure_id: int | None = None,
    patient_id: int | None = None,
    steps: Collection[str] | None = None,
) -> int:
    """Cancel the pending texts of one procedure or one patient (only `steps`, if given);
    return how many."""
    query = sa.update(Message).where(Message.status == PENDING)
    if steps is not None:
        query = query.where(Message.step.in_(list(steps)))
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


def locked_patient(session: so.Session, patient_id: int) -> Patient | None:
    """The patient as committed now, their row locked until the caller commits (PostgreSQL:
    FOR NO KEY UPDATE, as their own UPDATE takes; SQLite: the caller's write lock).

    STOP and START decide from the patient's opt-out: read from what the session loaded
    before (a reply's request reads the patient first), a STOP or START committing
    meanwhile in another request would be missed, and the later reply lost."""
    return session.get(
        Patient, patient_id, populate_existing=True, with_for_update={"key_share": True}
    )


def locked_procedure(session: so.Session, procedure_id: int) -> Procedure | None:
    """The procedure as committed now, its row locked until the caller commits (PostgreSQL:
    FOR NO KEY UPDATE, as its own UPDATE takes; SQLite: the database's write lock, taken by
    a no-op write first, as SQLite's reads before a transaction's first write lock nothing).

    A change that checks the procedure's status and re-plans its texts from it must read it
    so: read unlocked, a cancellation or completion committed meanwhile in another request
    is overwritten (a cancelled procedure completed again and its aftercare sent; a finished
    one's aftercare cancelled by a reschedule planned from the booking it no longer has)."""
    return locked_get(session, Procedure, procedure_id, key_share=True)


def record_opt_out(*, session: so.Session, patient_id: int, now: datetime, reason: str) -> int:
    """Mark a patient opted out and cancel every pending text of theirs; return how many."""
    patient = locked_patient(session, patient_id)
    if patient is not None and patient.opted_out_at is None:
        patient.opted_out_at = now
    return cancel_pending(session=session, now=now, reason=reason, patient_id=patient_id)


def reason_not_to_send(
    *, patient: PatientFacts, procedure: ProcedureFacts, care: CareContext, step: str
) -> str | None:
    """Why a text must not go out now (None: it may). Checked again at claim time.

    A booked procedure sends only the steps before it; a completed one only the steps
    after it, plus the welcome when the planner made it the patient's first text.
    """
    if procedure.status == "cancelled":
        return "procedure cancelled"
    protocol = care.protocols.get(procedure.kind)
    if protocol is None or all(s.key != step_key(step) for s in protocol.steps):
        return "step no longer in the care protocol"
    protocol_step = protocol.step(step)
    if procedure.status == "scheduled":
        if procedure.scheduled_at is None or protocol_step.phase != BEFORE:
            return "procedure not completed"
    elif procedure.status != "completed" or procedure.completed_at is None:
        return "procedure not completed"
    elif protocol_step.phase == BEFORE and not (
        protocol_step.intro and procedure.intro_step == step
    ):
        return "procedure finished"
    if patient.opted_out_at is not None:
        return PATIENT_OPTED_OUT
    if patient.sms_consent_at is None:
        return "no SMS consent on record"
    if not protocol_step.applies(has_blood_thinner=procedure.blood_thinner is not None):
        return "step no longer applies"
    if protocol_step.send.anchor == STOP and procedure.stop_blood_thinner_on is None:
        return "no stop date for the blood thinner"
    return None
