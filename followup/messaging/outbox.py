"""Planning the outbox: a procedure's texts before and after it, re-planning, cancelling,
opt-out and in.

Every function takes the session and `now`; the caller owns the clock and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.planner import PlannedText, choose_intro, plan_procedure, plan_step
from followup.care.protocol import BEFORE, CareContext, Protocol
from followup.care.timing import STOP, Anchors, zone
from followup.db import analyze_if_never_analyzed, in_ids, is_postgresql
from followup.messaging.events import add_events, event_row, insert_planned
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    PENDING,
    SENDING,
    Message,
    MessageEvent,
)
from followup.messaging.reports import PlanReport
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

OPTED_OUT = "opted out"  # every opt-out cancellation reason contains this (START undoes them)
PLAN_BATCH = 1000
PLANNER_TABLES = ("patients", "procedures")  # what the plan query joins
REPLANNABLE = (PENDING, EXPIRED)


def procedure_anchors(procedure: Procedure) -> Anchors:
    """The instants a procedure's step times count from."""
    return Anchors(
        completed_at=procedure.completed_at,
        scheduled_at=procedure.scheduled_at,
        stop_on=procedure.stop_blood_thinner_on,
    )


def render_message(
    care: CareContext, *, procedure: Procedure, language: str, tz: ZoneInfo, step: str
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


def _phase_plan(
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
    by one (`replan_procedure`) when they are completed, not here.
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
        planned = _phase_plan(protocol=protocol, row=proc, tz=tz, care=care, now=now)
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


@dataclass(frozen=True)
class ProcedureTimes:
    """What re-planning reads of a procedure: a Procedure, or the change a nurse previews."""

    status: str
    completed_at: datetime | None
    scheduled_at: datetime | None
    stop_blood_thinner_on: date | None
    blood_thinner: str | None

    @classmethod
    def of(cls, procedure: Procedure) -> ProcedureTimes:
        return cls(
            status=procedure.status,
            completed_at=procedure.completed_at,
            scheduled_at=procedure.scheduled_at,
            stop_blood_thinner_on=procedure.stop_blood_thinner_on,
            blood_thinner=procedure.blood_thinner,
        )


@dataclass(frozen=True)
class ReplanDecision:
    """What re-planning does to one step: "plan" it (new or moved), "cancel" it, "keep" it."""

    step: str
    action: str
    planned: PlannedText | None = None
    reason: str | None = None


def decide_replan(
    *,
    times: ProcedureTimes,
    existing: dict[str, Message],
    care: CareContext,
    kind: str,
    tz: ZoneInfo,
    now: datetime,
) -> tuple[list[ReplanDecision], str | None, bool]:
    """Decide, writing nothing, how a procedure's texts follow its status and times.

    Returns the decisions in protocol order, the step that should introduce the program,
    and whether that choice is to be written (False once a text was handed over).
    """
    protocol = care.protocol(kind)
    planned = _phase_plan(protocol=protocol, row=times, tz=tz, care=care, now=now)
    intro_given = any(m.attempts > 0 for m in existing.values())
    intro_key: str | None = None
    revive: set[str] = set()
    if not intro_given:
        # Only texts that can still be (re)planned count as the patient's first text.
        open_plan = [
            p
            for p in planned
            if p.step not in existing
            or (_replannable(existing[p.step]) and existing[p.step].attempts == 0)
        ]
        intro_key, welcome = choose_intro(
            protocol=protocol, planned=open_plan, tz=tz, quiet_hours=care.quiet_hours, now=now
        )
        if welcome is not None:
            planned = [welcome, *planned]
            revive.add(welcome.step)  # a welcome cancelled at completion comes back
    wanted = {p.step: p for p in planned}
    finished = times.status == "completed"
    decisions = []
    for step in protocol.steps:
        message = existing.get(step.key)
        planned_text = wanted.get(step.key)
        if planned_text is None:
            if message is not None and (message.status == PENDING or _claimed_only(message)):
                reason = (
                    "procedure finished"
                    if finished and step.phase == BEFORE
                    else "step no longer applies"
                )
                decisions.append(ReplanDecision(step.key, "cancel", reason=reason))
            elif message is not None:
                decisions.append(ReplanDecision(step.key, "keep", reason=message.status))
            continue
        if message is not None and (
            (message.attempts > 0 and not _unsent_retry(message))
            or (
                not _replannable(message)
                and not (message.status == CANCELLED and step.key in revive)
            )
        ):
            decisions.append(ReplanDecision(step.key, "keep", reason=message.status))
            continue
        decisions.append(ReplanDecision(step.key, "plan", planned=planned_text))
    return decisions, intro_key, not intro_given


def _claimed_only(message: Message) -> bool:
    """Claimed by a dispatcher but not handed over: still unsent, so still ours to change
    (the dispatcher's guard then finds it no longer `sending` and does not send it)."""
    return message.status == SENDING and message.handed_at is None


def _replannable(message: Message) -> bool:
    return message.status in REPLANNABLE or _claimed_only(message)


def _unsent_retry(message: Message) -> bool:
    """Handed over before but refused for now (a transient error): waiting for its retry,
    or claimed for it. It never reached the patient, so it follows the new times too (an
    expired one stays expired: its failure is already a person's to follow up)."""
    return message.status == PENDING or _claimed_only(message)


def replan_procedure(
    *, session: so.Session, procedure: Procedure, patient: Patient, care: CareContext, now: datetime
) -> list[Message]:
    """Bring a procedure's unsent texts in line with its current status, times and details.

    A booked procedure keeps the welcome and the steps before it; a completed one the steps
    after it: what is left of the steps before it is cancelled ("procedure finished").
    Texts the provider accepted (or may have), and texts cancelled on purpose, are left alone;
    one refused for now (a transient error, waiting for its retry) follows the new times.
    Returns the procedure's texts after the change, in due order.
    """
    existing = procedure_messages(session=session, procedure_id=procedure.id, lock=True)
    if procedure.status not in ("completed", "scheduled") or not patient.can_receive_texts():
        return sorted(existing.values(), key=lambda m: m.due_at)
    if procedure.status == "completed" and procedure.completed_at is None:
        return sorted(existing.values(), key=lambda m: m.due_at)
    decisions, intro_key, write_intro = decide_replan(
        times=ProcedureTimes.of(procedure),
        existing=existing,
        care=care,
        kind=procedure.kind,
        tz=zone(patient.timezone),
        now=now,
    )
    if write_intro:
        procedure.intro_step = intro_key
    events: list[dict[str, Any]] = []
    for decision in decisions:
        message = existing.get(decision.step)
        if decision.action == "cancel" and message is not None:
            message.status = CANCELLED
            message.lease_owner = message.lease_expires_at = None
            message.updated_at = now
            session.flush()
            events.append(event_row(message.id, now, "cancelled", CANCELLED, decision.reason))
            continue
        if decision.action != "plan" or decision.planned is None:
            continue
        planned_text = decision.planned
        if message is None:
            message = Message(
                procedure_id=procedure.id,
                patient_id=patient.id,
                step=decision.step,
                attempts=0,
                created_at=now,
            )
            session.add(message)
        # A retry keeps its backoff (and the provider's Retry-After) if that ends later.
        backoff = message.not_before if message.attempts else None
        message.due_at = planned_text.due_at
        message.expires_at = planned_text.expires_at
        message.status = planned_text.status
        message.not_before = (
            backoff if backoff is not None and backoff > planned_text.due_at else None
        )
        message.lease_owner = message.lease_expires_at = None
        message.updated_at = now
        session.flush()
        detail = "re-planned" + (": window has passed" if planned_text.status == EXPIRED else "")
        events.append(event_row(message.id, now, "replanned", planned_text.status, detail))
        existing[decision.step] = message
    procedure.planned_at = now
    add_events(session, events)
    return sorted(existing.values(), key=lambda m: m.due_at)


def procedure_messages(
    *, session: so.Session, procedure_id: int, lock: bool = False
) -> dict[str, Message]:
    """A procedure's texts by step, freshly read.

    With `lock` (before writing them), no dispatcher can claim or hand over one of them
    until this transaction ends: on PostgreSQL the rows are locked (a dispatcher's claim
    skips them, its guard waits); on SQLite the transaction takes the database's write
    lock first (a no-op write to the procedure), so what is read is what is overwritten.
    """
    query = (
        sa.select(Message)
        .where(Message.procedure_id == procedure_id)
        .order_by(Message.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        if is_postgresql(session):
            query = query.with_for_update(of=Message)
        else:
            table = cast(sa.Table, Procedure.__table__)
            session.execute(
                sa.update(table)
                .where(table.c.id == procedure_id)
                .values(planned_at=table.c.planned_at)
            )
    return {m.step: m for m in session.scalars(query)}


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


def record_opt_out(*, session: so.Session, patient_id: int, now: datetime, reason: str) -> int:
    """Mark a patient opted out and cancel every pending text of theirs; return how many."""
    patient = session.get(Patient, patient_id)
    if patient is not None and patient.opted_out_at is None:
        patient.opted_out_at = now
    return cancel_pending(session=session, now=now, reason=reason, patient_id=patient_id)


def reason_not_to_send(
    *, patient: Patient, procedure: Procedure, care: CareContext, step: str
) -> str | None:
    """Why a text must not go out now (None: it may). Checked again at claim time.

    A booked procedure sends only the steps before it; a completed one only the steps
    after it, plus the welcome when the planner made it the patient's first text.
    """
    if procedure.status == "cancelled":
        return "procedure cancelled"
    protocol = care.protocols.get(procedure.kind)
    if protocol is None or all(s.key != step for s in protocol.steps):
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
        return "patient opted out"
    if patient.sms_consent_at is None:
        return "no SMS consent on record"
    if not protocol_step.applies(has_blood_thinner=procedure.blood_thinner is not None):
        return "step no longer applies"
    if protocol_step.send.anchor == STOP and procedure.stop_blood_thinner_on is None:
        return "no stop date for the blood thinner"
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
    unplanned = session.scalars(
        sa.select(Procedure.id).where(
            Procedure.patient_id == patient_id, Procedure.planned_at.is_(None)
        )
    ).all()
    if unplanned:
        plan_procedures(session=session, care=care, now=now, procedure_ids=list(unplanned))
    log.info("patient %s opted back in; %d texts back", patient_id, len(events))
    return len(events)
