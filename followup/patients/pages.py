"""What the web app shows of patients: every time already in the patient's local zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext, is_correction, step_key
from followup.care.texts import short_local
from followup.care.timing import (
    zone,
)
from followup.errors import NotFound, ValidationError
from followup.inbox.service import handled_notes
from followup.messaging.errors import describe_error_code
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    UNDELIVERED,
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.messaging.outbox import (
    render_message,
)
from followup.patients.models import Patient, Procedure
from followup.patients.validation import (
    parse_local_datetime,
    parse_timezone,
)


def get_patient(*, session: so.Session, patient_id: int) -> Patient:
    """Return a patient or raise NotFound."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(f"no patient {patient_id}")
    return patient


def patient_schedule(
    *, session: so.Session, patient_id: int
) -> tuple[Patient, list[tuple[Procedure, Message]]]:
    """Return a patient and every text of theirs, with its procedure, in due order."""
    patient = get_patient(session=session, patient_id=patient_id)
    rows = session.execute(
        sa.select(Procedure, Message)
        .join(Message, Message.procedure_id == Procedure.id)
        .where(Procedure.patient_id == patient_id)
        .order_by(Message.due_at, Message.id)
    ).all()
    return patient, [(proc, msg) for proc, msg in rows]


# --- what the web app shows: every time already in the patient's local zone ----------------

PAGE_SIZE = 25
STEP_LABELS = {
    "welcome": "Welcome",
    "stop-blood-thinner": "Stop the blood thinner",
    "day-before": "The day before",
    "no-driving": "No driving today",
    "soreness": "Soreness is normal",
    "blood-thinner-restart": "Restart the blood thinner",
    "warning-signs": "Warning signs",
    "pain-check": "Pain check",
}
_PHONE_LIKE_RE = re.compile(r"^[\d\s()+.-]+$")  # a phone number, whole or in part
STAFF_OPT_OUT_REASON = "opted out by phone call, recorded by staff"


def step_label(step: str) -> str:
    """A step's name for staff screens."""
    if is_correction(step):
        return f"{step_label(step_key(step))} (correction)"
    return STEP_LABELS.get(step, step.replace("-", " ").capitalize())


def consent_wording(clinic_name: str) -> str:
    """The words read to (or shown to) the patient before they agree to texts."""
    return (
        f"{clinic_name} will send you a few text messages about your recovery after your "
        "procedure, to the mobile number you gave us. Message and data rates may apply. "
        "Reply STOP at any time to end them, or HELP for help."
    )


@dataclass(frozen=True)
class PatientRow:
    id: int
    name: str
    phone_last4: str
    enrolled_local: str
    opted_out: bool


@dataclass(frozen=True)
class PatientPage:
    rows: list[PatientRow]
    query: str
    page: int
    pages: int
    total: int


def patient_search_condition(query: str) -> sa.ColumnElement[bool] | None:
    """Who a search means: the last 4 digits of a phone typed whole or in part, else name
    words (each must appear in the first or last name). None for an empty search."""
    text = (query or "").strip()
    if not text:
        return None
    digits = "".join(c for c in text if c.isdigit())
    if _PHONE_LIKE_RE.match(text) and len(digits) >= 4:
        return Patient.phone.endswith(digits[-4:])
    return sa.and_(
        *(
            sa.or_(
                Patient.first_name.icontains(word, autoescape=True),
                Patient.last_name.icontains(word, autoescape=True),
            )
            for word in text.split()[:5]
        )
    )


