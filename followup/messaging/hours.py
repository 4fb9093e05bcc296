"""The clinic's staffed hours in words: when a nurse will read a reply, and the hours
themselves, in the patient's language (the answer to a reply that needs reading)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from followup.care.texts import clock_time, spanish_hour_article
from followup.care.timing import ClinicHours, local_instant

CLOSING_SOON = timedelta(minutes=30)  # open for less than this: say the next opening instead

_DAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}


def _day_runs(days: frozenset[int]) -> list[list[int]]:
    """Consecutive runs of weekdays (0 = Monday), wrapping past Sunday."""
    if len(days) == 7:
        return [list(range(7))]
    starts = [d for d in sorted(days) if (d - 1) % 7 not in days]
    runs = []
    for start in starts:
        run = [start]
        while (run[-1] + 1) % 7 in days:
            run.append((run[-1] + 1) % 7)
        runs.append(run)
    return runs


def _clock(at: time, language: str) -> str:
    return clock_time(datetime.combine(date(2000, 1, 3), at, tzinfo=UTC), language)


def describe_clinic_hours(hours: ClinicHours, language: str) -> str:
    """Say staffed hours in words: "Monday to Friday, 8:00 AM to 5:00 PM"."""
    names = _DAYS[language]
    parts = []
    for window in hours.windows:
        for run in _day_runs(window.weekdays):
            if language == "es":
                days = (
                    f"el {names[run[0]]}"
                    if len(run) == 1
                    else f"de {names[run[0]]} a {names[run[-1]]}"
                )
                span = f"de {_clock(window.start, language)} a {_clock(window.end, language)}"
            else:
                days = names[run[0]] if len(run) == 1 else f"{names[run[0]]} to {names[run[-1]]}"
                span = f"{_clock(window.start, language)} to {_clock(window.end, language)}"
            parts.append(f"{days}, {span}")
    joiner = ", y " if language == "es" else ", and "
    return joiner.join(parts) if len(parts) <= 2 else "; ".join(parts)


def next_opening(hours: ClinicHours, after: datetime, tz: ZoneInfo) -> datetime | None:
    """The first instant at or after `after` when a staffed window starts (None: never)."""
    local_day = after.astimezone(tz).date()
    best: datetime | None = None
    for offset in range(8):
        day = local_day + timedelta(days=offset)
        for window in hours.windows:
            if day.weekday() not in window.weekdays:
                continue
            start = local_instant(day, window.start, tz)
            if start >= after and (best is None or start < best):
                best = start
        if best is not None:
            return best
    return best


def _window_end(hours: ClinicHours, local: datetime, tz: ZoneInfo) -> datetime | None:
    """If the clinic is staffed at `local`, when this window ends."""
    for window in hours.windows:
        if local.weekday() in window.weekdays and window.start <= local.time() < window.end:
            return local_instant(local.date(), window.end, tz)
    return None


def when_read(
    hours: ClinicHours,
    now: datetime,
    clinic_tz: ZoneInfo,
    language: str,
    patient_tz: ZoneInfo | None = None,
) -> tuple[str, str]:
    """When a nurse will read a reply sent at `now`, and the staffed hours, in words.

    The opening is said on the patient's own calendar and clock (`patient_tz`): a patient
    in Honolulu texting Monday at 8 PM is read "tomorrow at 3:00 AM" their time, not
    "today at 8:00 AM" (the clinic's Tuesday in New York). The hours stay the clinic's."""
    local = now.astimezone(clinic_tz)
    end = _window_end(hours, local, clinic_tz)
    if end is not None and end - now >= CLOSING_SOON:
        when = "hoy" if language == "es" else "today"
    else:
        opening = next_opening(hours, end or now, clinic_tz)
        if opening is None:
            when = "lo antes posible" if language == "es" else "as soon as possible"
        else:
            theirs = patient_tz or clinic_tz
            when = _describe_opening(
                opening.astimezone(theirs), now.astimezone(theirs).date(), language
            )
            if theirs.key != clinic_tz.key:
                when += " (su hora)" if language == "es" else " (your time)"
    return when, describe_clinic_hours(hours, language)


def _describe_opening(opening: datetime, today: date, language: str) -> str:
    at = clock_time(opening, language)
    days = (opening.date() - today).days
    if language == "es":
        day = (
            "hoy"
            if days == 0
            else "mañana"
            if days == 1
            else f"el {_DAYS['es'][opening.weekday()]}"
        )
        return f"cuando abra la clínica, {day} a {spanish_hour_article(opening)} {at}"
    day = (
        "today"
        if days == 0
        else "tomorrow"
        if days == 1
        else f"on {_DAYS['en'][opening.weekday()]}"
    )
    return f"when the clinic opens, {day} at {at}"
