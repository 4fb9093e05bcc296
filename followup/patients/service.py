"""Enrollment: a validated patient and procedure, written once, with their texts planned."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.care.planner import PlannedText, choose_intro, plan_procedure
from followup.care.protocol import CareContext
from followup.db import advisory_key, is_postgresql, sqlite_write_lock
from followup.errors import ValidationError
from followup.messaging.models import (
    Message,
)
from followup.messaging.outbox import (
    plan_procedures,
)
from followup.patients.models import Patient, Procedure
from followup.patients.validation import (
    Enrollment,
    EnrollmentForm,
    EnrollmentResult,
    PatientOptedOut,
    validate_enrollment,
)

log = logging.getLogger(__name__)


def preview_enrollment(
    *, enrollment: Enrollment, care: CareContext, now: datetime
) -> list[PlannedText]:
    """Plan an enrollment's texts without writing anything, in due order (the text that
    introduces the program included)."""
    protocol = care.protocol(enrollment.procedure)
    planned = plan_procedure(
        protocol=protocol,
        completed_at=enrollment.completed_at,
        scheduled_at=enrollment.scheduled_at,
        stop_on=enrollment.stop_blood_thinner_on,
        tz=enrollment.tz,
        has_blood_thinner=enrollment.blood_thinner is not None,
        quiet_hours=care.quiet_hours,
        now=now,
    )
    _, welcome = choose_intro(
        protocol=protocol, planned=planned, tz=enrollment.tz, quiet_hours=care.quiet_hours, now=now
    )
    return [welcome, *planned] if welcome is not None else planned


def enroll_patient(
    *,
    session: so.Session,
    form: EnrollmentForm,
    care: CareContext,
    region: str,
    now: datetime,
    actor: str,
) -> EnrollmentResult:
    """Validate and save a patient, their procedure and its plan (the caller commits once).

    A procedure already done gets its post-procedure texts; a booked one the welcome and
    the texts before it (its post-procedure texts come with `complete_procedure`).
    """
    enrollment = validate_enrollment(form=form, care=care, region=region, now=now)
    # Held until the caller commits: an import or another nurse enrolling the same phone
    # at the same moment waits, then finds this enrollment (a preview takes no lock).
    lock_phones(session=session, phones=[enrollment.phone])
    refuse_duplicates(session=session, enrollment=enrollment)
    patient = Patient(**patient_values(enrollment, now=now, actor=actor))
    session.add(patient)
    session.flush()
    procedure = Procedure(**procedure_values(enrollment, patient_id=patient.id, now=now))
    session.add(procedure)
    session.flush()
    plan_procedures(session=session, care=care, now=now, procedure_ids=[procedure.id])
    # Planning is a bulk UPDATE: a just-flushed object does not see it without a refresh.
    session.refresh(procedure)
    record_audit(
        session=session,
        actor=actor,
        action="patient.enrolled",
        now=now,
        record_type="patient",
        record_id=patient.id,
        detail=f"procedure {procedure.id} ({procedure.kind}, {procedure.status})",
    )
    log.info("enrolled patient=%s procedure=%s", patient.id, procedure.id)
    return EnrollmentResult(
        patient=patient,
        procedure=procedure,
        messages=messages_for_procedure(session=session, procedure_id=procedure.id),
    )


def patient_values(enrollment: Enrollment, *, now: datetime, actor: str) -> dict[str, object]:
    """The patients row of an enrollment (consent recorded by `actor`, now)."""
    return {
        "first_name": enrollment.first_name,
        "last_name": enrollment.last_name,
        "phone": enrollment.phone,
        "timezone": enrollment.timezone,
        "language": enrollment.language,
        "sms_consent_at": now,
        "consent_recorded_by": actor,
        "created_at": now,
    }


def procedure_values(
    enrollment: Enrollment, *, patient_id: int, now: datetime
) -> dict[str, object]:
    """The procedures row of an enrollment."""
    return {
        "patient_id": patient_id,
        "kind": enrollment.procedure,
        "status": "scheduled" if enrollment.booked else "completed",
        "completed_at": enrollment.completed_at,
        "scheduled_at": enrollment.scheduled_at,
        "takes_blood_thinner": enrollment.takes_blood_thinner,
        "blood_thinner": enrollment.blood_thinner,
        "stop_blood_thinner_on": enrollment.stop_blood_thinner_on,
        "external_id": enrollment.external_id,
        "created_at": now,
    }


# What an enrollment collides with in the database, in the order the single enrollment
# reports it: a number that replied STOP, the same phone and time, a used external id.
OPTED_OUT_PHONE = "opted_out"
SAME_PHONE_AND_TIME = "same_time"
EXTERNAL_ID_TAKEN = "external_id"


@dataclass(frozen=True)
class StoredConflict:
    kind: str  # OPTED_OUT_PHONE, SAME_PHONE_AND_TIME or EXTERNAL_ID_TAKEN
    field: str
    message: str


@dataclass
class Stored:
    """What the database already holds for some enrollments' phones and external ids."""

    opted_out: set[str]
    # (phone, "completed" | "booked", instant) -> the patient enrolled with it
    times: dict[tuple[str, str, datetime], int]
    external_ids: dict[str, int]  # external id -> procedure id


