"""Bulk enrollment (imports): many rows through the enrollment's own rules, written in sets."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.messaging.models import (
    Message,
)
from followup.messaging.outbox import (
    plan_procedures,
)
from followup.patients.models import Patient, Procedure
from followup.patients.service import (
    EXTERNAL_ID_TAKEN,
    LOOKUP_BATCH,
    OPTED_OUT_PHONE,
    SAME_PHONE_AND_TIME,
    Stored,
    lock_phones,
    patient_values,
    preview_enrollment,
    procedure_values,
    stored_conflicts,
    stored_for,
    time_key,
)
from followup.patients.validation import (
    Enrollment,
    EnrollmentForm,
    InvalidEnrollment,
    validate_enrollment,
)

log = logging.getLogger(__name__)


# --- bulk enrollment (imports) --------------------------------------------------------------

PLANNED = "planned"
ALREADY_ENROLLED = "already enrolled"
REFUSED = "refused"


@dataclass(frozen=True)
class BulkRow:
    """One enrollment of an import: `ref` names it in the file ("line 7"); `format_errors`
    are problems the file's format found before validation (a yes/no cell that says
    neither) and replace validation's message for the same field."""

    ref: str
    form: EnrollmentForm
    format_errors: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TextSummary:
    step: str
    due_at: datetime
    status: str  # pending, or expired when its window had passed


@dataclass(frozen=True)
class BulkOutcome:
    """What became of one BulkRow: planned, already enrolled (nothing written) or refused."""

    status: str  # PLANNED, ALREADY_ENROLLED or REFUSED
    errors: dict[str, str]  # refused: each bad field and why; already enrolled: the match
    enrollment: Enrollment | None = None
    patient_id: int | None = None
    procedure_id: int | None = None
    texts: tuple[TextSummary, ...] = ()


