"""Enrollment and the edits nurses make to a patient or a procedure."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.audit.service import record_audit
from followup.care import gsm
from followup.care.planner import PlannedText, choose_intro, plan_procedure
from followup.care.protocol import CareContext
from followup.care.texts import MAX_BLOOD_THINNER_LENGTH, short_local
from followup.care.timing import (
    AmbiguousLocalTime,
    LocalTimeChoice,
    NonexistentLocalTime,
    resolve_local_input,
    zone,
)
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
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
    ProcedureTimes,
    cancel_pending,
    decide_replan,
    plan_procedures,
    procedure_messages,
    record_opt_out,
    render_message,
    replan_procedure,
)
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100
MAX_EXTERNAL_ID_LENGTH = 64  # procedures.external_id
MAX_PAST_COMPLETION = timedelta(days=30)  # older than this is almost surely a typo
MAX_BOOKED_AHEAD = timedelta(days=365)
MAX_STOP_AHEAD = timedelta(days=30)  # a stop date further before the procedure is a typo
# Ways nurses write "none" in a name field (compared lower-case, punctuation dropped).
_NONE_WORDS = frozenset(
    {
        "none", "no", "nothing", "nil", "null", "na", "n a", "n/a", "nope", "x", "0", "zero",
        "not applicable", "not any", "no blood thinner", "no blood thinners", "no thinners",
        "no anticoagulant", "no anticoagulants", "none taken", "no meds", "denies",
        "ninguno", "ninguna", "nada", "no aplica", "no toma", "sin anticoagulante",
    }
)  # fmt: skip
_NONE_FIRST_WORDS = frozenset({"none", "no", "not", "nothing", "ninguno", "ninguna", "sin"})
_NOT_A_NAME_RE = re.compile(r"[^\w]+")
_T = TypeVar("_T")


class PatientOptedOut(ValidationError):
    """The phone number belongs to a patient who replied STOP."""


class AmbiguousTime(ValidationError):
    """A wall-clock time that happens twice (clocks going back): `choices` are both
    instants, each with the offset that picks it ("2026-11-01T01:30-04:00")."""

    def __init__(self, field: str, message: str, choices: tuple[LocalTimeChoice, ...]) -> None:
        super().__init__(field, message)
        self.choices = choices


@dataclass(frozen=True)
class EnrollmentForm:
    """One enrollment as a nurse (or an import row) gives it: raw strings, nothing parsed.

    `validate_enrollment` checks it whole and names every bad field by these names.

    - `completed_at` (the procedure is done) or `scheduled_at` (it is booked): exactly one,
      ISO 8601 ("2026-03-12T09:00"), wall-clock time in `timezone` unless it carries an
      offset. A time the clocks skip is refused; one that happens twice is refused unless
      it carries an offset.
    - `takes_blood_thinner`: the explicit answer, True or False (None: not answered, refused).
      On True, `blood_thinner` names it (words meaning "none" are refused); on False it is
      empty.
    - `stop_blood_thinner_on`: the local date ("2026-03-07") the doctor gave to stop it;
      required for a booked procedure with a blood thinner, refused otherwise.
    - `consent`: the patient agreed to texts; required.
    """

    first_name: str
    last_name: str
    phone: str
    procedure: str
    timezone: str
    completed_at: str = ""
    scheduled_at: str = ""
    language: str = "en"
    takes_blood_thinner: bool | None = None
    blood_thinner: str | None = None
    stop_blood_thinner_on: str | None = None
    consent: bool = False
    external_id: str | None = None


@dataclass(frozen=True)
class Enrollment:
    """A checked enrollment: every field parsed, nothing written yet."""

    first_name: str
    last_name: str
    phone: str  # E.164
    procedure: str
    completed_at: datetime | None  # UTC; None for a booked procedure
    scheduled_at: datetime | None  # UTC; None for a procedure already done
    timezone: str
    language: str
    takes_blood_thinner: bool
    blood_thinner: str | None
    stop_blood_thinner_on: date | None
    external_id: str | None

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def booked(self) -> bool:
        return self.completed_at is None


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
    if len(name) > 64:  # the longest IANA name is 32 characters
        raise ValidationError("timezone", "is not an IANA time zone like America/New_York")
    try:
        return zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(
            "timezone", f"{name!r} is not an IANA time zone like America/New_York"
        ) from exc


def parse_local_datetime(raw: str, tz: ZoneInfo, *, field: str) -> datetime:
    """Parse ISO 8601; without an offset it is wall-clock time in `tz`. Return UTC.

    A wall-clock time the clocks skip is refused; one that happens twice raises
    AmbiguousTime (with both choices) unless the text carries an offset.
    """
    text = (raw or "").strip()
    if not text:
        raise ValidationError(field, "is required")
    try:
        if len(text) > 40:
            raise ValueError("too long")
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(
            field, f"{text[:40]!r} is not an ISO 8601 date and time like 2026-03-07T14:30"
        ) from exc
    # Far from the calendar's ends: converting 9999-12-31 to UTC would overflow.
    if not 2000 <= value.year <= 2099:
        raise ValidationError(field, f"{text[:40]} is out of range (years 2000 to 2099)")
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    try:
        return resolve_local_input(value, tz)
    except AmbiguousLocalTime as exc:
        raise AmbiguousTime(field, str(exc), exc.choices) from exc
    except NonexistentLocalTime as exc:
        raise ValidationError(field, f"{exc}; check the time") from exc


def parse_local_date(raw: str, *, field: str) -> date:
    """Parse an ISO 8601 calendar date ("2026-03-07")."""
    text = (raw or "").strip()
    try:
        value = date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(field, f"{text[:40]!r} is not a date like 2026-03-07") from exc
    if not 2000 <= value.year <= 2099:
        raise ValidationError(field, f"{text[:40]} is out of range (years 2000 to 2099)")
    return value


class InvalidEnrollment(ValidationError):
    """An enrollment with one or more bad fields: `errors` maps each field to its message.

    `field` and `message` name the first bad field in form order, as a plain
    ValidationError would; `choices` holds the two instants of an ambiguous time, by field.
    """

    def __init__(
        self,
        errors: dict[str, str],
        choices: dict[str, tuple[LocalTimeChoice, ...]] | None = None,
    ) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(field, message)
        self.errors = dict(errors)
        self.choices = dict(choices or {})


def validate_enrollment(
    *, form: EnrollmentForm, care: CareContext, region: str, now: datetime
) -> Enrollment:
    """Check every field of one enrollment; raise InvalidEnrollment naming each bad one.

    Pure (no database): the same rules for the web form, the CLI and a bulk import row.
    """
    errors: dict[str, str] = {}
    choices: dict[str, tuple[LocalTimeChoice, ...]] = {}

    def check(field: str, parse: Callable[[], _T]) -> _T | None:
        try:
            return parse()
        except ValidationError as exc:
            errors.setdefault(exc.field or field, exc.message)
            if isinstance(exc, AmbiguousTime):
                choices[exc.field] = exc.choices
            return None

    first = check("first_name", lambda: _parse_name(form.first_name, "first_name"))
    last = check("last_name", lambda: _parse_name(form.last_name, "last_name"))
    phone = check("phone", lambda: parse_phone(form.phone, region=region))
    kind = check("procedure", lambda: _parse_kind(form.procedure, care))
    tz = check("timezone", lambda: parse_timezone(form.timezone))
    completed_raw = (form.completed_at or "").strip()
    scheduled_raw = (form.scheduled_at or "").strip()
    completed_at = scheduled_at = None
    if completed_raw and scheduled_raw:
        errors["scheduled_at"] = (
            "give either when the procedure finished or when it is booked, not both"
        )
    elif not completed_raw and not scheduled_raw:
        errors["completed_at"] = (
            "is required: when the procedure finished (or, if it is booked, scheduled_at)"
        )
    elif tz is not None and completed_raw:
        completed_at = check("completed_at", lambda: _parse_completed_at(completed_raw, tz, now))
    elif tz is not None:
        scheduled_at = check("scheduled_at", lambda: _parse_scheduled_at(scheduled_raw, tz, now))
    language = check("language", lambda: _parse_language(form.language))
    takes = form.takes_blood_thinner
    blood_thinner = None
    if takes is None:
        errors["takes_blood_thinner"] = (
            "must be answered: does the patient take a blood thinner, yes or no?"
        )
    else:
        blood_thinner = check(
            "blood_thinner", lambda: parse_blood_thinner(form.blood_thinner, takes=takes)
        )
    stop_on = check(
        "stop_blood_thinner_on",
        lambda: _parse_stop_date(
            form.stop_blood_thinner_on,
            takes=bool(takes),
            booked=bool(scheduled_raw) and not completed_raw,
            scheduled_at=scheduled_at,
            tz=tz,
        ),
    )
    if not form.consent:
        errors["consent"] = "the patient must agree to receive texts"
    if len((form.external_id or "").strip()) > MAX_EXTERNAL_ID_LENGTH:
        errors["external_id"] = f"is longer than {MAX_EXTERNAL_ID_LENGTH} characters"
    if errors:
        raise InvalidEnrollment(errors, choices)
    assert first is not None and last is not None and phone is not None  # noqa: S101
    assert kind is not None and tz is not None and language is not None  # noqa: S101
    assert takes is not None and (completed_at or scheduled_at) is not None  # noqa: S101
    return Enrollment(
        first_name=first,
        last_name=last,
        phone=phone,
        procedure=kind,
        completed_at=completed_at,
        scheduled_at=scheduled_at,
        timezone=tz.key,
        language=language,
        takes_blood_thinner=takes,
        blood_thinner=blood_thinner,
        stop_blood_thinner_on=stop_on,
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
            "completed_at",
            "is in the future; enroll a booked procedure with its scheduled time instead",
        )
    if now - completed_at > MAX_PAST_COMPLETION:
        raise ValidationError("completed_at", "is more than 30 days ago; check the date")
    return completed_at


def _parse_scheduled_at(raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    scheduled_at = parse_local_datetime(raw, tz, field="scheduled_at")
    if scheduled_at <= now:
        raise ValidationError(
            "scheduled_at", "is not in the future; if the procedure is done, give completed_at"
        )
    if scheduled_at - now > MAX_BOOKED_AHEAD:
        raise ValidationError("scheduled_at", "is more than a year ahead; check the date")
    return scheduled_at


def _parse_stop_date(
    raw: str | None,
    *,
    takes: bool,
    booked: bool,
    scheduled_at: datetime | None,
    tz: ZoneInfo | None,
) -> date | None:
    text = (raw or "").strip()
    if not text:
        if booked and takes:
            raise ValidationError(
                "stop_blood_thinner_on",
                "is required for a booked procedure with a blood thinner: the date the "
                "doctor gave to stop it",
            )
        return None
    if not booked or not takes:
        raise ValidationError(
            "stop_blood_thinner_on",
            "is only for a booked procedure with a blood thinner; leave it empty",
        )
    stop_on = parse_local_date(text, field="stop_blood_thinner_on")
    if scheduled_at is not None and tz is not None:
        procedure_day = scheduled_at.astimezone(tz).date()
        if stop_on >= procedure_day:
            raise ValidationError(
                "stop_blood_thinner_on", "must be before the day of the procedure"
            )
        if procedure_day - stop_on > MAX_STOP_AHEAD:
            raise ValidationError(
                "stop_blood_thinner_on",
                f"is more than {MAX_STOP_AHEAD.days} days before the procedure; check the date",
            )
    return stop_on


def _parse_language(raw: str) -> str:
    language = (raw or "en").strip().lower()
    if language not in LANGUAGES:
        raise ValidationError("language", f"must be one of: {', '.join(LANGUAGES)}")
    return language


def means_none(name: str) -> bool:
    """Tell whether a blood-thinner "name" is a way of writing none (None., n/a, -, ninguno)."""
    words = _NOT_A_NAME_RE.sub(" ", name.lower()).split()
    return not words or " ".join(words) in _NONE_WORDS or words[0] in _NONE_FIRST_WORDS


def parse_blood_thinner(raw: str | None, *, takes: bool) -> str | None:
    """Check the blood thinner's name against the yes/no answer; return it (None on no)."""
    name = " ".join((raw or "").split())
    if not takes:
        if name and not means_none(name):
            raise ValidationError(
                "blood_thinner", "must be empty when the patient takes no blood thinner"
            )
        return None
    if not name:
        raise ValidationError(
            "blood_thinner", "is required when the patient takes one: pick it or type its name"
        )
    if means_none(name):
        raise ValidationError(
            "blood_thinner",
            f"{name!r} means none: answer no to the blood-thinner question instead",
        )
    if len(name) > MAX_BLOOD_THINNER_LENGTH:
        raise ValidationError(
            "blood_thinner", f"is longer than {MAX_BLOOD_THINNER_LENGTH} characters"
        )
    bad = gsm.non_gsm_characters(name)
    if bad:
        raise ValidationError(
            "blood_thinner", f"has characters a text cannot carry: {''.join(bad)}"
        )
    return name


