"""Importing patients: read the file, enroll its rows in chunks, report on every row.

Every row goes through `enroll_bulk` (patients/bulk.py): the enrollment's own
validation and duplicate rules, set-based. Each chunk of rows is one transaction, so a
crash mid-file keeps the chunks before it, and importing the same file again adds nothing.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.care.protocol import CareContext
from followup.care.texts import short_local
from followup.imports.csvformat import parse_csv
from followup.imports.fhirformat import parse_fhir
from followup.imports.models import DONE, FAILED, QUEUED, RUNNING, ImportRow, ImportRun
from followup.imports.source import (
    CSV,
    FileRefused,
    ImportItem,
    ParsedImport,
    Upload,
    detect_format,
    printable,
)
from followup.logsafe import log_failure
from followup.messaging.models import EXPIRED
from followup.patients.bulk import ALREADY_ENROLLED, PLANNED, REFUSED, BulkOutcome, enroll_bulk
from followup.runtime import Runtime

log = logging.getLogger(__name__)

CHUNK = 1000  # rows a transaction
CHUNK_ATTEMPTS = 3  # a chunk that collides with a concurrent enrollment is checked again
WOULD_PLAN = "would be planned"  # a dry run's PLANNED
REPORT_KEEP = timedelta(days=30)  # import reports (with names) are deleted after this long
STALE_AFTER = timedelta(minutes=5)  # a running import silent this long has stopped
REPORT_HEADER = ["row", "patient", "outcome", "patient_id", "detail"]


@dataclass(frozen=True)
class ReportRow:
    seq: int
    ref: str
    patient: str
    outcome: str  # planned, would be planned, already enrolled, refused
    detail: str
    patient_id: int | None = None


@dataclass
class ImportSummary:
    format: str
    total: int
    dry_run: bool
    planned: int = 0
    already: int = 0
    refused: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, rows: Iterable[ReportRow]) -> None:
        for row in rows:
            if row.outcome in (PLANNED, WOULD_PLAN):
                self.planned += 1
            elif row.outcome == ALREADY_ENROLLED:
                self.already += 1
            else:
                self.refused += 1

    def describe(self) -> str:
        planned = "would be planned" if self.dry_run else "planned"
        text = (
            f"{self.total:,} rows: {self.planned:,} {planned}, {self.already:,} already "
            f"enrolled (nothing added), {self.refused:,} refused"
        )
        if self.refused and not self.dry_run:
            text += " (the other rows were imported)"
        if self.dry_run:
            text += "; dry run: nothing was written"
        return text


def parse_uploads(
    uploads: Sequence[Upload], *, default_timezone: str, now: datetime
) -> ParsedImport:
    """Read one CSV file, or one or more FHIR files (Bundles, NDJSON) taken together."""
    if not uploads:
        raise FileRefused("no file was given")
    formats = [detect_format(upload) for upload in uploads]
    if CSV in formats:
        if len(uploads) > 1:
            raise FileRefused("import one CSV file at a time (several files are for FHIR NDJSON)")
        return parse_csv(uploads[0], default_timezone=default_timezone)
    return parse_fhir(list(uploads), default_timezone=default_timezone, now=now)


def import_items(
    *,
    session_factory: so.sessionmaker[so.Session],
    parsed: ParsedImport,
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
    source: str,
    dry_run: bool,
    on_chunk: Callable[[so.Session, list[ReportRow]], None] | None = None,
) -> ImportSummary:
    """Enroll every item, a chunk a transaction; call `on_chunk` inside each transaction
    (to store the report and the progress with the chunk); return the counts."""
    summary = ImportSummary(
        format=parsed.format, total=len(parsed.items), dry_run=dry_run, notes=parsed.notes
    )
    seen: dict[tuple[object, ...], str] = {}
    for start in range(0, len(parsed.items), CHUNK):
        chunk = parsed.items[start : start + CHUNK]
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            before = dict(seen)
            with session_factory() as session:
                try:
                    rows = _import_chunk(
                        session=session,
                        chunk=chunk,
                        first_seq=start + 1,
                        care=care,
                        region=region,
                        now=now,
                        actor=actor,
                        source=source,
                        dry_run=dry_run,
                        seen=seen,
                    )
                    if on_chunk is not None:
                        on_chunk(session, rows)
                    session.commit()
                except sqlalchemy.exc.IntegrityError:
                    # Another enrollment took an external id (or a row) between the check
                    # and the insert: nothing of the chunk was kept; check it again.
                    session.rollback()
                    seen.clear()
                    seen.update(before)
                    if attempt == CHUNK_ATTEMPTS:
                        raise
                    log.warning("import chunk at row %d collided; checking it again", start + 1)
                    continue
            summary.add(rows)
            break
    if not dry_run:
        with session_factory() as session:
            record_audit(
                session=session,
                actor=actor,
                action="patients.imported",
                now=now,
                detail=f"{source}: {summary.describe()}"[:500],
            )
            session.commit()
    return summary


def _import_chunk(
    *,
    session: so.Session,
    chunk: list[ImportItem],
    first_seq: int,
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
    source: str,
    dry_run: bool,
    seen: dict[tuple[object, ...], str],
) -> list[ReportRow]:
    readable = [item for item in chunk if item.row is not None]
    outcomes = enroll_bulk(
        session=session,
        rows=[item.row for item in readable if item.row is not None],
        care=care,
        region=region,
        now=now,
        actor=actor,
        source=source,
        seen=seen,
        dry_run=dry_run,
    )
    by_item = {id(item): outcome for item, outcome in zip(readable, outcomes, strict=True)}
    rows = []
    for offset, item in enumerate(chunk):
        outcome = by_item.get(id(item))
        rows.append(_report_row(first_seq + offset, item, outcome, dry_run=dry_run))
    return rows


def _named(item: ImportItem, errors: dict[str, str]) -> str:
    """Each error with the file's name for its field ("mobile_phone: ..."); an error about
    the whole row or resource (field "") as it is."""
    return "; ".join(
        f"{item.field_names.get(name, name)}: {message}" if name else message
        for name, message in errors.items()
    )


def _report_row(
    seq: int, item: ImportItem, outcome: BulkOutcome | None, *, dry_run: bool
) -> ReportRow:
    if outcome is None:
        return ReportRow(seq, item.ref, item.patient, REFUSED, _named(item, item.errors))
    if outcome.status == REFUSED:
        return ReportRow(seq, item.ref, item.patient, REFUSED, _named(item, outcome.errors))
    if outcome.status == ALREADY_ENROLLED:
        return ReportRow(
            seq, item.ref, item.patient, ALREADY_ENROLLED, _named(item, outcome.errors)
        )
    enrollment = outcome.enrollment
    assert enrollment is not None  # noqa: S101 - a planned outcome carries its enrollment
    tz = enrollment.tz
    what = (
        f"booked {short_local(enrollment.scheduled_at, tz)}"
        if enrollment.scheduled_at is not None
        else f"finished {short_local(enrollment.completed_at, tz)}"
        if enrollment.completed_at is not None
        else ""
    )
    pending = [text for text in outcome.texts if text.status != EXPIRED]
    expired = [text for text in outcome.texts if text.status == EXPIRED]
    parts = [
        f"{enrollment.procedure} {what}",
        f"{len(pending)} text{'s' if len(pending) != 1 else ''}: "
        + (", ".join(f"{t.step} {short_local(t.due_at, tz)}" for t in pending) or "none"),
    ]
    if expired:
        parts.append(
            "expired (their window had passed): " + ", ".join(text.step for text in expired)
        )
    if enrollment.blood_thinner:
        parts.append(f"blood thinner {enrollment.blood_thinner}")
    if dry_run:
        return ReportRow(seq, item.ref, item.patient, WOULD_PLAN, "; ".join(parts))
    return ReportRow(
        seq,
        item.ref,
        item.patient,
        PLANNED,
        f"patient {outcome.patient_id}: " + "; ".join(parts),
        outcome.patient_id,
    )


def report_csv_lines(rows: Iterable[ReportRow]) -> Iterator[str]:
    """The per-row report as CSV lines (row, patient, outcome, patient_id, detail)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_HEADER)
    for row in rows:
        writer.writerow(
            [row.ref, row.patient, row.outcome, row.patient_id or "", _csv_safe(row.detail)]
        )
        if out.tell() > 64_000:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def write_report_csv(rows: Iterable[ReportRow], out: TextIO) -> None:
    """Write the per-row report as CSV to `out`."""
    out.writelines(report_csv_lines(rows))


