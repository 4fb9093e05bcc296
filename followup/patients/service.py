"""Enrollment and the edits nurses make to a patient or a procedure."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.care import gsm
from followup.care.planner import PlannedText, plan_procedure, plan_step
from followup.care.protocol import CareContext
from followup.care.texts import MAX_BLOOD_THINNER_LENGTH, short_local
from followup.care.timing import zone
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
from followup.errors import NotFound, ValidationError
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
    REPLANNABLE,
    cancel_pending,
    plan_procedures,
    record_opt_out,
    replan_procedure,
)
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100
MAX_PAST_COMPLETION = timedelta(days=30)  # older than this is almost surely a typo
_NO_BLOOD_THINNER = frozenset({"", "none", "no", "n/a"})
_T = TypeVar("_T")


class PatientOptedOut(ValidationError):
    """The phone number belongs to a patient who replied STOP."""


@dataclass(frozen=True)
class EnrollmentForm:
    """What a nurse types at discharge; raw strings, parsed by validate_enrollment."""

    first_name: str
    last_name: str
    phone: str
    procedure: str
    completed_at: str
    timezone: str
    language: str = "en"
    blood_thinner: str | None = None
    consent: bool = False
    external_id: str | None = None


@dataclass(frozen=True)
class Enrollment:
    """A checked enrollment: every field parsed, nothing written yet."""

    first_name: str
    last_name: str
    phone: str  # E.164
    procedure: str
    completed_at: datetime  # UTC
    timezone: str
    language: str
    blood_thinner: str | None
    external_id: str | None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class EnrollmentResult:
    patient: Patient
    procedure: Procedure
    messages: list[Message]


def parse_phone(raw: str, *, region: str) -> str:
    """Parse a national or E.164 mobile number into E.164; raise ValidationError('phone')."""
    text = (raw or "").strip()
    if not text:
        raise ValidationError("phone", "is required")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            "phone", f"is not a phone number ({region} numbers may omit +1)"
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValidationError("phone", f"is not a valid phone number for region {region}")
    if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.FIXED_LINE:
        raise ValidationError("phone", "is a landline; texts need a mobile number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def parse_timezone(raw: str) -> ZoneInfo:
    """Parse an IANA time zone name; raise ValidationError('timezone')."""
    name = (raw or "").strip()
    if not name:
        raise ValidationError("timezone", "is required")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            "timezone", f"{name!r} is not an IANA time zone like America/New_York"
        ) from exc


def parse_local_datetime(raw: str, tz: ZoneInfo, *, field: str) -> datetime:
    """Parse ISO 8601; without an offset it is wall-clock time in `tz`. Return UTC."""
    text = (raw or "").strip()
    if not text:
        raise ValidationError(field, "is required")
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(
            field, f"{text!r} is not an ISO 8601 date and time like 2026-03-07T14:30"
        ) from exc
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    local = value.replace(tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != value:
        raise ValidationError(
            field, f"{text} does not exist in {tz.key} (clocks skip forward then)"
        )
    return utc


class InvalidEnrollment(ValidationError):
    """An enrollment with one or more bad fields: `errors` maps each field to its message.

    `field` and `message` name the first bad field in form order, as a plain
    ValidationError would.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(field, message)
        self.errors = dict(errors)


def validate_enrollment(
    *, form: EnrollmentForm, care: CareContext, region: str, now: datetime
) -> Enrollment:
    """Check every field of an enrollment; raise InvalidEnrollment naming each bad one."""
    errors: dict[str, str] = {}

    def check(field: str, parse: Callable[[], _T]) -> _T | None:
        try:
            return parse()
        except ValidationError as exc:
            errors.setdefault(exc.field or field, exc.message)
            return None

    first = check("first_name", lambda: _parse_name(form.first_name, "first_name"))
    last = check("last_name", lambda: _parse_name(form.last_name, "last_name"))
    phone = check("phone", lambda: parse_phone(form.phone, region=region))
    kind = check("procedure", lambda: _parse_kind(form.procedure, care))
    tz = check("timezone", lambda: parse_timezone(form.timezone))
    completed_at = (
        check("completed_at", lambda: _parse_completed_at(form.completed_at, tz, now))
        if tz is not None
        else None
    )
    language = check("language", lambda: _parse_language(form.language))
    blood_thinner = check("blood_thinner", lambda: _parse_blood_thinner(form.blood_thinner))
    if not form.consent:
        errors["consent"] = "the patient must agree to receive texts"
    if errors:
        raise InvalidEnrollment(errors)
    assert first is not None and last is not None and phone is not None  # noqa: S101
    assert kind is not None and tz is not None and completed_at is not None  # noqa: S101
    assert language is not None and blood_thinner is not None  # noqa: S101
    return Enrollment(
        first_name=first,
        last_name=last,
        phone=phone,
        procedure=kind,
        completed_at=completed_at,
        timezone=tz.key,
        language=language,
        blood_thinner=blood_thinner or None,
        external_id=(form.external_id or "").strip() or None,
    )