def preview_enrollment(
    *, enrollment: Enrollment, care: CareContext, now: datetime
) -> list[PlannedText]:
    """Plan an enrollment's texts without writing anything, in due order (the text that
    introduces the program included)."""
    protocol = care.protocol(enrollment.procedure)
    planned = plan_procedure(
        protocol=protocol,
        completed_at=enrollment.completed_at,
        scheduled_at=enrollment.scheduled_at,
        stop_on=enrollment.stop_blood_thinner_on,
        tz=enrollment.tz,
        has_blood_thinner=enrollment.blood_thinner is not None,
        quiet_hours=care.quiet_hours,
        now=now,
    )
    _, welcome = choose_intro(
        protocol=protocol, planned=planned, tz=enrollment.tz, quiet_hours=care.quiet_hours, now=now
    )
    return [welcome, *planned] if welcome is not None else planned


def enroll_patient(
    *,
    session: so.Session,
    form: EnrollmentForm,
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
) -> EnrollmentResult:
    """Validate and save a patient, their procedure and its plan (the caller commits once).

    A procedure already done gets its post-procedure texts; a booked one the welcome and
    the texts before it (its post-procedure texts come with `complete_procedure`).
    """
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    _refuse_duplicates(session=session, enrollment=enrollment)
    patient = Patient(**_patient_values(enrollment, now=now, actor=actor))
    session.add(patient)
    session.flush()
    procedure = Procedure(**_procedure_values(enrollment, patient_id=patient.id, now=now))
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
        detail=f"procedure {procedure.id} ({procedure.kind}, {procedure.status})",
    )
    log.info("enrolled patient=%s procedure=%s", patient.id, procedure.id)
    return EnrollmentResult(
        patient=patient,
        procedure=procedure,
        messages=messages_for_procedure(session=session, procedure_id=procedure.id),
    )


