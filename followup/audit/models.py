"""Audit events: who did what to which record, when. Never bodies or phone numbers."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)
    actor: so.Mapped[str] = so.mapped_column(sa.String(254))
    action: so.Mapped[str] = so.mapped_column(sa.String(64))
    record_type: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    record_id: so.Mapped[int | None] = so.mapped_column()
    detail: so.Mapped[str | None] = so.mapped_column(sa.String(500))
