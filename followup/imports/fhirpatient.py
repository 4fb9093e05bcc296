"""What a FHIR import's Patient and its SMS Consent say: the name, the mobile in use now,
the language, an extension's code, and whether the Consent permits texts now.

The rules are in fhirformat.py's docstring; fhirformat.py finds the resources and ties
them together. Pure: no database.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.patient import Patient

SMS_CONSENT_SYSTEM = "http://hl7.org/fhir/contact-point-system"
SMS_CONSENT_CODE = "sms"


def patient_name(patient: Patient) -> tuple[str, str]:
    """The given and family name: official, else usual, else the first."""
    names = list(patient.name or [])
    by_use = {name.use: name for name in reversed(names)}
    name = by_use.get("official") or by_use.get("usual") or (names[0] if names else None)
    if name is None:
        return "", ""
    return " ".join(str(given) for given in name.given or []), str(name.family or "")


def mobile_points(patient: Any) -> list[Any]:
    """The patient's mobile ContactPoints with a number, whatever their period."""
    return [
        point
        for point in getattr(patient, "telecom", None) or []
        if point.system in ("phone", "sms") and point.use == "mobile" and point.value
    ]


# The aftercare texts run about a week after the procedure, and the texts before it from
# enrollment: a mobile whose period ends within this is one the texts may outlive.
MOBILE_HORIZON = timedelta(days=30)


def mobile_in_use(patient: Patient, now: datetime) -> str:
    """The mobile to text: of those in use now (their `period`, if any, includes `now`),
    one in use for the weeks of texts ahead (no end, or an end past MOBILE_HORIZON) before
    one the record says will stop sooner ("in use until Friday" would lose the rest), then
    the lowest rank; of those stopping soon, the one that lasts longest. A number the
    patient gave up is never used, whatever its rank."""

    def order(point: Any) -> tuple[bool, float, int]:
        end = (
            _instant(point.period.end, end=True)
            if point.period is not None and point.period.end is not None
            else None
        )
        soon = end is not None and end < now + MOBILE_HORIZON
        rank = point.rank if point.rank is not None else 1_000_000
        return soon, -end.timestamp() if soon and end is not None else 0.0, rank

    mobiles = [point for point in mobile_points(patient) if _in_use(point.period, now)]
    mobiles.sort(key=order)
    return str(mobiles[0].value) if mobiles else ""


def _in_use(period: Any, now: datetime) -> bool:
    """Whether a FHIR Period (None: always) includes `now`; an unreadable bound does not."""
    if period is None:
        return True
    start = _instant(period.start, end=False) if period.start is not None else None
    end = _instant(period.end, end=True) if period.end is not None else None
    if (period.start is not None and start is None) or (period.end is not None and end is None):
        return False
    return (start is None or start <= now) and (end is None or now <= end)


def patient_language(patient: Patient) -> str:
    """The preferred (else first) language's code, without its region; none given: en."""
    spoken = list(patient.communication or [])
    spoken.sort(key=lambda item: not item.preferred)
    for item in spoken:
        concept = item.language
        codes = [coding.code for coding in concept.coding or [] if coding.code]
        if codes:
            return str(codes[0]).split("-")[0].lower()
        if concept.text:
            return str(concept.text).strip().lower()
    return "en"


def extension_code(patient: Patient, url: str) -> str | None:
    """The valueCode of the patient's extension with this url, if any."""
    for extension in patient.extension or []:
        if extension.url == url and extension.valueCode:
            return str(extension.valueCode)
    return None


def is_sms_consent(consent: Consent) -> bool:
    """Whether the Consent's category is SMS_CONSENT_SYSTEM|SMS_CONSENT_CODE."""
    return any(
        coding.system == SMS_CONSENT_SYSTEM and coding.code == SMS_CONSENT_CODE
        for concept in consent.category or []
        for coding in concept.coding or []
    )


def sms_consent_problem(consent: Consent, ref: str, now: datetime) -> str | None:
    """Why the SMS Consent does not permit texts now (not active, denies, out of its
    period, an unreadable bound), or None when it does."""
    if consent.status != "active":
        return f"the SMS Consent ({ref}) is {consent.status}, not active"
    provision = consent.provision
    if provision is not None and provision.type == "deny":
        return f"the SMS Consent ({ref}) denies texts"
    period = provision.period if provision is not None else None
    if period is not None:
        bounds: dict[str, datetime] = {}
        for name, value in (("end", period.end), ("start", period.start)):
            if value is None:
                continue
            instant = _instant(value, end=name == "end")
            if instant is None:
                return (
                    f"the SMS Consent ({ref}) provision.period.{name} {str(value)!r} is not a "
                    "FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or a time with its offset)"
                )
            bounds[name] = instant
        if "end" in bounds and bounds["end"] < now:
            return f"the SMS Consent ({ref}) ended {period.end}"
        if "start" in bounds and bounds["start"] > now:
            return f"the SMS Consent ({ref}) starts {period.start}"
    return None


_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?")


def _instant(value: Any, *, end: bool) -> datetime | None:
    """A FHIR dateTime as an instant, or None when it is not one. A partial one (a year,
    a year and month, a date) counts whole, in UTC: from its start, or for an end until
    the start of the next year, month or day."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        if end and value == date.max:
            return datetime.max.replace(tzinfo=UTC)
        day = date.fromordinal(value.toordinal() + (1 if end else 0))
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    text = str(value).strip()
    partial = _PARTIAL_DATE.fullmatch(text)
    if partial is not None:
        year, month = int(partial[1]), int(partial[2] or 1)
        if not 1 <= year <= 9999 or not 1 <= month <= 12:
            return None
        if end and partial[2] is None:
            year += 1
        elif end:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        if year > 9999:  # the end of 9999: in effect for as long as anything is
            return datetime.max.replace(tzinfo=UTC)
        return datetime(year, month, 1, tzinfo=UTC)
    try:
        if len(text) == len("YYYY-MM-DD"):
            return _instant(date.fromisoformat(text), end=end)
        return _instant(datetime.fromisoformat(text), end=end)
    except ValueError:
        return None
