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
    *,
    session: so.Session,
    page: int,
    per_page: int = AUDIT_PAGE_SIZE,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[AuditEvent], bool]:
    """One page of audit events, newest first, filtered; and whether an older page exists.

    `actor` matches part of who acted, `action` the start of what was done ("user." finds
    every account change), `since`/`until` bound when (until exclusive).
    """
    page = max(1, page)
    query = sa.select(AuditEvent)
    if actor:
        query = query.where(sa.func.lower(AuditEvent.actor).contains(actor.strip().lower()))
    if action:
        query = query.where(AuditEvent.action.startswith(action.strip()))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    rows = list(
        session.scalars(
            query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page + 1)
        )
    )
    return rows[:per_page], len(rows) > per_page


def audit_actions(*, session: so.Session) -> list[str]:
    """Every action name recorded so far, for the filter's choices."""
    return list(
        session.scalars(sa.select(AuditEvent.action).distinct().order_by(AuditEvent.action))
    )
