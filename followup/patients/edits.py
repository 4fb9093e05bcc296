"""The changes nurses make after enrollment: completion, reschedule and cancellation (each
re-planning the unsent texts, with a preview), phone, language and opt-out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.care.protocol import CareContext
from followup.care.texts import short_local
from followup.care.timing import zone
from followup.errors import NotFound, ValidationError
from followup.messaging.models import (
    PENDING,
    Message,
)
from followup.messaging.outbox import cancel_pending, locked_procedure, record_opt_out
from followup.messaging.replan import ProcedureTimes, decide_replan, replan_procedure
from followup.messaging.text_state import procedure_messages, request_facts
from followup.patients.models import Patient, Procedure
from followup.patients.pages import STAFF_OPT_OUT_REASON, get_patient, local_with_clinic, step_label
from followup.patients.sent import sent_too_early, sent_with_old_value
from followup.patients.validation import (
    MAX_PAST_COMPLETION,
    parse_language,
    parse_local_datetime,
    parse_phone,
    parse_scheduled_at,
    parse_stop_date,
)


def change_completion_time(
    *,
    session: so.Session,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
    actor: str,
) -> list[Message]:
    """Record when a procedure finished and re-plan its unsent texts.

    For a booked procedure this is "Procedure finished": what is left of the texts before
    it is cancelled and the texts after it are planned. For a completed one it corrects
    the time.
    """
    procedure = locked_procedure(session, procedure_id)
    if procedure is None:
        raise NotFound(f"no procedure {procedure_id}")
    patient = procedure.patient
    value = _new_completion_time(procedure, completed_at, zone(patient.timezone), now)
    previous = procedure.completed_at
    was_booked = procedure.status == "scheduled"
    procedure.status = "completed"
    procedure.completed_at = value
    messages = replan_procedure(
        session=session, procedure=procedure, patient=patient, care=care, now=now
    )
    record_audit(
        session=session,
        actor=actor,
        action="procedure.completed" if was_booked else "procedure.completion_changed",
        now=now,
        record_type="procedure",
        record_id=procedure.id,
        detail=(
            f"finished {value.isoformat()}"
            if was_booked
            else f"from {previous.isoformat() if previous else '-'} to {value.isoformat()}"
        ),
    )
    return messages


def _new_completion_time(procedure: Procedure, raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    """Parse and check a completion time for `procedure` (booked or already done)."""
    if procedure.status == "cancelled":
        raise ValidationError("procedure", "is cancelled")
    value = parse_local_datetime(raw, tz, field="completed_at")
    if value > now:
        raise ValidationError("completed_at", "is in the future")
    if now - value > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    return value


def complete_procedure(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
    actor: str,
) -> list[Message]:
    """Record that a booked procedure finished: cancel what is left of the texts before it
    and plan the texts after it (the restart never before 48 h after this time)."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    if procedure.status != "scheduled":
        raise ValidationError(
            "procedure", f"is {procedure.status}, not booked; correct its completion time instead"
        )
    return change_completion_time(
        session=session,
        procedure_id=procedure_id,
        completed_at=completed_at,
        care=care,
        now=now,
        actor=actor,
    )


def _new_schedule(
    procedure: Procedure, raw: str, stop_raw: str | None, tz: ZoneInfo, now: datetime
) -> tuple[datetime, date | None]:
    """Parse and check a new booked time (and stop date) for a booked procedure."""
    if procedure.status != "scheduled":
        raise ValidationError("procedure", f"is {procedure.status}, not booked")
    value = parse_scheduled_at(raw, tz, now)
    stop_text = (stop_raw or "").strip() or (
        procedure.stop_blood_thinner_on.isoformat() if procedure.stop_blood_thinner_on else ""
    )
    stop_on = parse_stop_date(
        stop_text,
        takes=procedure.blood_thinner is not None,
        booked=True,
        scheduled_at=value,
        tz=tz,
    )
    return value, stop_on


