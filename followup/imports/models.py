"""An import run (one file a nurse uploaded) and its per-row report."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"  # the file was refused, or the import stopped on an error


class ImportRun(Base):
    """One upload on the Import page; its status row is what the progress page polls."""

    __tablename__ = "import_runs"
    __table_args__ = (
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)
    created_by: so.Mapped[str] = so.mapped_column(sa.String(254))
    filename: so.Mapped[str] = so.mapped_column(sa.String(255))
    format: so.Mapped[str | None] = so.mapped_column(sa.String(16))  # csv, fhir-bundle, ...
    dry_run: so.Mapped[bool] = so.mapped_column(default=False)
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=QUEUED)
    total: so.Mapped[int | None] = so.mapped_column()  # rows to check, once the file is read
    processed: so.Mapped[int] = so.mapped_column(default=0)
    planned: so.Mapped[int] = so.mapped_column(default=0)
    already: so.Mapped[int] = so.mapped_column(default=0)
    refused: so.Mapped[int] = so.mapped_column(default=0)
    error: so.Mapped[str | None] = so.mapped_column(sa.String(1000))  # why the file was refused
    notes: so.Mapped[str | None] = so.mapped_column(sa.String(1000))  # e.g. resources ignored
    heartbeat_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    finished_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())


class ImportRow(Base):
    """One line (CSV) or resource (FHIR) of an import's report."""

    __tablename__ = "import_rows"
    __table_args__ = (sa.UniqueConstraint("run_id", "seq"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    run_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("import_runs.id", ondelete="CASCADE"))
    seq: so.Mapped[int] = so.mapped_column()  # order in the file
    ref: so.Mapped[str] = so.mapped_column(sa.String(200))  # "line 7", "entry 3 Procedure/x"
    patient: so.Mapped[str] = so.mapped_column(sa.String(250))  # name and masked phone
    outcome: so.Mapped[str] = so.mapped_column(sa.String(20))
    detail: so.Mapped[str] = so.mapped_column(sa.Text())
    patient_id: so.Mapped[int | None] = so.mapped_column()
