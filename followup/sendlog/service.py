"""The send log: every text with its outcome, for admins, the CLI and CSV export.

Pages use keyset pagination on (due_at, id), newest first: a deep page costs what the first
does. The CSV export streams in due order a batch at a time, never the whole log in memory.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.bounds import EARLIEST_DATE, LATEST_DATE, MAX_ID, MAX_SEARCH_LENGTH, date_in_range
from followup.errors import ValidationError
from followup.inbox.queue import critical_problem
from followup.messaging.models import (
    DELIVERED,
    STATUSES,
    Message,
    MessageEvent,
)
from followup.patients.models import Patient
from followup.patients.pages import patient_search_condition

CSV_COLUMNS = (
    "message_id",
    "patient_id",
    "procedure_id",
    "step",
    "status",
    "attempts",
    "due_at",
    "expires_at",
    "sent_at",
    "delivered_at",
    "provider_sid",
    "error_code",
    "error_message",
)
PAGE_SIZE = 50
_Q = TypeVar("_Q", bound=sa.Select)  # type: ignore[type-arg]
# Statuses of a critical text (the blood-thinner restart) that a nurse must follow up.


@dataclass(frozen=True)
class LogFilter:
    """What the log shows; every field optional. Dates are the clinic's local dates."""

    status: str | None = None
    step: str | None = None
    patient_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    search: str | None = None  # a patient's name, or the last 4 digits of their phone
    needs_attention: bool = False
    critical_steps: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> str:
        """Say the filter in words for the audit trail (no phone digits beyond a search)."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status),
                ("step", self.step),
                ("patient", self.patient_id),
                ("from", self.date_from),
                ("to", self.date_to),
                ("search", self.search),
            )
            if value
        ]
        if self.needs_attention:
            parts.append("needs-attention")
        return ", ".join(parts) or "all"


def check_filter(log_filter: LogFilter) -> LogFilter:
    """Refuse an unknown status or an inverted date range, naming the field."""
    if log_filter.status is not None and log_filter.status not in STATUSES:
        raise ValidationError("status", f"must be one of: {', '.join(STATUSES)}")
    for name in ("date_from", "date_to"):
        value = getattr(log_filter, name)
        if value is not None and not date_in_range(value):
            raise ValidationError(
                name, f"must be between {EARLIEST_DATE:%Y-%m-%d} and {LATEST_DATE:%Y-%m-%d}"
            )
    if log_filter.date_from and log_filter.date_to and log_filter.date_from > log_filter.date_to:
        raise ValidationError("date_to", "is before the start date")
    if log_filter.search is not None and len(log_filter.search) > MAX_SEARCH_LENGTH:
        raise ValidationError("search", f"is longer than {MAX_SEARCH_LENGTH} characters")
    if log_filter.step is not None and len(log_filter.step) > 64:
        raise ValidationError("step", "is not a step of any protocol")
    if log_filter.patient_id is not None and not 1 <= log_filter.patient_id <= MAX_ID:
        raise ValidationError("patient", "is not a patient id")
    return log_filter


def _apply(query: _Q, log_filter: LogFilter, tz: ZoneInfo) -> _Q:
    if log_filter.status is not None:
        query = query.where(Message.status == log_filter.status)
    if log_filter.step is not None:
        query = query.where(Message.step == log_filter.step)
    if log_filter.patient_id is not None:
        query = query.where(Message.patient_id == log_filter.patient_id)
    if log_filter.date_from is not None:
        start = datetime.combine(log_filter.date_from, time(0), tzinfo=tz)
        query = query.where(Message.due_at >= start)
    if log_filter.date_to is not None:
        end = datetime.combine(log_filter.date_to + timedelta(days=1), time(0), tzinfo=tz)
        query = query.where(Message.due_at < end)
    condition = patient_search_condition(log_filter.search or "")
    if condition is not None:
        query = query.where(Message.patient_id.in_(sa.select(Patient.id).where(condition)))
    if log_filter.needs_attention:
        query = query.where(critical_problem(log_filter.critical_steps))
    return query


# --- pages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRow:
    message: Message
    first_name: str
    last_name: str
    phone: str
    timezone: str

    @property
    def masked_phone(self) -> str:
        from followup.messaging.transports.base import mask_phone

        return mask_phone(self.phone)

    @property
    def local_due(self) -> str:
        """When the text is planned, in the patient's own zone."""
        return local_time(self.message.due_at, self.timezone)

    @property
    def error_words(self) -> str | None:
        return explain_error(self.message.error_code)


def local_time(instant: datetime | None, zone_name: str) -> str:
    """An instant in a named zone, compactly ("Sat 2026-03-07 10:00 EST"); "-" for None."""
    from followup.care.texts import short_local

    return short_local(instant, ZoneInfo(zone_name)) if instant is not None else "-"


@dataclass(frozen=True)
class LogPage:
    rows: list[LogRow]
    next_cursor: str | None