def _patient_values(enrollment: Enrollment, *, now: datetime, actor: str) -> dict[str, object]:
    """The patients row of an enrollment (consent recorded by `actor`, now)."""
    return {
        "first_name": enrollment.first_name,
        "last_name": enrollment.last_name,
        "phone": enrollment.phone,
        "timezone": enrollment.timezone,
        "language": enrollment.language,
        "sms_consent_at": now,
        "consent_recorded_by": actor,
        "created_at": now,
    }


def _procedure_values(
    enrollment: Enrollment, *, patient_id: int, now: datetime
) -> dict[str, object]:
    """The procedures row of an enrollment."""
    return {
        "patient_id": patient_id,
        "kind": enrollment.procedure,
        "status": "scheduled" if enrollment.booked else "completed",
        "completed_at": enrollment.completed_at,
        "scheduled_at": enrollment.scheduled_at,
        "takes_blood_thinner": enrollment.takes_blood_thinner,
        "blood_thinner": enrollment.blood_thinner,
        "stop_blood_thinner_on": enrollment.stop_blood_thinner_on,
        "external_id": enrollment.external_id,
        "created_at": now,
    }


# What an enrollment collides with in the database, in the order the single enrollment
# reports it: a number that replied STOP, the same phone and time, a used external id.
OPTED_OUT_PHONE = "opted_out"
SAME_PHONE_AND_TIME = "same_time"
EXTERNAL_ID_TAKEN = "external_id"


