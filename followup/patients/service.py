"""Enrollment and the edits nurses make to a patient or a procedure."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.care import gsm
from followup.care.planner import PlannedText, plan_procedure
from followup.care.protocol import CareContext
from followup.care.texts import MAX_BLOOD_THINNER_LENGTH
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
from followup.errors import NotFound, ValidationError
from followup.messaging.models import Message
from followup.messaging.service import cancel_pending, plan_procedures, replan_procedure
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100
MAX_PAST_COMPLETION = timedelta(days=30)  # older than this is almost surely a typo
_NO_BLOOD_THINNER = frozenset({"", "none", "no", "n/a"})


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


def validate_enrollment(
    *, form: EnrollmentForm, care: CareContext, region: str, now: datetime
) -> Enrollment:
    """Check every field of an enrollment; raise ValidationError naming the first bad one."""
    first = (form.first_name or "").strip()
    last = (form.last_name or "").strip()
    for name, value in (("first_name", first), ("last_name", last)):
        if not value:
            raise ValidationError(name, "is required")
        if len(value) > MAX_NAME_LENGTH:
            raise ValidationError(name, f"is longer than {MAX_NAME_LENGTH} characters")
    phone = parse_phone(form.phone, region=region)
    kind = (form.procedure or "").strip().lower()
    if kind not in PROCEDURE_KINDS or kind not in care.protocols:
        raise ValidationError("procedure", f"must be one of: {', '.join(PROCEDURE_KINDS)}")
    tz = parse_timezone(form.timezone)
    completed_at = parse_local_datetime(form.completed_at, tz, field="completed_at")
    if completed_at > now:
        raise ValidationError(
            "completed_at", "is in the future; enroll after the procedure is done"
        )
    if now - completed_at > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    language = (form.language or "en").strip().lower()
    if language not in LANGUAGES:
        raise ValidationError("language", f"must be one of: {', '.join(LANGUAGES)}")
    blood_thinner = (form.blood_thinner or "").strip()
    if blood_thinner.lower() in _NO_BLOOD_THINNER:
        blood_thinner = ""
    if len(blood_thinner) > MAX_BLOOD_THINNER_LENGTH:
        raise ValidationError(
            "blood_thinner", f"is longer than {MAX_BLOOD_THINNER_LENGTH} characters"
        )
    bad = gsm.non_gsm_characters(blood_thinner)
    if bad:
        raise ValidationError(
            "blood_thinner", f"has characters a text cannot carry: {''.join(bad)}"
        )
    if not form.consent:
        raise ValidationError("consent", "the patient must agree to receive texts")
    external_id = (form.external_id or "").strip() or None
    return Enrollment(
        first_name=first,
        last_name=last,
        phone=phone,
        procedure=kind,
        completed_at=completed_at,
        timezone=tz.key,
        language=language,
        blood_thinner=blood_thinner or None,
        external_id=external_id,
    )


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
    value = parse_local_datetime(completed_at, ZoneInfo(patient.timezone), field="completed_at")
    if value > now:
        raise ValidationError("completed_at", "is in the future")
    if now - value > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    if procedure.status == "cancelled":
        raise ValidationError("procedure", "is cancelled")
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