def encode_cursor(due_at: datetime, message_id: int) -> str:
    """An opaque cursor naming the last row of a page."""
    raw = f"{due_at.isoformat()}|{message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Read a cursor back; raise ValidationError('cursor') for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        due_text, id_text = base64.urlsafe_b64decode(padded).decode().split("|")
        if len(cursor) > 200:
            raise ValueError("too long")
        due_at = datetime.fromisoformat(due_text)
        if due_at.tzinfo is None or not date_in_range(due_at.date()):
            raise ValueError("naive or out of range")
        message_id = int(id_text)
        if not 0 <= message_id <= MAX_ID:
            raise ValueError("out of range")
        return due_at, message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("cursor", "is not a page of this log") from exc


def log_page(
    *,
    session: so.Session,
    log_filter: LogFilter,
    tz: ZoneInfo,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> LogPage:
    """One page of the log, newest due first, after `cursor` (keyset: no OFFSET scan)."""
    check_filter(log_filter)
    query: Any = sa.select(
        Message, Patient.first_name, Patient.last_name, Patient.phone, Patient.timezone
    ).join(Patient, Patient.id == Message.patient_id)
    query = _apply(query, log_filter, tz)
    if cursor:
        due_at, message_id = decode_cursor(cursor)
        # A row-value comparison is one index range on (due_at, id); the equivalent OR is
        # not, and would rescan from the newest row on every page.
        query = query.where(sa.tuple_(Message.due_at, Message.id) < sa.tuple_(due_at, message_id))
    query = query.order_by(Message.due_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = [LogRow(*row) for row in session.execute(query).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1].message if rows else None
    next_cursor = encode_cursor(last.due_at, last.id) if more and last is not None else None
    return LogPage(rows=rows, next_cursor=next_cursor)


def message_history(
    *, session: so.Session, message_id: int
) -> tuple[Message, Patient, list[MessageEvent]]:
    """A text, its patient and its whole history, oldest first."""
    from followup.errors import NotFound

    row = session.execute(
        sa.select(Message, Patient)
        .join(Patient, Patient.id == Message.patient_id)
        .where(Message.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no text {message_id}")
    events = list(
        session.scalars(
            sa.select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.at, MessageEvent.id)
        )
    )
    return row[0], row[1], events


# --- export -------------------------------------------------------------------------------


def iter_log(
    *,
    session: so.Session,
    log_filter: LogFilter,
    tz: ZoneInfo | None = None,
    batch: int = 1000,
) -> Iterator[Message]:
    """Yield the filtered log in due order, keyset batch by keyset batch."""
    check_filter(log_filter)
    base = _apply(sa.select(Message), log_filter, tz or ZoneInfo("UTC"))
    last: tuple[datetime, int] | None = None
    while True:
        query = base
        if last is not None:
            query = query.where(sa.tuple_(Message.due_at, Message.id) > sa.tuple_(*last))
        chunk = list(session.scalars(query.order_by(Message.due_at, Message.id).limit(batch)))
        if not chunk:
            return
        yield from chunk
        last = (chunk[-1].due_at, chunk[-1].id)
        session.expunge_all()  # keep memory flat however long the log is


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def csv_row(message: Message) -> list[str]:
    """One CSV row: times in ISO 8601 UTC, no body and no phone number."""
    return [
        str(message.id),
        str(message.patient_id),
        str(message.procedure_id),
        message.step,
        message.status,
        str(message.attempts),
        _iso(message.due_at),
        _iso(message.expires_at),
        _iso(message.sent_at),
        _iso(message.delivered_at),
        message.provider_sid or "",
        message.error_code or "",
        message.error_message or "",
    ]


class _Line:
    """A file-like sink that hands back what csv.writer wrote."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, text: str) -> int:
        self.value = text
        return len(text)


def csv_lines(messages: Iterable[Message]) -> Iterator[str]:
    """Yield the header and one CSV line per text, for a streamed HTTP response."""
    sink = _Line()
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield sink.value
    for message in messages:
        writer.writerow(csv_row(message))
        yield sink.value


def write_csv(messages: Iterable[Message], stream: TextIO) -> int:
    """Write the header and one row per text; return the row count."""
    count = -1
    for line in csv_lines(messages):
        stream.write(line)
        count += 1
    return count


__all__ = [
    "CSV_COLUMNS",
    "DELIVERED",
    "LogFilter",
    "LogPage",
    "LogRow",
    "check_filter",
    "csv_lines",
    "decode_cursor",
    "encode_cursor",
    "iter_log",
    "log_page",
    "message_history",
    "write_csv",
]


# Plain words for the error codes admins meet most; the policy table covers the rest.
_MORE_ERRORS = {
    "30003": "handset off or out of coverage",
    "30004": "message blocked by the recipient or carrier",
    "30007": "carrier filtered the text as spam",
    "30008": "unknown carrier error",
}


def explain_error(code: str | None) -> str | None:
    """Say what an error code means, in words an admin can act on."""
    from followup.messaging.errors import describe_error_code

    if not code:
        return None
    if code in _MORE_ERRORS:
        return _MORE_ERRORS[code]
    described = describe_error_code(int(code)) if code.isdigit() else None
    return described or "provider error (see Twilio's error reference)"