def reschedule_procedure(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    scheduled_at: str,
    care: CareContext,
    now: datetime,
    actor: str,
    stop_blood_thinner_on: str | None = None,
) -> list[Message]:
    """Move a booked procedure (and, if given, its blood-thinner stop date); re-plan the
    texts before it that are not sent yet."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    patient = procedure.patient
    value, stop_on = _new_schedule(
        procedure, scheduled_at, stop_blood_thinner_on, zone(patient.timezone), now
    )
    previous = procedure.scheduled_at
    moved = _moved(procedure, value, stop_on)
    procedure.scheduled_at = value
    procedure.stop_blood_thinner_on = stop_on
    messages = replan_procedure(
        session=session, procedure=procedure, patient=patient, care=care, now=now, moved=moved
    )
    record_audit(
        session=session,
        actor=actor,
        action="procedure.rescheduled",
        now=now,
        record_type="procedure",
        record_id=procedure.id,
        detail=f"from {previous.isoformat() if previous else '-'} to {value.isoformat()}"
        + (f"; stop blood thinner on {stop_on.isoformat()}" if stop_on else ""),
    )
    return messages


def _moved(procedure: Procedure, scheduled_at: datetime, stop_on: date | None) -> set[str]:
    """The anchors a reschedule changes: the booked time, the blood-thinner stop date."""
    moved = set()
    if procedure.scheduled_at != scheduled_at:
        moved.add("scheduled")
    if procedure.stop_blood_thinner_on != stop_on:
        moved.add("stop")
    return moved


def cancel_procedure(*, session: so.Session, procedure_id: int, now: datetime, actor: str) -> int:
    """Cancel a procedure and its pending texts; return how many texts were cancelled."""
    procedure = locked_procedure(session, procedure_id)
    if procedure is None:
        raise NotFound(f"no procedure {procedure_id}")
    procedure.status = "cancelled"
    count = cancel_pending(
        session=session, now=now, reason="procedure cancelled", procedure_id=procedure_id
    )
    record_audit(
        session=session,
        actor=actor,
        action="procedure.cancelled",
        now=now,
        record_type="procedure",
        record_id=procedure_id,
        detail=f"{count} pending texts cancelled",
    )
    return count


# --- the edits nurses make on the patient page ---------------------------------------------


def _patient_procedure(session: so.Session, patient_id: int, procedure_id: int) -> Procedure:
    procedure = locked_procedure(session, procedure_id)
    if procedure is None or procedure.patient_id != patient_id:
        raise NotFound(f"no procedure {procedure_id} for patient {patient_id}")
    return procedure


@dataclass(frozen=True)
class CompletionRow:
    label: str
    current_local: str
    new_local: str
    note: str


@dataclass(frozen=True)
class CompletionPreview:
    """A change to a procedure's time, shown with the re-planned texts before it is made."""

    procedure_id: int
    completed_input: str  # the new time to confirm, with its offset (never ambiguous)
    current_local: str
    new_local: str
    rows: list[CompletionRow]
    action: str = "completion"  # "completion" (finished / corrected) or "reschedule"
    title: str = "Confirm the new completion time"
    stop_input: str = ""