@dataclass(frozen=True)
class StoredConflict:
    kind: str  # OPTED_OUT_PHONE, SAME_PHONE_AND_TIME or EXTERNAL_ID_TAKEN
    field: str
    message: str


@dataclass
class _Stored:
    """What the database already holds for some enrollments' phones and external ids."""

    opted_out: set[str]
    # (phone, "completed" | "booked", instant) -> the patient enrolled with it
    times: dict[tuple[str, str, datetime], int]
    external_ids: dict[str, int]  # external id -> procedure id


_LOOKUP_BATCH = 1000  # values per IN (...) list


def _stored_for(session: so.Session, enrollments: Sequence[Enrollment]) -> _Stored:
    """Read, set-based, what the database holds for these enrollments' phones and ids."""
    stored = _Stored(opted_out=set(), times={}, external_ids={})
    phones = sorted({e.phone for e in enrollments})
    for start in range(0, len(phones), _LOOKUP_BATCH):
        rows = session.execute(
            sa.select(
                Patient.phone,
                Patient.id,
                Patient.opted_out_at,
                Procedure.completed_at,
                Procedure.scheduled_at,
                Procedure.status,
            )
            .outerjoin(Procedure, Procedure.patient_id == Patient.id)
            .where(Patient.phone.in_(phones[start : start + _LOOKUP_BATCH]))
        ).all()
        for phone, patient_id, opted_out_at, completed_at, scheduled_at, status in rows:
            if opted_out_at is not None:
                stored.opted_out.add(phone)
            if status is None or status == "cancelled":
                continue
            for kind, instant in (("completed", completed_at), ("booked", scheduled_at)):
                if instant is not None:
                    stored.times.setdefault((phone, kind, instant), patient_id)
    ids = sorted({e.external_id for e in enrollments if e.external_id is not None})
    for start in range(0, len(ids), _LOOKUP_BATCH):
        for external_id, procedure_id in session.execute(
            sa.select(Procedure.external_id, Procedure.id).where(
                Procedure.external_id.in_(ids[start : start + _LOOKUP_BATCH])
            )
        ):
            stored.external_ids[str(external_id)] = procedure_id
    return stored