def _parse_name(raw: str, field: str) -> str:
    value = (raw or "").strip()
    if not value:
        raise ValidationError(field, "is required")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_NAME_LENGTH} characters")
    return value


def _parse_kind(raw: str, care: CareContext) -> str:
    kind = (raw or "").strip().lower()
    if kind not in PROCEDURE_KINDS or kind not in care.protocols:
        raise ValidationError("procedure", f"must be one of: {', '.join(PROCEDURE_KINDS)}")
    return kind


def _parse_completed_at(raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    completed_at = parse_local_datetime(raw, tz, field="completed_at")
    if completed_at > now:
        raise ValidationError(
            "completed_at", "is in the future; enroll after the procedure is done"
        )
    if now - completed_at > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    return completed_at


def _parse_language(raw: str) -> str:
    language = (raw or "en").strip().lower()
    if language not in LANGUAGES:
        raise ValidationError("language", f"must be one of: {', '.join(LANGUAGES)}")
    return language


def _parse_blood_thinner(raw: str | None) -> str:
    """Return the blood thinner's name, or "" for none."""
    blood_thinner = (raw or "").strip()
    if blood_thinner.lower() in _NO_BLOOD_THINNER:
        return ""
    if len(blood_thinner) > MAX_BLOOD_THINNER_LENGTH:
        raise ValidationError(
            "blood_thinner", f"is longer than {MAX_BLOOD_THINNER_LENGTH} characters"
        )
    bad = gsm.non_gsm_characters(blood_thinner)
    if bad:
        raise ValidationError(
            "blood_thinner", f"has characters a text cannot carry: {''.join(bad)}"
        )
    return blood_thinner


def preview_enrollment(
    *, enrollment: Enrollment, care: CareContext, now: datetime
) -> list[PlannedText]:
    """Plan an enrollment's texts without writing anything."""
    return plan_procedure(
        protocol=care.protocol(enrollment.procedure),
        completed_at=enrollment.completed_at,
        tz=enrollment.tz,
        has_blood_thinner=enrollment.blood_thinner is not None,
        quiet_hours=care.quiet_hours,
        now=now,
    )


def enroll_patient(
    *,
    session: so.Session,
    form: EnrollmentForm,
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
) -> EnrollmentResult:
    """Validate and save a patient, their procedure and its plan (the caller commits once)."""
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    _refuse_duplicates(session=session, enrollment=enrollment)
    patient = Patient(
        first_name=enrollment.first_name,
        last_name=enrollment.last_name,
        phone=enrollment.phone,
        timezone=enrollment.timezone,
        language=enrollment.language,
        sms_consent_at=now,
        consent_recorded_by=actor,
        created_at=now,
    )
    session.add(patient)
    session.flush()
    procedure = Procedure(
        patient_id=patient.id,
        kind=enrollment.procedure,
        status="completed",
        completed_at=enrollment.completed_at,
        blood_thinner=enrollment.blood_thinner,
        external_id=enrollment.external_id,
        created_at=now,
    )
    session.add(procedure)
    session.flush()
    plan_procedures(session=session, care=care, now=now, procedure_ids=[procedure.id])
    # Planning is a bulk UPDATE: a just-flushed object does not see it without a refresh.
    session.refresh(procedure)
    record_audit(
        session=session,
        actor=actor,
        action="patient.enrolled",
        now=now,
        record_type="patient",
        record_id=patient.id,
        detail=f"procedure {procedure.id} ({procedure.kind})",
    )
    log.info("enrolled patient=%s procedure=%s", patient.id, procedure.id)
    return EnrollmentResult(
        patient=patient,
        procedure=procedure,
        messages=messages_for_procedure(session=session, procedure_id=procedure.id),
    )


def _refuse_duplicates(*, session: so.Session, enrollment: Enrollment) -> None:
    same_phone = session.scalars(sa.select(Patient).where(Patient.phone == enrollment.phone)).all()
    if any(p.opted_out_at is not None for p in same_phone):
        raise PatientOptedOut(
            "phone", "this number replied STOP; the patient must text START before enrolling"
        )
    if same_phone:
        duplicate = session.scalar(
            sa.select(Procedure.patient_id).where(
                Procedure.patient_id.in_([p.id for p in same_phone]),
                Procedure.completed_at == enrollment.completed_at,
                Procedure.status != "cancelled",
            )
        )
        if duplicate is not None:
            raise ValidationError(
                "phone", f"already enrolled with the same completion time (patient {duplicate})"
            )
    if enrollment.external_id is not None:
        taken = session.scalar(
            sa.select(Procedure.id).where(Procedure.external_id == enrollment.external_id)
        )
        if taken is not None:
            raise ValidationError("external_id", f"already used by procedure {taken}")


def messages_for_procedure(*, session: so.Session, procedure_id: int) -> list[Message]:
    """Return a procedure's texts in due order."""
    return list(
        session.scalars(
            sa.select(Message)
            .where(Message.procedure_id == procedure_id)
            .order_by(Message.due_at, Message.id)
        )
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


def change_completion_time(
    *,
    session: so.Session,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
    actor: str,
) -> list[Message]:
    """Correct when a procedure finished and re-plan its unsent texts."""
    procedure = session.get(Procedure, procedure_id)
    if procedure is None:
        raise NotFound(f"no procedure {procedure_id}")
    patient = procedure.patient
    value = _new_completion_time(procedure, completed_at, ZoneInfo(patient.timezone), now)
    previous = procedure.completed_at
    procedure.completed_at = value
    messages = replan_procedure(
        session=session, procedure=procedure, patient=patient, care=care, now=now
    )
    record_audit(
        session=session,
        actor=actor,
        action="procedure.completion_changed",
        now=now,
        record_type="procedure",
        record_id=procedure.id,
        detail=f"from {previous.isoformat() if previous else '-'} to {value.isoformat()}",
    )
    return messages


def _new_completion_time(procedure: Procedure, raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    """Parse and check a corrected completion time for `procedure`."""
    value = parse_local_datetime(raw, tz, field="completed_at")
    if value > now:
        raise ValidationError("completed_at", "is in the future")
    if now - value > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    if procedure.status == "cancelled":
        raise ValidationError("procedure", "is cancelled")
    return value


def cancel_procedure(*, session: so.Session, procedure_id: int, now: datetime, actor: str) -> int:
    """Cancel a procedure and its pending texts; return how many texts were cancelled."""
    procedure = session.get(Procedure, procedure_id)
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


# --- what the web app shows: every time already in the patient's local zone ----------------

PAGE_SIZE = 25
STEP_LABELS = {
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
    return STEP_LABELS.get(step, step.replace("-", " ").capitalize())


def consent_wording(clinic_name: str) -> str:
    """The words read to (or shown to) the patient before they agree to texts."""
    return (
        f"{clinic_name} will send you a few text messages about your recovery after your "
        "procedure, to the mobile number you gave us. Message and data rates may apply. "
        "Reply STOP at any time to end them, or HELP for help."
    )


@dataclass(frozen=True)
class PreviewRow:
    """One text of a plan as staff see it before anything is saved."""

    step: str
    label: str
    status: str  # pending or expired
    due_local: str
    nominal_local: str
    expires_local: str
    moved_by_quiet_hours: bool
    body: str


@dataclass(frozen=True)
class EnrollmentPreview:
    enrollment: Enrollment
    completed_local: str
    rows: list[PreviewRow]

    @property
    def expired_count(self) -> int:
        return sum(1 for row in self.rows if row.status == EXPIRED)


def preview_new_enrollment(
    *, session: so.Session, form: EnrollmentForm, care: CareContext, region: str, now: datetime
) -> EnrollmentPreview:
    """Check an enrollment and show every text it would send, writing nothing.

    Raises InvalidEnrollment for bad fields, or ValidationError('phone') for a number that
    opted out or is already enrolled with the same completion time.
    """
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    _refuse_duplicates(session=session, enrollment=enrollment)
    tz = enrollment.tz
    rows = []
    for planned in preview_enrollment(enrollment=enrollment, care=care, now=now):
        rows.append(
            PreviewRow(
                step=planned.step,
                label=step_label(planned.step),
                status=planned.status,
                due_local=short_local(planned.due_at, tz),
                nominal_local=short_local(planned.nominal_at, tz),
                expires_local=short_local(planned.expires_at, tz),
                moved_by_quiet_hours=planned.due_at > max(planned.nominal_at, now),
                body=care.render_text(
                    kind=enrollment.procedure,
                    step_key=planned.step,
                    language=enrollment.language,
                    tz=tz,
                    completed_at=enrollment.completed_at,
                    blood_thinner=enrollment.blood_thinner,
                ),
            )
        )
    return EnrollmentPreview(
        enrollment=enrollment,
        completed_local=short_local(enrollment.completed_at, tz),
        rows=rows,
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


def patient_detail(*, session: so.Session, patient_id: int, care: CareContext) -> PatientDetail:
    """Return a patient's details and a timeline of every text and reply, in local time."""
    patient, schedule = patient_schedule(session=session, patient_id=patient_id)
    tz = zone(patient.timezone)
    procedures = [
        ProcedureView(
            id=proc.id,
            kind=proc.kind,
            status=proc.status,
            completed_local=short_local(proc.completed_at, tz) if proc.completed_at else "-",
            completed_input=(
                f"{proc.completed_at.astimezone(tz):%Y-%m-%dT%H:%M}" if proc.completed_at else ""
            ),
            blood_thinner=proc.blood_thinner,
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
    timeline.sort(key=lambda entry: entry.at)
    return PatientDetail(
        patient=patient,
        phone_display=phonenumbers.format_number(
            phonenumbers.parse(patient.phone), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
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
    elif status == SENDING:
        details.append("being handed to the SMS provider")
    if message.sent_at is not None:
        details.append(f"sent {short_local(message.sent_at, tz)}")
    if status == SENT:
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
    if body is None and procedure.completed_at is not None and status in (PENDING, SENDING):
        try:
            body = care.render_text(
                kind=procedure.kind,
                step_key=message.step,
                language=patient.language,
                tz=tz,
                completed_at=procedure.completed_at,
                blood_thinner=procedure.blood_thinner,
            )
        except KeyError:  # the step left the protocol; the dispatcher will cancel it
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


# --- the edits nurses make on the patient page ---------------------------------------------


def _patient_procedure(session: so.Session, patient_id: int, procedure_id: int) -> Procedure:
    procedure = session.get(Procedure, procedure_id)
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
    procedure_id: int
    completed_input: str
    current_local: str
    new_local: str
    rows: list[CompletionRow]


def preview_completion_change(
    *,
    session: so.Session,
    patient_id: int,
    procedure_id: int,
    completed_at: str,
    care: CareContext,
    now: datetime,
) -> CompletionPreview:
    """Show how a corrected completion time would re-plan the texts, writing nothing."""
    procedure = _patient_procedure(session, patient_id, procedure_id)
    patient = procedure.patient
    tz = zone(patient.timezone)
    value = _new_completion_time(procedure, completed_at, tz, now)
    existing = {
        m.step: m for m in messages_for_procedure(session=session, procedure_id=procedure_id)
    }
    replans = patient.can_receive_texts() and procedure.status == "completed"
    rows = []
    for step in care.protocol(procedure.kind).steps:
        if not step.applies(has_blood_thinner=procedure.blood_thinner is not None):
            continue
        message = existing.get(step.key)
        current = short_local(message.due_at, tz) if message is not None else "not planned"
        if not replans:
            rows.append(
                CompletionRow(step_label(step.key), current, current, "unchanged: no texts")
            )
            continue
        if message is not None and (message.status not in REPLANNABLE or message.attempts > 0):
            rows.append(
                CompletionRow(
                    step_label(step.key), current, current, f"unchanged: {message.status}"
                )
            )
            continue
        planned = plan_step(
            step=step, completed_at=value, tz=tz, quiet_hours=care.quiet_hours, now=now
        )
        note = "will be sent" if planned.status == PENDING else "expired: its window has passed"
        rows.append(
            CompletionRow(step_label(step.key), current, short_local(planned.due_at, tz), note)
        )
    return CompletionPreview(
        procedure_id=procedure.id,
        completed_input=f"{value.astimezone(tz):%Y-%m-%dT%H:%M}",
        current_local=short_local(procedure.completed_at, tz) if procedure.completed_at else "-",
        new_local=short_local(value, tz),
        rows=rows,
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
    """Correct one of this patient's procedures' completion time and re-plan its texts."""
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
    value = _parse_language(language)
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