def _change_rows(
    *,
    session: so.Session,
    procedure: Procedure,
    times: ProcedureTimes,
    care: CareContext,
    now: datetime,
) -> list[CompletionRow]:
    """What re-planning would do to each text, in the patient's local time; writes nothing."""
    patient = procedure.patient
    tz = zone(patient.timezone)
    existing = procedure_messages(session=session, procedure_id=procedure.id)

    def current(step: str) -> str:
        message = existing.get(step)
        return short_local(message.due_at, tz) if message is not None else "not planned"

    receiving = patient.can_receive_texts()
    maybe_reached, refused = request_facts(session, existing)
    moved = (
        _moved(procedure, times.scheduled_at, times.stop_blood_thinner_on)
        if times.scheduled_at is not None and procedure.status == "scheduled"
        else set()
    )
    decisions, _, _ = decide_replan(
        times=times,
        existing=existing,
        care=care,
        kind=procedure.kind,
        tz=tz,
        now=now,
        intro_step=procedure.intro_step,
        maybe_reached=maybe_reached,
        refused=refused,
        moved=moved,
    )
    rows = []
    for decision in decisions:
        label, now_at = step_label(decision.step), current(decision.step)
        if decision.action == "cancel":
            rows.append(CompletionRow(label, now_at, "-", f"cancelled: {decision.reason}"))
        elif decision.action == "keep":
            message = existing.get(decision.step)
            warning = sent_too_early(
                message, care=care, kind=procedure.kind, tz=tz, completed_at=times.completed_at
            ) or sent_with_old_value(message, care=care, kind=procedure.kind, moved=moved)
            note = warning or f"unchanged: {decision.reason}"
            rows.append(CompletionRow(label, now_at, now_at, note))
        elif decision.action == "close":
            note = "being sent now; if it does not reach the patient, it is not sent again"
            rows.append(CompletionRow(label, now_at, "-", f"{note}: {decision.reason}"))
        elif decision.action == "resend" and decision.planned is not None:
            note = (
                f"{decision.reason}: sent again with the new one"
                if receiving
                else f"{decision.reason}: sent again with the new one if the patient texts START"
            )
            new_at = short_local(decision.planned.due_at, tz)
            rows.append(CompletionRow(label, now_at, new_at, note))
        elif decision.action == "retime" and decision.planned is not None:
            planned = decision.planned
            note = "being sent now; if it does not reach the patient, " + (
                "it goes at the new time" if planned.status == PENDING else "it is not sent again"
            )
            rows.append(CompletionRow(label, now_at, short_local(planned.due_at, tz), note))
        elif decision.planned is not None and not receiving:
            note = (
                "not sent: its window has passed"
                if decision.planned.status != PENDING
                else "planned if the patient texts START"
                if patient.opted_out_at is not None
                else "not planned: no SMS consent on record"
            )
            rows.append(CompletionRow(label, now_at, now_at, note))
        elif decision.planned is not None:
            planned = decision.planned
            note = "will be sent" if planned.status == PENDING else "expired: its window has passed"
            rows.append(CompletionRow(label, now_at, short_local(planned.due_at, tz), note))
    return rows


def _input_value(value: datetime, tz: ZoneInfo) -> str:
    """A time to carry through a confirm form: local, with its offset (never ambiguous)."""
    return value.astimezone(tz).isoformat(timespec="minutes")


def preview_completion_change(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
    clinic_timezone: str | None = None,
) -> CompletionPreview:
    """Show how a completion time (finished, or corrected) would re-plan the texts."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    tz = zone(procedure.patient.timezone)
    value = _new_completion_time(procedure, completed_at, tz, now)
    times = replace(ProcedureTimes.of(procedure), status="completed", completed_at=value)
    finished = procedure.status == "scheduled"
    return CompletionPreview(
        procedure_id=procedure.id,
        completed_input=_input_value(value, tz),
        current_local=(
            "booked " + local_with_clinic(procedure.scheduled_at, tz, clinic_timezone)
            if finished and procedure.scheduled_at
            else short_local(procedure.completed_at, tz)
            if procedure.completed_at
            else "-"
        ),
        new_local=local_with_clinic(value, tz, clinic_timezone),
        rows=_change_rows(session=session, procedure=procedure, times=times, care=care, now=now),
        title=(
            "Confirm the procedure is finished" if finished else "Confirm the new completion time"
        ),
    )


def preview_reschedule(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    scheduled_at: str,
    care: CareContext,
    now: datetime,
    stop_blood_thinner_on: str | None = None,
    clinic_timezone: str | None = None,
) -> CompletionPreview:
    """Show how a new booked time would re-plan the texts before the procedure."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    tz = zone(procedure.patient.timezone)
    value, stop_on = _new_schedule(procedure, scheduled_at, stop_blood_thinner_on, tz, now)
    times = replace(ProcedureTimes.of(procedure), scheduled_at=value, stop_blood_thinner_on=stop_on)
    return CompletionPreview(
        procedure_id=procedure.id,
        completed_input=_input_value(value, tz),
        current_local=local_with_clinic(procedure.scheduled_at, tz, clinic_timezone)
        if procedure.scheduled_at
        else "-",
        new_local=local_with_clinic(value, tz, clinic_timezone),
        rows=_change_rows(session=session, procedure=procedure, times=times, care=care, now=now),
        action="reschedule",
        title="Confirm the new booked time",
        stop_input=stop_on.isoformat() if stop_on else "",
    )