def _time_key(enrollment: Enrollment) -> tuple[str, str, datetime]:
    if enrollment.completed_at is not None:
        return (enrollment.phone, "completed", enrollment.completed_at)
    assert enrollment.scheduled_at is not None  # noqa: S101 - validated: one of the two
    return (enrollment.phone, "booked", enrollment.scheduled_at)


def _conflicts(enrollment: Enrollment, stored: _Stored) -> list[StoredConflict]:
    """Every way `enrollment` collides with what is stored (the duplicate rules)."""
    found = []
    if enrollment.phone in stored.opted_out:
        found.append(
            StoredConflict(
                OPTED_OUT_PHONE,
                "phone",
                "this number replied STOP; the patient must text START before enrolling",
            )
        )
    duplicate = stored.times.get(_time_key(enrollment))
    if duplicate is not None:
        what = "completion" if enrollment.completed_at is not None else "booked"
        found.append(
            StoredConflict(
                SAME_PHONE_AND_TIME,
                "phone",
                f"already enrolled with the same {what} time (patient {duplicate})",
            )
        )
    taken = stored.external_ids.get(enrollment.external_id or "")
    if taken is not None:
        found.append(
            StoredConflict(EXTERNAL_ID_TAKEN, "external_id", f"already used by procedure {taken}")
        )
    return found


def _refuse_duplicates(*, session: so.Session, enrollment: Enrollment) -> None:
    conflicts = _conflicts(enrollment, _stored_for(session, [enrollment]))
    if conflicts:
        first = conflicts[0]
        error = PatientOptedOut if first.kind == OPTED_OUT_PHONE else ValidationError
        raise error(first.field, first.message)