LOOKUP_BATCH = 1000  # values per IN (...) list

# The advisory locks' class (their first key): "an enrollment is checking and writing this
# phone" (messaging.claims holds 0x46550001).
PHONE_ENROLLMENT_LOCK = 0x46550002


def lock_phones(*, session: so.Session, phones: Iterable[str]) -> None:
    """Serialize enrollments of these phones until the transaction ends; call it before
    the duplicate check (`stored_for`), so the check sees any enrollment of the same phone
    another request is writing, committed, instead of both inserting the same patient.

    PostgreSQL: a transaction-level advisory lock per phone, taken in key order so that
    two imports of overlapping files cannot deadlock. SQLite: the database's write lock,
    taken by a no-op UPDATE, as pysqlite begins a transaction only at its first write and
    the reads before it lock nothing (one writer at a time: every phone at once)."""
    keys = sorted({advisory_key(phone) for phone in phones})
    if not keys:
        return
    if is_postgresql(session):
        # unnest yields the sorted keys in order, so they are locked in that order.
        session.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(:lock_class, k)"
                " FROM unnest(CAST(:keys AS integer[])) AS k"
            ),
            {"keys": keys, "lock_class": PHONE_ENROLLMENT_LOCK},
        )
        return
    sqlite_write_lock(session, cast(sa.Table, Patient.__table__))


def stored_for(session: so.Session, enrollments: Sequence[Enrollment]) -> Stored:
    """Read, set-based, what the database holds for these enrollments' phones and ids."""
    stored = Stored(opted_out=set(), times={}, external_ids={})
    phones = sorted({e.phone for e in enrollments})
    for start in range(0, len(phones), LOOKUP_BATCH):
        rows = session.execute(
            sa.select(
                Patient.phone,
                Patient.id,
                Patient.opted_out_at,
                Procedure.completed_at,
                Procedure.scheduled_at,
                Procedure.status,
            )
            .outerjoin(Procedure, Procedure.patient_id == Patient.id)
            .where(Patient.phone.in_(phones[start : start + LOOKUP_BATCH]))
        ).all()
        for phone, patient_id, opted_out_at, completed_at, scheduled_at, status in rows:
            if opted_out_at is not None:
                stored.opted_out.add(phone)
            if status is None or status == "cancelled":
                continue
            for kind, instant in (("completed", completed_at), ("booked", scheduled_at)):
                if instant is not None:
                    stored.times.setdefault((phone, kind, instant), patient_id)
    ids = sorted({e.external_id for e in enrollments if e.external_id is not None})
    for start in range(0, len(ids), LOOKUP_BATCH):
        for external_id, procedure_id in session.execute(
            sa.select(Procedure.external_id, Procedure.id).where(
                Procedure.external_id.in_(ids[start : start + LOOKUP_BATCH])
            )
        ):
            stored.external_ids[str(external_id)] = procedure_id
    return stored


def time_key(enrollment: Enrollment) -> tuple[str, str, datetime]:
    if enrollment.completed_at is not None:
        return (enrollment.phone, "completed", enrollment.completed_at)
    assert enrollment.scheduled_at is not None  # noqa: S101 - validated: one of the two
    return (enrollment.phone, "booked", enrollment.scheduled_at)


def stored_conflicts(enrollment: Enrollment, stored: Stored) -> list[StoredConflict]:
    """Every way `enrollment` collides with what is stored (the duplicate rules)."""
    found = []
    if enrollment.phone in stored.opted_out:
        found.append(
            StoredConflict(
                OPTED_OUT_PHONE,
                "phone",
                "this number replied STOP; the patient must text START before enrolling",
            )
        )
    duplicate = stored.times.get(time_key(enrollment))
    if duplicate is not None:
        what = "completion" if enrollment.completed_at is not None else "booked"
        found.append(
            StoredConflict(
                SAME_PHONE_AND_TIME,
                "phone",
                f"already enrolled with the same {what} time (patient {duplicate})",
            )
        )
    taken = stored.external_ids.get(enrollment.external_id or "")
    if taken is not None:
        found.append(
            StoredConflict(EXTERNAL_ID_TAKEN, "external_id", f"already used by procedure {taken}")
        )
    return found


def refuse_duplicates(*, session: so.Session, enrollment: Enrollment) -> None:
    conflicts = stored_conflicts(enrollment, stored_for(session, [enrollment]))
    if conflicts:
        first = conflicts[0]
        error = PatientOptedOut if first.kind == OPTED_OUT_PHONE else ValidationError
        raise error(first.field, first.message)


def messages_for_procedure(*, session: so.Session, procedure_id: int) -> list[Message]:
    """Return a procedure's texts in due order."""
    return list(
        session.scalars(
            sa.select(Message)
            .where(Message.procedure_id == procedure_id)
            .order_by(Message.due_at, Message.id)
        )
    )
