"""Staff accounts: nurses and admins."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime

ROLES = ("nurse", "admin")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint("role IN ('nurse', 'admin')", name="role"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(255))
    role: so.Mapped[str] = so.mapped_column(sa.String(16))
    active: so.Mapped[bool] = so.mapped_column(default=True)
    failed_logins: so.Mapped[int] = so.mapped_column(default=0)
    locked_until: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