def search_patients(
    *,
    session: so.Session,
    query: str,
    page: int,
    per_page: int = PAGE_SIZE,
    only: sa.ColumnElement[bool] | None = None,
) -> PatientPage:
    """Find patients by name or the last 4 digits of their phone, newest first; `only`
    narrows the list further (the needs-attention filters)."""
    text = (query or "").strip()
    statement = sa.select(Patient)
    condition = patient_search_condition(text)
    if condition is not None:
        statement = statement.where(condition)
    if only is not None:
        statement = statement.where(only)
    total = session.scalar(sa.select(sa.func.count()).select_from(statement.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    patients = session.scalars(
        statement.order_by(Patient.created_at.desc(), Patient.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    rows = [
        PatientRow(
            id=p.id,
            name=f"{p.last_name}, {p.first_name}",
            phone_last4=p.phone[-4:],
            enrolled_local=short_local(p.created_at, zone(p.timezone)),
            opted_out=p.opted_out_at is not None,
        )
        for p in patients
    ]
    return PatientPage(rows=rows, query=text, page=page, pages=pages, total=total)


@dataclass(frozen=True)
class ProcedureView:
    id: int
    kind: str
    status: str
    completed_local: str
    completed_input: str  # the value of a datetime-local input: 2026-03-06T13:30
    blood_thinner: str | None
    scheduled_local: str = "-"
    scheduled_input: str = ""
    stop_date_local: str | None = None
    stop_date_input: str = ""
    takes_blood_thinner: bool | None = None


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime  # UTC, for ordering only
    kind: str  # "text" or "reply"
    title: str
    status: str
    when_local: str
    details: list[str]
    body: str | None
    attention: bool = False


@dataclass(frozen=True)
class PatientDetail:
    patient: Patient
    phone_display: str
    consent_local: str | None
    opted_out_local: str | None
    procedures: list[ProcedureView]
    timeline: list[TimelineEntry]


def patient_detail(
    *,
    session: so.Session,
    patient_id: int,
    care: CareContext,
    clinic_timezone: str | None = None,
) -> PatientDetail:
    """Return a patient's details and a timeline of every text and reply, in local time
    (with the clinic's time beside the procedure's when the zones differ)."""
    patient, schedule = patient_schedule(session=session, patient_id=patient_id)
    tz = zone(patient.timezone)
    procedures = [
        ProcedureView(
            id=proc.id,
            kind=proc.kind,
            status=proc.status,
            completed_local=(
                local_with_clinic(proc.completed_at, tz, clinic_timezone)
                if proc.completed_at
                else "-"
            ),
            completed_input=(
                f"{proc.completed_at.astimezone(tz):%Y-%m-%dT%H:%M}" if proc.completed_at else ""
            ),
            blood_thinner=proc.blood_thinner,
            scheduled_local=(
                local_with_clinic(proc.scheduled_at, tz, clinic_timezone)
                if proc.scheduled_at
                else "-"
            ),
            scheduled_input=(
                f"{proc.scheduled_at.astimezone(tz):%Y-%m-%dT%H:%M}" if proc.scheduled_at else ""
            ),
            stop_date_local=(
                f"{proc.stop_blood_thinner_on:%a %Y-%m-%d}" if proc.stop_blood_thinner_on else None
            ),
            stop_date_input=(
                proc.stop_blood_thinner_on.isoformat() if proc.stop_blood_thinner_on else ""
            ),
            takes_blood_thinner=proc.takes_blood_thinner,
        )
        for proc in session.scalars(
            sa.select(Procedure)
            .where(Procedure.patient_id == patient_id)
            .order_by(Procedure.id.desc())
        )
    ]
    reasons = _final_reasons(session, [message.id for _, message in schedule])
    timeline = [
        _text_entry(procedure, message, tz, patient, care, reasons.get(message.id))
        for procedure, message in schedule
    ]
    replies = session.scalars(
        sa.select(InboundMessage)
        .where(InboundMessage.patient_id == patient_id)
        .order_by(InboundMessage.received_at)
    ).all()
    for reply in replies:
        details = [f"understood as: {reply.kind}"]
        if reply.triage_reason:
            details.append(f"triage: {reply.triage} ({reply.triage_reason})")
        if reply.pain_score is not None:
            details.append(f"pain score {reply.pain_score} of 10")
        if reply.answer_body:
            details.append(f"answered automatically: {reply.answer_body}")
        if reply.needs_attention and reply.handled_at is None:
            details.append("needs a nurse's attention")
        elif reply.handled_at is not None:
            details.append(
                f"handled {short_local(reply.handled_at, tz)} by {reply.handled_by}: "
                f"{reply.handled_note}"
            )
        timeline.append(
            TimelineEntry(
                at=reply.received_at,
                kind="reply",
                title="Reply from the patient",
                status="received",
                when_local=short_local(reply.received_at, tz),
                details=details,
                body=reply.body,
                attention=reply.needs_attention and reply.handled_at is None,
            )
        )
    # The notes written when handling this patient's queue items (replies, texts, flags).
    for note in handled_notes(session=session, patient_id=patient_id):
        timeline.append(
            TimelineEntry(
                at=note.at,
                kind="note",
                title="Handled by the care team",
                status="handled",
                when_local=short_local(note.at, tz),
                details=[f"by {note.handled_by}", f"about: {note.reason}"],
                body=note.note,
            )
        )
    timeline.sort(key=lambda entry: entry.at)
    return PatientDetail(
        patient=patient,
        phone_display=phonenumbers.format_number(
            phonenumbers.parse(patient.phone), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        if patient.phone
        else "(removed)",  # the retention purge empties it
        consent_local=short_local(patient.sms_consent_at, tz) if patient.sms_consent_at else None,
        opted_out_local=short_local(patient.opted_out_at, tz) if patient.opted_out_at else None,
        procedures=procedures,
        timeline=timeline,
    )


def _final_reasons(session: so.Session, message_ids: list[int]) -> dict[int, str]:
    """The recorded reason each cancelled or expired text ended, by message id."""
    if not message_ids:
        return {}
    events = session.execute(
        sa.select(MessageEvent.message_id, MessageEvent.detail)
        .where(
            MessageEvent.message_id.in_(message_ids),
            MessageEvent.kind.in_((CANCELLED, EXPIRED)),
        )
        .order_by(MessageEvent.at, MessageEvent.id)
    ).all()
    return {message_id: detail for message_id, detail in events if detail}


def explain_error(code: str | None, message: str | None) -> str:
    """Say in words why a text failed, from the provider's code and message."""
    words = describe_error_code(int(code)) if code and code.isdigit() else None
    if words and code:
        return f"{words} (Twilio error {code})"
    if message and code:
        return f"{message} (error {code})"
    return message or (f"error {code}" if code else "no reason was given")


def _text_entry(
    procedure: Procedure,
    message: Message,
    tz: ZoneInfo,
    patient: Patient,
    care: CareContext,
    reason: str | None,
) -> TimelineEntry:
    details: list[str] = []
    status = message.status
    if status == PENDING:
        details.append(f"will be sent {short_local(message.due_at, tz)}")
        details.append(f"not after {short_local(message.expires_at, tz)}")
    elif status == SENDING and message.lease_owner is None and message.handed_at is not None:
        # Held by the reaper: the provider cannot tell; a person settles it (Needs attention).
        details.append("outcome unknown: the SMS provider cannot tell whether it was sent")
        details.append("waiting for the care team (Needs attention)")
    elif status == SENDING:
        details.append("being handed to the SMS provider")
    if message.sent_at is not None:
        details.append(f"sent {short_local(message.sent_at, tz)}")
    if status == SENT and message.provider_sid is None:
        details.append("recorded as sent by the care team (no delivery report)")
    elif status == SENT:
        details.append("waiting for the carrier's delivery report")
    if message.delivered_at is not None:
        details.append(f"delivered {short_local(message.delivered_at, tz)}")
    if status in (FAILED, UNDELIVERED):
        details.append(
            ("failed: " if status == FAILED else "not delivered: ")
            + explain_error(message.error_code, message.error_message)
        )
    if status == CANCELLED:
        details.append(f"cancelled: {reason or 'no reason recorded'}")
    if status == EXPIRED:
        details.append(
            f"expired: {reason or 'its window closed'} "
            f"(window closed {short_local(message.expires_at, tz)})"
        )
    body = message.body
    if body is None and status in (PENDING, SENDING):
        try:
            body = render_message(
                care, procedure=procedure, language=patient.language, tz=tz, step=message.step
            )
        except (KeyError, ValueError):  # the step left the protocol, or lacks its time
            body = None
    at = message.sent_at or message.due_at
    return TimelineEntry(
        at=at,
        kind="text",
        title=step_label(message.step),
        status=status,
        when_local=short_local(at, tz),
        details=details,
        body=body,
        attention=status in (FAILED, UNDELIVERED),
    )


def local_with_clinic(instant: datetime, tz: ZoneInfo, clinic_timezone: str | None) -> str:
    """A time in the patient's zone, and in the clinic's too when they differ:
    "Thu 2026-03-12 09:00 CDT (10:00 EDT at the clinic)"."""
    text = short_local(instant, tz)
    if clinic_timezone and clinic_timezone != tz.key:
        clinic_local = instant.astimezone(zone(clinic_timezone))
        same_day = clinic_local.date() == instant.astimezone(tz).date()
        when = f"{clinic_local:%H:%M}" if same_day else f"{clinic_local:%a %Y-%m-%d %H:%M}"
        text += f" ({when} {clinic_local.tzname()} at the clinic)"
    return text


def describe_input_time(raw: str, timezone: str, *, clinic_timezone: str | None) -> str | None:
    """A typed local time as staff should read it back (with the clinic's time when the
    zones differ); None when it does not parse yet."""
    try:
        tz = parse_timezone(timezone)
        value = parse_local_datetime(raw, tz, field="time")
    except ValidationError:
        return None
    return local_with_clinic(value, tz, clinic_timezone)