# --- bulk enrollment (imports) --------------------------------------------------------------

PLANNED = "planned"
ALREADY_ENROLLED = "already enrolled"
REFUSED = "refused"


@dataclass(frozen=True)
class BulkRow:
    """One enrollment of an import: `ref` names it in the file ("line 7"); `format_errors`
    are problems the file's format found before validation (a yes/no cell that says
    neither) and replace validation's message for the same field."""

    ref: str
    form: EnrollmentForm
    format_errors: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TextSummary:
    step: str
    due_at: datetime
    status: str  # pending, or expired when its window had passed


@dataclass(frozen=True)
class BulkOutcome:
    """What became of one BulkRow: planned, already enrolled (nothing written) or refused."""

    status: str  # PLANNED, ALREADY_ENROLLED or REFUSED
    errors: dict[str, str]  # refused: each bad field and why; already enrolled: the match
    enrollment: Enrollment | None = None
    patient_id: int | None = None
    procedure_id: int | None = None
    texts: tuple[TextSummary, ...] = ()


def enroll_bulk(
    *,
    session: so.Session,
    rows: Sequence[BulkRow],
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
    source: str,
    seen: dict[tuple[object, ...], str],
    dry_run: bool = False,
) -> list[BulkOutcome]:
    """Enroll many patients at once with the rules of `enroll_patient` (the caller commits).

    Each row is validated by `validate_enrollment` and checked against the same duplicate
    rules, set-based. A bad row is refused and nothing of it written; the others are
    inserted with a few statements (patients, procedures, audit events) and planned with
    the set-based `plan_procedures`. A row whose external id is already stored, or the same
    phone and time, is "already enrolled": re-importing a file adds nothing. `seen` carries,
    across calls, the rows of this file already accepted (by external id and by phone and
    time) so that a row repeated in the file is caught too. `dry_run` writes nothing and
    previews each plan instead. `source` names the file in the audit trail.
    """
    outcomes: list[BulkOutcome | None] = [None] * len(rows)
    accepted: list[tuple[int, Enrollment]] = []
    for index, row in enumerate(rows):
        try:
            enrollment = validate_enrollment(form=row.form, care=care, region=region, now=now)
        except InvalidEnrollment as exc:
            outcomes[index] = BulkOutcome(REFUSED, {**exc.errors, **row.format_errors})
            continue
        if row.format_errors:
            outcomes[index] = BulkOutcome(REFUSED, dict(row.format_errors))
            continue
        accepted.append((index, enrollment))
    stored = _stored_for(session, [enrollment for _, enrollment in accepted])
    to_write: list[tuple[int, Enrollment]] = []
    for index, enrollment in accepted:
        outcome = _bulk_conflict(enrollment, stored, seen)
        if outcome is not None:
            outcomes[index] = outcome
            continue
        if enrollment.external_id is not None:
            seen[("external_id", enrollment.external_id)] = rows[index].ref
        seen[_time_key(enrollment)] = rows[index].ref
        to_write.append((index, enrollment))
    if dry_run:
        for index, enrollment in to_write:
            texts = preview_enrollment(enrollment=enrollment, care=care, now=now)
            outcomes[index] = BulkOutcome(
                PLANNED,
                {},
                enrollment,
                texts=tuple(TextSummary(t.step, t.due_at, t.status) for t in texts),
            )
    elif to_write:
        written = _write_bulk(
            session=session,
            enrollments=[enrollment for _, enrollment in to_write],
            refs=[rows[index].ref for index, _ in to_write],
            care=care,
            now=now,
            actor=actor,
            source=source,
        )
        for (index, _), outcome in zip(to_write, written, strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _bulk_conflict(
    enrollment: Enrollment, stored: _Stored, seen: dict[tuple[object, ...], str]
) -> BulkOutcome | None:
    """Refused (a number that replied STOP), already enrolled (stored, or earlier in the
    file), or None: the row is new."""
    conflicts = {conflict.kind: conflict for conflict in _conflicts(enrollment, stored)}
    if EXTERNAL_ID_TAKEN in conflicts:  # imported before, whatever happened since
        conflict = conflicts[EXTERNAL_ID_TAKEN]
        return BulkOutcome(ALREADY_ENROLLED, {conflict.field: conflict.message}, enrollment)
    if OPTED_OUT_PHONE in conflicts:
        conflict = conflicts[OPTED_OUT_PHONE]
        return BulkOutcome(REFUSED, {conflict.field: conflict.message}, enrollment)
    if SAME_PHONE_AND_TIME in conflicts:
        conflict = conflicts[SAME_PHONE_AND_TIME]
        return BulkOutcome(ALREADY_ENROLLED, {conflict.field: conflict.message}, enrollment)
    earlier = seen.get(("external_id", enrollment.external_id)) if enrollment.external_id else None
    if earlier is not None:
        return BulkOutcome(
            ALREADY_ENROLLED, {"external_id": f"the same as {earlier} of this file"}, enrollment
        )
    earlier = seen.get(_time_key(enrollment))
    if earlier is not None:
        return BulkOutcome(
            ALREADY_ENROLLED,
            {"phone": f"the same phone and time as {earlier} of this file"},
            enrollment,
        )
    return None


def _write_bulk(
    *,
    session: so.Session,
    enrollments: list[Enrollment],
    refs: list[str],
    care: CareContext,
    now: datetime,
    actor: str,
    source: str,
) -> list[BulkOutcome]:
    """Insert checked enrollments set-based, plan them and audit them; one outcome each."""
    # Multi-row INSERTs. Their RETURNING rows come back in no promised order (asking for
    # parameter order makes SQLite insert one row at a time), so each id is matched to its
    # row by the values inserted: identical patient rows are interchangeable, and each
    # procedure has its own patient.
    patient_rows = [_patient_values(e, now=now, actor=actor) for e in enrollments]
    columns = ("first_name", "last_name", "phone", "timezone", "language")
    ids_by_values: dict[tuple[object, ...], list[int]] = {}
    for returned in session.execute(
        sa.insert(Patient)
        .returning(Patient.id, *(getattr(Patient, name) for name in columns))
        .execution_options(render_nulls=True),
        patient_rows,
    ):
        ids_by_values.setdefault(tuple(returned[1:]), []).append(returned[0])
    patient_ids = [
        ids_by_values[tuple(row[name] for name in columns)].pop() for row in patient_rows
    ]
    procedure_by_patient: dict[int, int] = {}
    for patient_id, procedure_id in session.execute(
        sa.insert(Procedure)
        .returning(Procedure.patient_id, Procedure.id)
        .execution_options(render_nulls=True),
        [
            _procedure_values(e, patient_id=patient_id, now=now)
            for e, patient_id in zip(enrollments, patient_ids, strict=True)
        ],
    ):
        procedure_by_patient[patient_id] = procedure_id
    procedure_ids = [procedure_by_patient[patient_id] for patient_id in patient_ids]
    plan_procedures(
        session=session, care=care, now=now, procedure_ids=procedure_ids, limit=len(procedure_ids)
    )
    session.execute(
        sa.insert(AuditEvent),
        [
            {
                "at": now,
                "actor": actor,
                "action": "patient.imported",
                "record_type": "patient",
                "record_id": patient_id,
                "detail": (
                    f"procedure {procedure_id} ({e.procedure}, "
                    f"{'scheduled' if e.booked else 'completed'}) from {source}, {ref}"
                )[:500],
            }
            for e, patient_id, procedure_id, ref in zip(
                enrollments, patient_ids, procedure_ids, refs, strict=True
            )
        ],
    )
    texts: dict[int, list[TextSummary]] = {}
    for start in range(0, len(procedure_ids), _LOOKUP_BATCH):
        for procedure_id, step, due_at, status in session.execute(
            sa.select(Message.procedure_id, Message.step, Message.due_at, Message.status)
            .where(Message.procedure_id.in_(procedure_ids[start : start + _LOOKUP_BATCH]))
            .order_by(Message.due_at, Message.id)
        ):
            texts.setdefault(procedure_id, []).append(TextSummary(step, due_at, status))
    log.debug("imported patients=%d procedures=%d", len(patient_ids), len(procedure_ids))
    return [
        BulkOutcome(PLANNED, {}, e, patient_id, procedure_id, tuple(texts.get(procedure_id, ())))
        for e, patient_id, procedure_id in zip(enrollments, patient_ids, procedure_ids, strict=True)
    ]


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
    """Record when a procedure finished and re-plan its unsent texts.

    For a booked procedure this is "Procedure finished": what is left of the texts before
    it is cancelled and the texts after it are planned. For a completed one it corrects
    the time.
    """
    procedure = session.get(Procedure, procedure_id)
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
    value = _parse_scheduled_at(raw, tz, now)
    stop_text = (stop_raw or "").strip() or (
        procedure.stop_blood_thinner_on.isoformat() if procedure.stop_blood_thinner_on else ""
    )
    stop_on = _parse_stop_date(
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
    procedure.scheduled_at = value
    procedure.stop_blood_thinner_on = stop_on
    messages = replan_procedure(
        session=session, procedure=procedure, patient=patient, care=care, now=now
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
    before_procedure: bool = False
    intro: bool = False  # the text that introduces the program


@dataclass(frozen=True)
class EnrollmentPreview:
    enrollment: Enrollment
    completed_local: str  # when it finished, or when it is booked, with the clinic's zone
    rows: list[PreviewRow]
    stop_date_local: str | None = None

    @property
    def expired_count(self) -> int:
        return sum(1 for row in self.rows if row.status == EXPIRED)


def preview_new_enrollment(
    *,
    session: so.Session,
    form: EnrollmentForm,
    care: CareContext,
    region: str,
    now: datetime,
    clinic_timezone: str | None = None,
) -> EnrollmentPreview:
    """Check an enrollment and show every text it would send, writing nothing.

    Raises InvalidEnrollment for bad fields, or ValidationError('phone') for a number that
    opted out or is already enrolled with the same completion time.
    """
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    _refuse_duplicates(session=session, enrollment=enrollment)
    tz = enrollment.tz
    planned_texts = preview_enrollment(enrollment=enrollment, care=care, now=now)
    protocol = care.protocol(enrollment.procedure)
    intro_key, _ = choose_intro(
        protocol=protocol,
        planned=planned_texts,
        tz=tz,
        quiet_hours=care.quiet_hours,
        now=now,
    )
    rows = []
    for planned in sorted(planned_texts, key=lambda p: p.due_at):
        step = protocol.step(planned.step)
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
                    scheduled_at=enrollment.scheduled_at,
                    stop_blood_thinner_on=enrollment.stop_blood_thinner_on,
                    intro=planned.step == intro_key,
                ),
                before_procedure=step.phase == "before",
                intro=planned.step == intro_key,
            )
        )
    moment = enrollment.completed_at or enrollment.scheduled_at
    assert moment is not None  # noqa: S101 - validate_enrollment requires one
    stop_on = enrollment.stop_blood_thinner_on
    return EnrollmentPreview(
        enrollment=enrollment,
        completed_local=local_with_clinic(moment, tz, clinic_timezone),
        rows=rows,
        stop_date_local=f"{stop_on:%a %Y-%m-%d}" if stop_on else None,
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

    if not patient.can_receive_texts():
        return [
            CompletionRow(step_label(step), current(step), current(step), "unchanged: no texts")
            for step in existing
        ]
    decisions, _, _ = decide_replan(
        times=times, existing=existing, care=care, kind=procedure.kind, tz=tz, now=now
    )
    rows = []
    for decision in decisions:
        label, now_at = step_label(decision.step), current(decision.step)
        if decision.action == "cancel":
            rows.append(CompletionRow(label, now_at, "-", f"cancelled: {decision.reason}"))
        elif decision.action == "keep":
            rows.append(CompletionRow(label, now_at, now_at, f"unchanged: {decision.reason}"))
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
