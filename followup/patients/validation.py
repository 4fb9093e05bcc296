"""What an enrollment must be: its fields, their parsing and rules; one error names the field."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from followup.care import gsm
from followup.care.protocol import CareContext
from followup.care.texts import MAX_BLOOD_THINNER_LENGTH
from followup.care.timing import (
    AmbiguousLocalTime,
    LocalTimeChoice,
    NonexistentLocalTime,
    resolve_local_input,
    zone,
)
from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS
from followup.errors import ValidationError
from followup.messaging.models import (
    Message,
)
from followup.patients.models import Patient, Procedure

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
        scheduled_at = check("scheduled_at", lambda: parse_scheduled_at(scheduled_raw, tz, now))
    language = check("language", lambda: parse_language(form.language))
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
        lambda: parse_stop_date(
            form.stop_blood_thinner_on,
            takes=bool(takes),
            booked=bool(scheduled_raw) and not completed_raw,
            scheduled_at=scheduled_at,
            tz=tz,
        ),
    )
    if not form.consent:
        errors["consent"] = "the patient must agree to receive texts"
    check("external_id", lambda: _parse_external_id(form.external_id))
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


def refuse_control_characters(value: str, *, field: str) -> str:
    """Return `value`, or raise ValidationError(field) when it holds a control character
    (Unicode category Cc: NUL, tab, line breaks, ...): free text is one line of print.

    A damaged export or a cell pasted from a binary field carries them; PostgreSQL refuses
    a NUL in text (the whole INSERT fails) and SQLite would store it in the record."""
    bad = next((char for char in value if unicodedata.category(char) == "Cc"), None)
    if bad is not None:
        raise ValidationError(field, f"contains a control character (U+{ord(bad):04X}); retype it")
    return value


def _parse_name(raw: str, field: str) -> str:
    value = (raw or "").strip()
    if not value:
        raise ValidationError(field, "is required")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_NAME_LENGTH} characters")
    return refuse_control_characters(value, field=field)


def _parse_external_id(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if len(value) > MAX_EXTERNAL_ID_LENGTH:
        raise ValidationError("external_id", f"is longer than {MAX_EXTERNAL_ID_LENGTH} characters")
    return refuse_control_characters(value, field="external_id") or None


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


def parse_scheduled_at(raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    scheduled_at = parse_local_datetime(raw, tz, field="scheduled_at")
    if scheduled_at <= now:
        raise ValidationError(
            "scheduled_at", "is not in the future; if the procedure is done, give completed_at"
        )
    if scheduled_at - now > MAX_BOOKED_AHEAD:
        raise ValidationError("scheduled_at", "is more than a year ahead; check the date")
    return scheduled_at


def parse_stop_date(
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


def parse_language(raw: str) -> str:
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
    name = refuse_control_characters(" ".join((raw or "").split()), field="blood_thinner")
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
