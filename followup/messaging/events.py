"""A text's event rows and its guarded outcome UPDATE, shared by every stage of the outbox."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from followup.db import is_postgresql
from followup.messaging.models import (
    PENDING,
    SENDING,
    Message,
    MessageEvent,
)


@lru_cache(maxsize=1)
def _events_insert() -> sa.Insert:
    return sa.insert(MessageEvent.__table__)  # type: ignore[arg-type]


@lru_cache(maxsize=64)
def _outcome_update(columns: tuple[str, ...], *, guarded: bool) -> sa.Update:
    """A cached UPDATE of one text's outcome: built once per column set, not per text."""
    table = Message.__table__
    statement = sa.update(table).where(table.c.id == sa.bindparam("p_id"))  # type: ignore[arg-type]
    if guarded:  # only while the lease is ours
        statement = statement.where(
            table.c.status == SENDING, table.c.lease_owner == sa.bindparam("p_owner")
        )
    else:
        statement = statement.where(table.c.status.in_((PENDING, SENDING)))
    return statement.values({column: sa.bindparam(f"v_{column}") for column in columns})


def update_outcome(
    session: so.Session, message_id: int, values: dict[str, Any], *, owner: str | None
) -> bool:
    """Write one text's outcome; with an owner, only while it is `sending` under that lease."""
    columns = tuple(sorted(values))
    params = {f"v_{k}": v for k, v in values.items()}
    params.update(p_id=message_id, p_owner=owner)
    result = session.execute(_outcome_update(columns, guarded=owner is not None), params)
    return bool(getattr(result, "rowcount", 0))


def add_events(session: so.Session, rows: list[dict[str, Any]]) -> None:
    """Append rows to the texts' history in one INSERT."""
    if rows:
        session.execute(_events_insert(), rows)


def event_row(
    message_id: int, now: datetime, kind: str, status: str | None, detail: str | None = None
) -> dict[str, Any]:
    """Build one history row for add_events."""
    return {"message_id": message_id, "at": now, "kind": kind, "status": status, "detail": detail}


def insert_ignoring_duplicates(session: so.Session) -> Any:
    """An INSERT of texts that skips a (procedure, step) already planned."""
    dialect = postgresql if is_postgresql(session) else sqlite
    return dialect.insert(Message).on_conflict_do_nothing(index_elements=["procedure_id", "step"])


def release(message: Message, status: str, now: datetime) -> None:
    """Give up a claimed text's lease, leaving it in `status`."""
    message.status = status
    message.lease_owner = None
    message.lease_expires_at = None
    message.updated_at = now
