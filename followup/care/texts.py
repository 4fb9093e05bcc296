"""Render a step's text for one patient: placeholders and local times in words. Pure."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

# Spanish texts go as UCS-2 (see gsm.py), so its words keep their accents.
_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
_MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "es": (
        "enero", "febrero", "marzo", "abril", "mayo", "junio",
        "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    ),
}  # fmt: skip

PLACEHOLDERS = frozenset(
    {
        "clinic_name",
        "clinic_phone",
        "emergency_number",
        "blood_thinner",
        "stop_date",
        "from_time",
        "procedure_time",
        "text_count",
    }
)
MAX_BLOOD_THINNER_LENGTH = 30  # longer names do not fit the day-before text in Spanish
MAX_TEXT_COUNT = 99  # the longest {text_count} validation assumes


def clock_time(local: datetime, language: str) -> str:
    """Say a local wall-clock time the way a patient reads it: 4:00 PM / 4:00 p. m."""
    hour = local.hour % 12 or 12
    if language == "es":
        return f"{hour}:{local.minute:02d} {'a. m.' if local.hour < 12 else 'p. m.'}"
    return f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def spanish_hour_article(local: datetime) -> str:
    """The article Spanish puts before a clock time: "la 1:30", "las 3:30" (one is singular)."""
    return "la" if local.hour % 12 == 1 else "las"


def describe_local_time(instant: datetime, tz: ZoneInfo, language: str) -> str:
    """Say an instant in the patient's zone: "4:00 PM on Sunday, November 24"."""
    local = instant.astimezone(tz)
    weekday = _WEEKDAYS[language][local.weekday()]
    month = _MONTHS[language][local.month - 1]
    if language == "es":
        article = spanish_hour_article(local)
        return f"{article} {clock_time(local, language)} del {weekday} {local.day} de {month}"
    return f"{clock_time(local, language)} on {weekday}, {month} {local.day}"


def describe_date(day: date, language: str) -> str:
    """Say a calendar date: "Saturday, March 7" / "sábado 7 de marzo"."""
    weekday = _WEEKDAYS[language][day.weekday()]
    month = _MONTHS[language][day.month - 1]
    if language == "es":
        return f"{weekday} {day.day} de {month}"
    return f"{weekday}, {month} {day.day}"


def longest_date(language: str) -> str:
    """The longest text describe_date can produce in `language` (for validation)."""
    weekday = max(_WEEKDAYS[language], key=len)
    month = max(_MONTHS[language], key=len)
    if language == "es":
        return f"{weekday} 30 de {month}"
    return f"{weekday}, {month} 30"


def longest_local_time(language: str) -> str:
    """The longest text describe_local_time can produce in `language` (for validation)."""
    weekday = max(_WEEKDAYS[language], key=len)
    month = max(_MONTHS[language], key=len)
    if language == "es":
        return f"las 12:00 p. m. del {weekday} 30 de {month}"
    return f"12:00 PM on {weekday}, {month} 30"


def render(template: str, values: dict[str, str]) -> str:
    """Fill a validated template's placeholders."""
    return template.format_map(values)


def short_local(instant: datetime, tz: ZoneInfo) -> str:
    """A compact local time for staff screens: "Sat 2026-03-07 10:00 EST"."""
    local = instant.astimezone(tz)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"
