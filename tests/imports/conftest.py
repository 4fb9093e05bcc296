"""Run an import through the real services against the test database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.imports.service import ImportSummary, ReportRow, import_items, parse_uploads
from followup.imports.source import Upload
from followup.messaging.models import Message
from followup.patients.models import Patient, Procedure


@dataclass
class Result:
    summary: ImportSummary
    rows: list[ReportRow]

    def by_ref(self, ref: str) -> ReportRow:
        matches = [row for row in self.rows if row.ref == ref or row.ref.startswith(ref + " ")]
        assert len(matches) == 1, (ref, [row.ref for row in self.rows])
        return matches[0]


Importer = Callable[..., Result]


@pytest.fixture
def run_import(
    session_factory: so.sessionmaker[so.Session], care: CareContext, clock: FakeClock
) -> Importer:
    """Import files ({name: text or bytes}) as the CLI does; returns the summary and rows."""

    def _run(files: dict[str, str | bytes], *, dry_run: bool = False) -> Result:
        uploads = [
            Upload(name, data.encode("utf-8") if isinstance(data, str) else data)
            for name, data in files.items()
        ]
        parsed = parse_uploads(uploads, default_timezone="America/New_York", now=clock.now())
        rows: list[ReportRow] = []
        summary = import_items(
            session_factory=session_factory,
            parsed=parsed,
            care=care,
            region="US",
            now=clock.now(),
            actor="nurse@example.org",
            source=", ".join(files),
            dry_run=dry_run,
            on_chunk=lambda _session, chunk: rows.extend(chunk),
        )
        return Result(summary, rows)

    return _run


def counts(session: so.Session) -> dict[str, int]:
    session.expire_all()
    return {
        model.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
        for model in (Patient, Procedure, Message, AuditEvent)
    }