def correct_completion_time(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
    actor: str,
) -> list[Message]:
    """Record or correct one of this patient's procedures' completion time; re-plan."""
    _patient_procedure(session, patient_id, procedure_id)
    return change_completion_time(
        session=session,
        procedure_id=procedure_id,
        completed_at=completed_at,
        care=care,
        now=now,
        actor=actor,
    )


def cancel_patient_procedure(
    *, session: so.Session, patient_id: int, procedure_id: int, now: datetime, actor: str
) -> int:
    """Cancel one of this patient's procedures and its pending texts; return how many."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    if procedure.status == "cancelled":
        raise ValidationError("procedure", "is already cancelled")
    return cancel_procedure(session=session, procedure_id=procedure_id, now=now, actor=actor)


def change_phone(
    *, session: so.Session, patient_id: int, phone: str, region: str, now: datetime, actor: str
) -> Patient:
    """Give a patient a new mobile number; the next text goes to it."""
    patient = get_patient(session=session, patient_id=patient_id)
    number = parse_phone(phone, region=region)
    if number == patient.phone:
        raise ValidationError("phone", "is already this patient's number")
    opted_out = session.scalar(
        sa.select(Patient.id).where(
            Patient.phone == number, Patient.id != patient_id, Patient.opted_out_at.is_not(None)
        )
    )
    if opted_out is not None:
        raise ValidationError(
            "phone", "this number replied STOP; the patient must text START first"
        )
    patient.phone = number
    record_audit(
        session=session,
        actor=actor,
        action="patient.phone_changed",
        now=now,
        record_type="patient",
        record_id=patient.id,
        detail="used from the next text on",
    )
    return patient


def change_language(
    *, session: so.Session, patient_id: int, language: str, now: datetime, actor: str
) -> Patient:
    """Change the language of a patient's texts (those not yet sent)."""
    patient = get_patient(session=session, patient_id=patient_id)
    value = parse_language(language)
    if value == patient.language:
        raise ValidationError("language", "is already this patient's language")
    previous = patient.language
    patient.language = value
    record_audit(
        session=session,
        actor=actor,
        action="patient.language_changed",
        now=now,
        record_type="patient",
        record_id=patient.id,
        detail=f"from {previous} to {value}",
    )
    return patient


def record_staff_opt_out(*, session: so.Session, patient_id: int, now: datetime, actor: str) -> int:
    """Record an opt-out the patient gave by phone; cancel their pending texts."""
    patient = get_patient(session=session, patient_id=patient_id)
    if patient.opted_out_at is not None:
        raise ValidationError("opt_out", "the patient has already opted out")
    count = record_opt_out(
        session=session, patient_id=patient_id, now=now, reason=STAFF_OPT_OUT_REASON
    )
    record_audit(
        session=session,
        actor=actor,
        action="patient.opted_out",
        now=now,
        record_type="patient",
        record_id=patient.id,
        detail=f"by phone call; {count} pending texts cancelled",
    )
    return count
