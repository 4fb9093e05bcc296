"""The retention purge: `followup purge` and the scheduler's daily `purge` job.

A patient whose last procedure ended more than RETENTION_DAYS ago loses what identifies
them: first and last name, phone number, the clinic's external ids (patient and
procedure), the bodies and numbers of the texts sent to them, the bodies and numbers of
their replies, and the notes staff wrote about those replies and texts. What stays is
what the dashboard and the send log count: each text's step, status, attempts, error
code and times, each reply's kind and pain score, the procedure's kind and dates. Replies
from numbers that matched no patient are emptied the same way once they are older than
RETENTION_DAYS.

A patient is kept whole while anything is still open for them: a procedure still
scheduled, a text still pending or being sent before its expiry, or a reply received
within the retention period. Each purged patient gets an audit event (`patient.purged`) and a row in
`purged_patients`; each run that removed anything, one `retention.purged` event with its
counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.audit.service import record_audit
from followup.db import is_postgresql
from followup.imports.service import forget_old_reports
from followup.inbox.models import AttentionResolution, UnreachableResolution
from followup.messaging.models import PENDING, SENDING, InboundMessage, Message
from followup.messaging.reports import Report
from followup.patients.models import Patient, Procedure
from followup.retention.models import PurgedPatient

REMOVED = "(removed)"  # stands in for a name, a reply's body and a staff note
PURGE_BATCH = 500  # patients per transaction


@dataclass
class PurgeReport(Report):
    patients: int = 0
    texts: int = 0  # texts whose body and number were removed
    replies: int = 0  # replies from those patients
    unknown_replies: int = 0  # replies from numbers that matched no patient
    import_reports: int = 0  # import reports (names of imported rows) past their 30 days


def retention_cutoff(*, now: datetime, retention_days: int) -> datetime:
    """Patients whose last procedure ended before this instant are past retention."""
    return now - timedelta(days=retention_days)


def _candidates(cutoff: datetime, now: datetime) -> sa.Select[Any]:
    """Patients past retention with nothing open, not yet purged, in id order."""
    # A procedure ended when it was completed; a cancelled booking, at its booked time.
    ended = sa.func.max(
        sa.func.coalesce(Procedure.completed_at, Procedure.scheduled_at, Procedure.created_at)
    )
    last = (
        sa.select(Procedure.patient_id.label("patient_id"), ended.label("ended"))
        .group_by(Procedure.patient_id)
        .subquery()
    )
    return (
        sa.select(Patient.id)
        .join(last, last.c.patient_id == Patient.id)
        .where(
            last.c.ended < cutoff,
            ~sa.exists().where(PurgedPatient.patient_id == Patient.id),
            ~sa.exists().where(Procedure.patient_id == Patient.id, Procedure.status == "scheduled"),
            ~sa.exists().where(
                Message.patient_id == Patient.id,
                Message.status.in_((PENDING, SENDING)),
                Message.expires_at > now,
            ),
            ~sa.exists().where(
                InboundMessage.patient_id == Patient.id, InboundMessage.received_at >= cutoff
            ),
        )
        .order_by(Patient.id)
    )


def _unknown_replies(cutoff: datetime) -> sa.Select[Any]:
    return (
        sa.select(InboundMessage.id)
        .where(
            InboundMessage.patient_id.is_(None),
            InboundMessage.received_at < cutoff,
            InboundMessage.from_phone != "",
        )
        .order_by(InboundMessage.id)
    )


def _has_text(column: Any) -> sa.ColumnElement[bool]:
    return sa.and_(column.is_not(None), column != REMOVED)


def preview_purge(*, session: so.Session, now: datetime, retention_days: int) -> PurgeReport:
    """Count what a purge would remove now; write nothing."""
    cutoff = retention_cutoff(now=now, retention_days=retention_days)
    patients = _candidates(cutoff, now).subquery()
    ids = sa.select(patients.c.id)

    def count(query: sa.Select[Any]) -> int:
        return session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0

    return PurgeReport(
        patients=count(ids),
        texts=count(
            sa.select(Message.id).where(
                Message.patient_id.in_(ids),
                sa.or_(Message.body.is_not(None), Message.to_phone.is_not(None)),
            )
        ),
        replies=count(
            sa.select(InboundMessage.id).where(
                InboundMessage.patient_id.in_(ids), _has_text(InboundMessage.body)
            )
        ),
        unknown_replies=count(_unknown_replies(cutoff)),
    )


def purge_expired(
    *,
    session: so.Session,
    now: datetime,
    retention_days: int,
    actor: str,
    batch: int = PURGE_BATCH,
) -> PurgeReport:
    """Remove what identifies the patients past retention; return the counts.

    Commits each batch of patients with its audit events, so a first purge of years of
    patients holds no long lock. Safe to run in several processes at once: on PostgreSQL a
    batch skips patients another process has locked, and a purged patient is never
    purged again.
    """
    cutoff = retention_cutoff(now=now, retention_days=retention_days)
    report = PurgeReport()
    while True:
        query = _candidates(cutoff, now).limit(batch)
        if is_postgresql(session):
            query = query.with_for_update(skip_locked=True, of=Patient)
        ids = list(session.scalars(query))
        if not ids:
            break
        _purge_patients(
            session=session,
            ids=ids,
            now=now,
            retention_days=retention_days,
            cutoff=cutoff,
            actor=actor,
            report=report,
        )
        session.commit()
    while True:
        query = _unknown_replies(cutoff).limit(batch)
        if is_postgresql(session):
            query = query.with_for_update(skip_locked=True)
        reply_ids = list(session.scalars(query))
        if not reply_ids:
            break
        _scrub_handled_notes(session, reply_ids=reply_ids)
        report.unknown_replies += _empty_replies(session, InboundMessage.id.in_(reply_ids))
        session.commit()
    # Import reports name the rows they imported: they go after 30 days, imports or not.
    report.import_reports = forget_old_reports(session=session, now=now)
    session.commit()
    if report.patients or report.unknown_replies:
        record_audit(
            session=session,
            actor=actor,
            action="retention.purged",
            now=now,
            detail=(
                f"retention {retention_days} days, cutoff {cutoff:%Y-%m-%d %H:%M} UTC: "
                f"{report.patients} patients, {report.texts} texts, {report.replies} replies, "
                f"{report.unknown_replies} replies from unknown numbers"
            ),
        )
        session.commit()
    return report


def _scrub_handled_notes(
    session: so.Session, *, patient_ids: Sequence[int] = (), reply_ids: Sequence[int] = ()
) -> None:
    """The staff notes that handling a queue item copies into the audit trail ("reply 7
    handled: called Ada back on ..."), for these patients' replies, texts and items, and
    for these replies from numbers on no file: the event stays, its note goes."""
    event = AuditEvent
    records = sa.or_(
        sa.and_(
            event.record_type == "inbound_message",
            sa.or_(
                event.record_id.in_(
                    sa.select(InboundMessage.id).where(
                        InboundMessage.patient_id.in_(list(patient_ids))
                    )
                ),
                event.record_id.in_(list(reply_ids)),
            ),
        ),
        sa.and_(
            event.record_type == "message",
            event.record_id.in_(
                sa.select(Message.id).where(Message.patient_id.in_(list(patient_ids)))
            ),
        ),
        sa.and_(event.record_type == "patient", event.record_id.in_(list(patient_ids))),
    )
    session.execute(
        sa.update(event)
        .where(event.action == "attention.handled", records, event.detail.contains(": "))
        .values(detail=f"handled; note {REMOVED}")
        .execution_options(synchronize_session=False)
    )


def _purge_patients(
    *,
    session: so.Session,
    ids: list[int],
    now: datetime,
    retention_days: int,
    cutoff: datetime,
    actor: str,
    report: PurgeReport,
) -> None:
    texts = session.execute(
        sa.update(Message)
        .where(
            Message.patient_id.in_(ids),
            sa.or_(Message.body.is_not(None), Message.to_phone.is_not(None)),
        )
        .values(body=None, to_phone=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        sa.update(AttentionResolution)
        .where(
            AttentionResolution.message_id.in_(
                sa.select(Message.id).where(Message.patient_id.in_(ids))
            )
        )
        .values(note=REMOVED)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        sa.update(UnreachableResolution)
        .where(UnreachableResolution.patient_id.in_(ids))
        .values(note=REMOVED)
        .execution_options(synchronize_session=False)
    )
    _scrub_handled_notes(session, patient_ids=ids)
    replies = _empty_replies(session, InboundMessage.patient_id.in_(ids))
    session.execute(
        sa.update(Procedure)
        .where(Procedure.patient_id.in_(ids), Procedure.external_id.is_not(None))
        .values(external_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        sa.update(Patient)
        .where(Patient.id.in_(ids))
        .values(first_name=REMOVED, last_name="", phone="", external_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        sa.insert(PurgedPatient),
        [{"patient_id": i, "purged_at": now, "retention_days": retention_days} for i in ids],
    )
    for patient_id in ids:
        record_audit(
            session=session,
            actor=actor,
            action="patient.purged",
            now=now,
            record_type="patient",
            record_id=patient_id,
            detail=(
                f"retention {retention_days} days: last procedure ended before "
                f"{cutoff:%Y-%m-%d} UTC; name, phone, external ids and text bodies removed"
            ),
        )
    report.patients += len(ids)
    report.texts += texts.rowcount  # type: ignore[attr-defined]
    report.replies += replies


def _empty_replies(session: so.Session, condition: sa.ColumnElement[bool]) -> int:
    """Remove the body, the number and any staff note of the replies matching `condition`."""
    result = session.execute(
        sa.update(InboundMessage)
        .where(condition, sa.or_(_has_text(InboundMessage.body), InboundMessage.from_phone != ""))
        .values(
            body=REMOVED,
            from_phone="",
            handled_note=sa.case((InboundMessage.handled_note.is_(None), None), else_=REMOVED),
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
