"""Patients and their procedures."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.vocabulary import LANGUAGES, PROCEDURE_KINDS, PROCEDURE_STATUSES
from followup.db import Base, UTCDateTime

__all__ = ["LANGUAGES", "PROCEDURE_KINDS", "PROCEDURE_STATUSES", "Patient", "Procedure"]


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (sa.CheckConstraint("language IN ('en', 'es')", name="language"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    first_name: so.Mapped[str] = so.mapped_column(sa.String(100))
    last_name: so.Mapped[str] = so.mapped_column(sa.String(100))
    phone: so.Mapped[str] = so.mapped_column(sa.String(20), index=True)
    timezone: so.Mapped[str] = so.mapped_column(sa.String(64))
    language: so.Mapped[str] = so.mapped_column(sa.String(8), default="en")
    sms_consent_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    consent_recorded_by: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    opted_out_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime(), index=True)
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())

    procedures: so.WriteOnlyMapped[Procedure] = so.relationship(back_populates="patient")

    def can_receive_texts(self) -> bool:
        """Tell whether this patient consented and has not opted out."""
        return self.sms_consent_at is not None and self.opted_out_at is None


class Procedure(Base):
    __tablename__ = "procedures"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('kyphoplasty', 'vertebroplasty')", name="kind"),
        sa.CheckConstraint("status IN ('scheduled', 'completed', 'cancelled')", name="status"),
        sa.Index("ix_procedures_unplanned", "status", "planned_at"),
        sa.CheckConstraint("status != 'scheduled' OR scheduled_at IS NOT NULL", name="booked"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patients.id"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(32))
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="completed")
    completed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    # A booked procedure's time (UTC); kept after completion, for the record.
    scheduled_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    # The nurse's explicit answer to "does the patient take a blood thinner?" (NULL: enrolled
    # before the question was asked); blood_thinner holds the name on yes.
    takes_blood_thinner: so.Mapped[bool | None] = so.mapped_column()
    blood_thinner: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    # The patient's local date the doctor gave to stop the blood thinner (booked procedures).
    stop_blood_thinner_on: so.Mapped[date | None] = so.mapped_column(sa.Date())
    # The step whose text introduces the program to the patient (the welcome, or the first
    # post-procedure text's first_text variant); set when the texts are planned.
    intro_step: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    planned_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())

    patient: so.Mapped[Patient] = so.relationship(back_populates="procedures")
