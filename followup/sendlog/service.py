"""The send log: every text with its outcome, for admins, the CLI and CSV export."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.errors import ValidationError
from followup.messaging.models import STATUSES, Message

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


@dataclass(frozen=True)
class LogFilter:
    status: str | None = None
    step: str | None = None
    patient_id: int | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts) or "all"


def check_filter(log_filter: LogFilter) -> LogFilter:
    """Refuse an unknown status with the field named."""
    if log_filter.status is not None and log_filter.status not in STATUSES:
        raise ValidationError("status", f"must be one of: {', '.join(STATUSES)}")
    return log_filter


def iter_log(*, session: so.Session, log_filter: LogFilter, batch: int = 1000) -> Iterator[Message]:
    """Yield the filtered log in due order, a batch at a time (no full load in memory)."""
    check_filter(log_filter)
    query = sa.select(Message).order_by(Message.due_at, Message.id)
    if log_filter.status is not None:
        query = query.where(Message.status == log_filter.status)
    if log_filter.step is not None:
        query = query.where(Message.step == log_filter.step)
    if log_filter.patient_id is not None:
        query = query.where(Message.patient_id == log_filter.patient_id)
    for message in session.scalars(query.execution_options(yield_per=batch)):
        yield message
        session.expunge(message)


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


def write_csv(messages: Iterable[Message], stream: TextIO) -> int:
    """Write the header and one row per text; return the row count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for message in messages:
        writer.writerow(csv_row(message))
        count += 1
    return count