def _csv_safe(value: str) -> str:
    """Keep a spreadsheet from reading a cell as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


# --- the web page's imports: a status row, a background thread ------------------------------


def forget_old_reports(*, session: so.Session, now: datetime) -> int:
    """Delete import reports (they hold names) older than REPORT_KEEP; return how many."""
    old = list(
        session.scalars(sa.select(ImportRun.id).where(ImportRun.created_at < now - REPORT_KEEP))
    )
    if old:
        session.execute(sa.delete(ImportRow).where(ImportRow.run_id.in_(old)))
        session.execute(sa.delete(ImportRun).where(ImportRun.id.in_(old)))
    return len(old)


def create_run(
    *, session: so.Session, filename: str, actor: str, dry_run: bool, now: datetime
) -> ImportRun:
    """Record an upload about to be imported (and forget reports past REPORT_KEEP)."""
    forget_old_reports(session=session, now=now)
    run = ImportRun(
        created_at=now,
        created_by=actor,
        filename=filename[:255],
        dry_run=dry_run,
        status=QUEUED,
        heartbeat_at=now,
    )
    session.add(run)
    session.flush()
    return run


def run_import(*, runtime: Runtime, run_id: int, uploads: list[Upload]) -> None:
    """Import an upload for the web page, keeping its status row and report up to date."""
    settings = runtime.settings
    now = runtime.clock.now()
    factory = runtime.session_factory
    with factory() as session:
        run = session.get(ImportRun, run_id)
        if run is None:
            return
        actor, dry_run = run.created_by, run.dry_run
        run.status = RUNNING
        session.commit()
    try:
        parsed = parse_uploads(uploads, default_timezone=settings.default_timezone, now=now)
    except FileRefused as exc:
        _finish(factory, run_id, runtime.clock.now(), error=str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - the page must say the import stopped
        log_failure(log, "import %s could not read its file", run_id, exc=exc)
        _finish(factory, run_id, runtime.clock.now(), error="the file could not be read")
        return
    with factory() as session:
        session.execute(
            sa.update(ImportRun)
            .where(ImportRun.id == run_id)
            .values(
                format=parsed.format,
                total=len(parsed.items),
                notes="; ".join(parsed.notes)[:1000] or None,
                heartbeat_at=runtime.clock.now(),
            )
        )
        session.commit()

    def store(session: so.Session, rows: list[ReportRow]) -> None:
        session.execute(
            sa.insert(ImportRow),
            [
                {
                    "run_id": run_id,
                    "seq": row.seq,
                    "ref": printable(row.ref)[:200],
                    "patient": printable(row.patient)[:250],
                    "outcome": row.outcome,
                    "detail": printable(row.detail),
                    "patient_id": row.patient_id,
                }
                for row in rows
            ],
        )
        counts = ImportSummary(format="", total=0, dry_run=dry_run)
        counts.add(rows)
        session.execute(
            sa.update(ImportRun)
            .where(ImportRun.id == run_id)
            .values(
                processed=ImportRun.processed + len(rows),
                planned=ImportRun.planned + counts.planned,
                already=ImportRun.already + counts.already,
                refused=ImportRun.refused + counts.refused,
                heartbeat_at=runtime.clock.now(),
            )
        )

    try:
        import_items(
            session_factory=factory,
            parsed=parsed,
            care=runtime.care,
            region=settings.default_region,
            now=now,
            actor=actor,
            source=f"import {run_id}",
            dry_run=dry_run,
            on_chunk=store,
        )
    except Exception as exc:  # noqa: BLE001 - the page must say the import stopped
        log_failure(log, "import %s stopped", run_id, exc=exc)
        _finish(
            factory,
            run_id,
            runtime.clock.now(),
            error="the import stopped on an unexpected error; the rows reported were saved. "
            "Import the same file again: rows already imported are skipped",
        )
        return
    _finish(factory, run_id, runtime.clock.now())
    log.info("import %s finished", run_id)


def _finish(
    factory: so.sessionmaker[so.Session], run_id: int, now: datetime, error: str | None = None
) -> None:
    with factory() as session:
        session.execute(
            sa.update(ImportRun)
            .where(ImportRun.id == run_id)
            .values(
                status=FAILED if error else DONE,
                error=error[:1000] if error else None,
                finished_at=now,
                heartbeat_at=now,
            )
        )
        session.commit()


def start_in_background(
    *, runtime: Runtime, run_id: int, uploads: list[Upload]
) -> threading.Thread:
    """Run an import in a thread of this process; the page follows its status row."""
    thread = threading.Thread(
        target=run_import,
        kwargs={"runtime": runtime, "run_id": run_id, "uploads": uploads},
        name=f"import-{run_id}",
        daemon=True,
    )
    thread.start()
    return thread


def is_stalled(run: ImportRun, now: datetime) -> bool:
    """A queued or running import whose process stopped (nothing heard for STALE_AFTER)."""
    if run.status not in (QUEUED, RUNNING):
        return False
    return run.heartbeat_at is None or now - run.heartbeat_at > STALE_AFTER


def recent_runs(*, session: so.Session, limit: int = 20) -> list[ImportRun]:
    """The latest imports, newest first."""
    return list(
        session.scalars(
            sa.select(ImportRun)
            .order_by(ImportRun.created_at.desc(), ImportRun.id.desc())
            .limit(limit)
        )
    )


def get_run(*, session: so.Session, run_id: int) -> ImportRun:
    from followup.errors import NotFound

    run = session.get(ImportRun, run_id)
    if run is None:
        raise NotFound(f"no import {run_id}")
    return run


REPORT_PAGE = 500


def report_rows(
    *,
    session: so.Session,
    run_id: int,
    outcome: str | None = None,
    after: int = 0,
    limit: int | None = REPORT_PAGE,
) -> Iterator[ReportRow]:
    """An import's report in file order (one outcome only, if given), after row `after`."""
    query = sa.select(ImportRow).where(ImportRow.run_id == run_id, ImportRow.seq > after)
    if outcome:
        query = query.where(ImportRow.outcome == outcome)
    query = query.order_by(ImportRow.seq)
    if limit is not None:
        query = query.limit(limit)
    for row in session.scalars(query.execution_options(yield_per=1000)):
        yield ReportRow(row.seq, row.ref, row.patient, row.outcome, row.detail, row.patient_id)