def enroll_bulk(
    *,
    session: so.Session,
    rows: Sequence[BulkRow],
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
    source: str,
    seen: dict[tuple[object, ...], str],
    dry_run: bool = False,
) -> list[BulkOutcome]:
    """Enroll many patients at once with the rules of `enroll_patient` (the caller commits).

    Each row is validated by `validate_enrollment` and checked against the same duplicate
    rules, set-based. A bad row is refused and nothing of it written; the others are
    inserted with a few statements (patients, procedures, audit events) and planned with
    the set-based `plan_procedures`. A row whose external id is already stored, or the same
    phone and time, is "already enrolled": re-importing a file adds nothing. `seen` carries,
    across calls, the rows of this file already accepted (by external id and by phone and
    time) so that a row repeated in the file is caught too. `dry_run` writes nothing and
    previews each plan instead. `source` names the file in the audit trail.
    """
    outcomes: list[BulkOutcome | None] = [None] * len(rows)
    accepted: list[tuple[int, Enrollment]] = []
    for index, row in enumerate(rows):
        try:
            enrollment = validate_enrollment(form=row.form, care=care, region=region, now=now)
        except InvalidEnrollment as exc:
            outcomes[index] = BulkOutcome(REFUSED, {**exc.errors, **row.format_errors})
            continue
        if row.format_errors:
            outcomes[index] = BulkOutcome(REFUSED, dict(row.format_errors))
            continue
        accepted.append((index, enrollment))
    if not dry_run:  # a check-only import writes nothing: it waits for nobody
        lock_phones(session=session, phones=[enrollment.phone for _, enrollment in accepted])
    stored = stored_for(session, [enrollment for _, enrollment in accepted])
    to_write: list[tuple[int, Enrollment]] = []
    for index, enrollment in accepted:
        outcome = _bulk_conflict(enrollment, stored, seen)
        if outcome is not None:
            outcomes[index] = outcome
            continue
        if enrollment.external_id is not None:
            seen[("external_id", enrollment.external_id)] = rows[index].ref
        seen[time_key(enrollment)] = rows[index].ref
        to_write.append((index, enrollment))
    if dry_run:
        for index, enrollment in to_write:
            texts = preview_enrollment(enrollment=enrollment, care=care, now=now)
            outcomes[index] = BulkOutcome(
                PLANNED,
                {},
                enrollment,
                texts=tuple(TextSummary(t.step, t.due_at, t.status) for t in texts),
            )
    elif to_write:
        written = _write_bulk(
            session=session,
            enrollments=[enrollment for _, enrollment in to_write],
            refs=[rows[index].ref for index, _ in to_write],
            care=care,
            now=now,
            actor=actor,
            source=source,
        )
        for (index, _), outcome in zip(to_write, written, strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _bulk_conflict(
    enrollment: Enrollment, stored: Stored, seen: dict[tuple[object, ...], str]
) -> BulkOutcome | None:
    """Refused (a number that replied STOP), already enrolled (stored, or earlier in the
    file), or None: the row is new."""
    conflicts = {conflict.kind: conflict for conflict in stored_conflicts(enrollment, stored)}
    if EXTERNAL_ID_TAKEN in conflicts:  # imported before, whatever happened since
        conflict = conflicts[EXTERNAL_ID_TAKEN]
        return BulkOutcome(ALREADY_ENROLLED, {conflict.field: conflict.message}, enrollment)
    if OPTED_OUT_PHONE in conflicts:
        conflict = conflicts[OPTED_OUT_PHONE]
        return BulkOutcome(REFUSED, {conflict.field: conflict.message}, enrollment)
    if SAME_PHONE_AND_TIME in conflicts:
        conflict = conflicts[SAME_PHONE_AND_TIME]
        return BulkOutcome(ALREADY_ENROLLED, {conflict.field: conflict.message}, enrollment)
    earlier = seen.get(("external_id", enrollment.external_id)) if enrollment.external_id else None
    if earlier is not None:
        return BulkOutcome(
            ALREADY_ENROLLED, {"external_id": f"the same as {earlier} of this file"}, enrollment
        )
    earlier = seen.get(time_key(enrollment))
    if earlier is not None:
        return BulkOutcome(
            ALREADY_ENROLLED,
            {"phone": f"the same phone and time as {earlier} of this file"},
            enrollment,
        )
    return None


def _write_bulk(
    *,
    session: so.Session,
    enrollments: list[Enrollment],
    refs: list[str],
    care: CareContext,
    now: datetime,
    actor: str,
    source: str,
) -> list[BulkOutcome]:
    """Insert checked enrollments set-based, plan them and audit them; one outcome each."""
    # Multi-row INSERTs. Their RETURNING rows come back in no promised order (asking for
    # parameter order makes SQLite insert one row at a time), so each id is matched to its
    # row by the values inserted: identical patient rows are interchangeable, and each
    # procedure has its own patient.
    patient_rows = [patient_values(e, now=now, actor=actor) for e in enrollments]
    columns = ("first_name", "last_name", "phone", "timezone", "language")
    ids_by_values: dict[tuple[object, ...], list[int]] = {}
    for returned in session.execute(
        sa.insert(Patient)
        .returning(Patient.id, *(getattr(Patient, name) for name in columns))
        .execution_options(render_nulls=True),
        patient_rows,
    ):
        ids_by_values.setdefault(tuple(returned[1:]), []).append(returned[0])
    patient_ids = [
        ids_by_values[tuple(row[name] for name in columns)].pop() for row in patient_rows
    ]
    procedure_by_patient: dict[int, int] = {}
    for patient_id, procedure_id in session.execute(
        sa.insert(Procedure)
        .returning(Procedure.patient_id, Procedure.id)
        .execution_options(render_nulls=True),
        [
            procedure_values(e, patient_id=patient_id, now=now)
            for e, patient_id in zip(enrollments, patient_ids, strict=True)
        ],
    ):
        procedure_by_patient[patient_id] = procedure_id
    procedure_ids = [procedure_by_patient[patient_id] for patient_id in patient_ids]
    plan_procedures(
        session=session, care=care, now=now, procedure_ids=procedure_ids, limit=len(procedure_ids)
    )
    session.execute(
        sa.insert(AuditEvent),
        [
            {
                "at": now,
                "actor": actor,
                "action": "patient.imported",
                "record_type": "patient",
                "record_id": patient_id,
                "detail": (
                    f"procedure {procedure_id} ({e.procedure}, "
                    f"{'scheduled' if e.booked else 'completed'}) from {source}, {ref}"
                )[:500],
            }
            for e, patient_id, procedure_id, ref in zip(
                enrollments, patient_ids, procedure_ids, refs, strict=True
            )
        ],
    )
    texts: dict[int, list[TextSummary]] = {}
    for start in range(0, len(procedure_ids), LOOKUP_BATCH):
        for procedure_id, step, due_at, status in session.execute(
            sa.select(Message.procedure_id, Message.step, Message.due_at, Message.status)
            .where(Message.procedure_id.in_(procedure_ids[start : start + LOOKUP_BATCH]))
            .order_by(Message.due_at, Message.id)
        ):
            texts.setdefault(procedure_id, []).append(TextSummary(step, due_at, status))
    log.debug("imported patients=%d procedures=%d", len(patient_ids), len(procedure_ids))
    return [
        BulkOutcome(PLANNED, {}, e, patient_id, procedure_id, tuple(texts.get(procedure_id, ())))
        for e, patient_id, procedure_id in zip(enrollments, patient_ids, procedure_ids, strict=True)
    ]
