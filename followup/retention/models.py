"""Which patients the retention purge has emptied, and when."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime


class PurgedPatient(Base):
    """A patient whose name, phone, external ids and text bodies were removed."""

    __tablename__ = "purged_patients"

    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patients.id"), primary_key=True)
    purged_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    retention_days: so.Mapped[int] = so.mapped_column()
