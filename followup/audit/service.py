"""Write audit events."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent


def record_audit(
    *,
    session: so.Session,
    actor: str,
    action: str,
    now: datetime,
    record_type: str | None = None,
    record_id: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Add one audit event to the session (the caller commits with its change)."""
    event = AuditEvent(
        at=now,
        actor=actor,
        action=action,
        record_type=record_type,
        record_id=record_id,
        detail=detail,
    )
    session.add(event)
    return event


AUDIT_PAGE_SIZE = 50


def recent_audit_events(
    *, session: so.Session, page: int, per_page: int = AUDIT_PAGE_SIZE
) -> tuple[list[AuditEvent], bool]:
    """Return one page of audit events, newest first, and whether an older page exists."""
    page = max(1, page)
    rows = list(
        session.scalars(
            sa.select(AuditEvent)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page + 1)
        )
    )
    return rows[:per_page], len(rows) > per_page
