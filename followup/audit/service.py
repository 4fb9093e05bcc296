"""Write audit events."""

from __future__ import annotations

from datetime import datetime

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
