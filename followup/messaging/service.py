"""The outbox: plan texts, claim and send them, record what happened.

Every function takes the session and `now`; the caller owns the clock. The dispatcher
commits on the session it is given: the claim first (so a crash cannot lose it), then each
text's outcome with its event, one text per transaction.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from followup.care.planner import plan_procedure, plan_step
from followup.care.protocol import CareContext
from followup.care.timing import quiet_period_end
from followup.db import is_postgresql
from followup.messaging.errors import OPT_OUT_CODES, describe_error_code
from followup.messaging.models import (
    CANCELLED,
    DELIVERED,
    EXPIRED,
    FAILED,
    PENDING,
    REPLY_HELP,
    REPLY_OTHER,
    REPLY_PAIN,
    REPLY_START,
    REPLY_STOP,
    REPLY_SYMPTOM,
    SENDING,
    SENT,
    UNDELIVERED,
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    SendResult,
    SmsTransport,
    TransientSendError,
)
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # how long a claimed text is ours before the reaper looks
MAX_ATTEMPTS = 12  # transport calls per text before it is failed
RETRY_BACKOFF = timedelta(seconds=30)  # first retry delay; doubles each attempt
RETRY_BACKOFF_MAX = timedelta(minutes=30)
RECONCILE_SLACK = timedelta(minutes=2)  # look a little before the claim for clock skew
STATUS_POLL_GIVE_UP = timedelta(days=3)  # stop asking about a text still `sent` after this
OPTED_OUT = "opted out"  # every opt-out cancellation reason contains this (START undoes them)
PLAN_BATCH = 1000
DISPATCH_BATCH = 100
REPLANNABLE = (PENDING, EXPIRED)


@dataclass
class Report:
    """Counts of what a pass did; printable."""

    def add(self, other: Report) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def __str__(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


@dataclass
class PlanReport(Report):
    procedures: int = 0
    planned: int = 0
    expired: int = 0


@dataclass
class DispatchReport(Report):
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    deferred: int = 0
    unknown: int = 0


@dataclass
class ReapReport(Report):
    stale: int = 0
    reconciled: int = 0
    requeued: int = 0
    held: int = 0
    expired: int = 0
    failed: int = 0


@dataclass
class PollReport(Report):
    checked: int = 0
    changed: int = 0
    errors: int = 0


@dataclass
class TickReport:
    plan: PlanReport = field(default_factory=PlanReport)
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    reap: ReapReport = field(default_factory=ReapReport)

    def __str__(self) -> str:
        return f"plan: {self.plan}\ndispatch: {self.dispatch}\nreap: {self.reap}"


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name (cached: planning looks up thousands)."""
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def _events_insert() -> sa.Insert:
    return sa.insert(MessageEvent.__table__)  # type: ignore[arg-type]


@lru_cache(maxsize=64)
def _outcome_update(columns: tuple[str, ...], *, guarded: bool) -> sa.Update:
    """A cached UPDATE of one text's outcome: built once per column set, not per text."""
    table = Message.__table__
    statement = sa.update(table).where(table.c.id == sa.bindparam("p_id"))  # type: ignore[arg-type]
    if guarded:  # only while the lease is ours
        statement = statement.where(
            table.c.status == SENDING, table.c.lease_owner == sa.bindparam("p_owner")
        )
    else:
        statement = statement.where(table.c.status.in_((PENDING, SENDING)))
    return statement.values({column: sa.bindparam(f"v_{column}") for column in columns})


def _update_outcome(
    session: so.Session, message_id: int, values: dict[str, Any], *, owner: str | None
) -> bool:
    columns = tuple(sorted(values))
    params = {f"v_{k}": v for k, v in values.items()}
    params.update(p_id=message_id, p_owner=owner)
    result = session.execute(_outcome_update(columns, guarded=owner is not None), params)
    return bool(getattr(result, "rowcount", 0))


def _add_events(session: so.Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(_events_insert(), rows)


def _event(
    message_id: int, now: datetime, kind: str, status: str | None, detail: str | None = None
) -> dict[str, Any]:
    return {"message_id": message_id, "at": now, "kind": kind, "status": status, "detail": detail}


def _insert_ignoring_duplicates(session: so.Session) -> Any:
    dialect = postgresql if is_postgresql(session) else sqlite
    return dialect.insert(Message).on_conflict_do_nothing(index_elements=["procedure_id", "step"])


# --- planning -----------------------------------------------------------------------------


def plan_procedures(
    *,
    session: so.Session,
    care: CareContext,
    now: datetime,
    procedure_ids: Sequence[int] | None = None,
    limit: int = PLAN_BATCH,
) -> PlanReport:
    """Plan the texts of completed, consented procedures that have no plan yet.

    Set-based: one query for the batch, one bulk insert of its texts, one of their events.
    Planning twice plans nothing new (unique procedure and step).
    """
    query = (
        sa.select(
            Procedure.id,
            Procedure.kind,
            Procedure.completed_at,
            Procedure.blood_thinner,
            Procedure.patient_id,
            Patient.timezone,
        )
        .join(Patient, Patient.id == Procedure.patient_id)
        .where(
            Procedure.status == "completed",
            Procedure.planned_at.is_(None),
            Procedure.completed_at.is_not(None),
            Patient.sms_consent_at.is_not(None),
            Patient.opted_out_at.is_(None),
        )
        .order_by(Procedure.id)
        .limit(limit)
    )
    if procedure_ids is not None:
        query = query.where(Procedure.id.in_(procedure_ids))
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True, of=Procedure)
    procedures = session.execute(query).all()
    report = PlanReport(procedures=len(procedures))
    if not procedures:
        return report
    rows: list[dict[str, Any]] = []
    for proc in procedures:
        for planned in plan_procedure(
            protocol=care.protocol(proc.kind),
            completed_at=proc.completed_at,
            tz=zone(proc.timezone),
            has_blood_thinner=proc.blood_thinner is not None,
            quiet_hours=care.quiet_hours,
            now=now,
        ):
            rows.append(
                {
                    "procedure_id": proc.id,
                    "patient_id": proc.patient_id,
                    "step": planned.step,
                    "due_at": planned.due_at,
                    "expires_at": planned.expires_at,
                    "status": planned.status,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if rows:
        inserted = session.execute(
            _insert_ignoring_duplicates(session).returning(Message.id, Message.status), rows
        ).all()
        events = []
        for message_id, status in inserted:
            if status == EXPIRED:
                report.expired += 1
                events.append(
                    _event(message_id, now, "expired", EXPIRED, "window had passed when planned")
                )
            else:
                report.planned += 1
                events.append(_event(message_id, now, "planned", PENDING))
        _add_events(session, events)
    session.execute(
        sa.update(Procedure)
        .where(Procedure.id.in_([proc.id for proc in procedures]))
        .values(planned_at=now),
    )
    log.info(
        "planned procedures=%d texts=%d expired=%d",
        report.procedures,
        report.planned,
        report.expired,
    )
    return report


def replan_procedure(
    *, session: so.Session, procedure: Procedure, patient: Patient, care: CareContext, now: datetime
) -> list[Message]:
    """Bring a procedure's unsent texts in line with its current completion time and details.

    Texts already handed to the provider, and texts cancelled on purpose, are left alone.
    Returns the procedure's texts after the change, in due order.
    """
    existing = {
        m.step: m
        for m in session.scalars(
            sa.select(Message)
            .where(Message.procedure_id == procedure.id)
            .execution_options(populate_existing=True)
        )
    }
    if (
        procedure.status != "completed"
        or procedure.completed_at is None
        or not patient.can_receive_texts()
    ):
        return sorted(existing.values(), key=lambda m: m.due_at)
    protocol = care.protocol(procedure.kind)
    tz = zone(patient.timezone)
    wanted = {
        step.key
        for step in protocol.steps
        if step.applies(has_blood_thinner=procedure.blood_thinner is not None)
    }
    events: list[dict[str, Any]] = []
    for step in protocol.steps:
        message = existing.get(step.key)
        if step.key not in wanted:
            if message is not None and message.status == PENDING:
                message.status = CANCELLED
                message.updated_at = now
                session.flush()
                events.append(
                    _event(message.id, now, "cancelled", CANCELLED, "step no longer applies")
                )
            continue
        planned = plan_step(
            step=step,
            completed_at=procedure.completed_at,
            tz=tz,
            quiet_hours=care.quiet_hours,
            now=now,
        )
        if message is None:
            message = Message(
                procedure_id=procedure.id,
                patient_id=patient.id,
                step=step.key,
                attempts=0,
                created_at=now,
            )
            session.add(message)
        elif message.status not in REPLANNABLE or message.attempts > 0:
            continue
        message.due_at = planned.due_at
        message.expires_at = planned.expires_at
        message.status = planned.status
        message.not_before = None
        message.updated_at = now
        session.flush()
        detail = "re-planned" + (": window has passed" if planned.status == EXPIRED else "")
        events.append(_event(message.id, now, "replanned", planned.status, detail))
        existing[step.key] = message
    procedure.planned_at = now
    _add_events(session, events)
    return sorted(existing.values(), key=lambda m: m.due_at)


def cancel_pending(
    *,
    session: so.Session,
    now: datetime,
    reason: str,
    procedure_id: int | None = None,
    patient_id: int | None = None,
) -> int:
    """Cancel the pending texts of one procedure or one patient; return how many."""
    query = sa.update(Message).where(Message.status == PENDING)
    if procedure_id is not None:
        query = query.where(Message.procedure_id == procedure_id)
    elif patient_id is not None:
        query = query.where(Message.patient_id == patient_id)
    else:
        raise ValueError("cancel_pending needs procedure_id or patient_id")
    ids = session.scalars(
        query.values(status=CANCELLED, updated_at=now).returning(Message.id),
    ).all()
    _add_events(session, [_event(i, now, "cancelled", CANCELLED, reason) for i in ids])
    return len(ids)


def record_opt_out(*, session: so.Session, patient_id: int, now: datetime, reason: str) -> int:
    """Mark a patient opted out and cancel every pending text of theirs; return how many."""
    patient = session.get(Patient, patient_id)
    if patient is not None and patient.opted_out_at is None:
        patient.opted_out_at = now
    return cancel_pending(session=session, now=now, reason=reason, patient_id=patient_id)


# --- dispatching --------------------------------------------------------------------------


def expire_overdue(*, session: so.Session, now: datetime) -> int:
    """Mark pending texts whose window has closed as expired; return how many."""
    ids = session.scalars(
        sa.update(Message)
        .where(Message.status == PENDING, Message.expires_at <= now)
        .values(status=EXPIRED, updated_at=now)
        .returning(Message.id),
    ).all()
    _add_events(
        session, [_event(i, now, "expired", EXPIRED, "not sent before its expiry") for i in ids]
    )
    return len(ids)


def claim_due(*, session: so.Session, now: datetime, owner: str, limit: int) -> list[int]:
    """Lease up to `limit` due texts to `owner`; return their ids (the caller commits)."""
    due = (
        sa.select(Message.id)
        .where(
            Message.status == PENDING,
            Message.due_at <= now,
            Message.expires_at > now,
            sa.or_(Message.not_before.is_(None), Message.not_before <= now),
        )
        .order_by(Message.due_at, Message.id)
        .limit(limit)
    )
    if is_postgresql(session):
        due = due.with_for_update(skip_locked=True)
    candidates = session.scalars(due).all()
    if not candidates:
        return []
    # `status = pending` again: a second process on SQLite cannot take the same text.
    claimed = session.scalars(
        sa.update(Message)
        .where(Message.id.in_(candidates), Message.status == PENDING)
        .values(
            status=SENDING,
            lease_owner=owner,
            lease_expires_at=now + LEASE,
            claimed_at=now,
            updated_at=now,
        )
        .returning(Message.id),
    ).all()
    _add_events(session, [_event(i, now, "claimed", SENDING, f"by {owner}") for i in claimed])
    return sorted(claimed)


def retry_delay(
    attempts: int, *, rng: random.Random, retry_after: float | None = None
) -> timedelta:
    """Exponential backoff with jitter (half to full), never shorter than Retry-After."""
    doublings = min(max(attempts - 1, 0), 16)
    base = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * (1 << doublings))
    delay = base * (0.5 + rng.random() / 2)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def dispatch_due(
    *,
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    now: datetime,
    owner: str,
    limit: int = DISPATCH_BATCH,
    rng: random.Random | None = None,
) -> DispatchReport:
    """Send one batch of due texts; return what happened. Call again until claimed is 0."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not security
    report = DispatchReport()
    report.expired += expire_overdue(session=session, now=now)
    claimed = claim_due(session=session, now=now, owner=owner, limit=limit)
    report.claimed = len(claimed)
    outgoing = _prepare(session=session, ids=claimed, care=care, now=now, report=report)
    session.commit()
    for message, sms in outgoing:
        _send_one(
            session=session,
            transport=transport,
            message=message,
            sms=sms,
            now=now,
            owner=owner,
            rng=rng,
            report=report,
        )
    # Outcomes were written with Core UPDATEs: objects the caller holds must reload.
    session.expire_all()
    return report


def _prepare(
    *, session: so.Session, ids: list[int], care: CareContext, now: datetime, report: DispatchReport
) -> list[tuple[Message, OutgoingSms]]:
    """Re-check each claimed text at claim time and render its body; return those to send."""
    if not ids:
        return []
    rows = session.execute(
        sa.select(Message, Patient, Procedure)
        .join(Patient, Patient.id == Message.patient_id)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(Message.id.in_(ids))
        .order_by(Message.due_at, Message.id)
        # The claim was a bulk UPDATE: refresh objects this session already holds.
        .execution_options(populate_existing=True)
    ).all()
    events: list[dict[str, Any]] = []
    outgoing: list[tuple[Message, OutgoingSms]] = []
    for message, patient, procedure in rows:
        reason = _reason_not_to_send(
            patient=patient, procedure=procedure, care=care, step=message.step
        )
        if reason is not None:
            _release(message, CANCELLED, now)
            events.append(_event(message.id, now, "cancelled", CANCELLED, reason))
            report.cancelled += 1
            continue
        tz = zone(patient.timezone)
        quiet_end = quiet_period_end(now, tz, care.quiet_hours)
        if quiet_end is not None:
            if quiet_end >= message.expires_at:
                _release(message, EXPIRED, now)
                events.append(
                    _event(message.id, now, "expired", EXPIRED, "quiet hours last past its expiry")
                )
                report.expired += 1
            else:
                _release(message, PENDING, now)
                message.not_before = quiet_end
                events.append(_event(message.id, now, "deferred", PENDING, "quiet hours"))
                report.deferred += 1
            continue
        assert procedure.completed_at is not None  # noqa: S101 - _reason_not_to_send checked it
        message.body = care.render_text(
            kind=procedure.kind,
            step_key=message.step,
            language=patient.language,
            tz=tz,
            completed_at=procedure.completed_at,
            blood_thinner=procedure.blood_thinner,
        )
        message.to_phone = patient.phone  # a changed number is used from the next send on
        message.attempts += 1
        outgoing.append(
            (
                message,
                OutgoingSms(
                    message_id=message.id,
                    step=message.step,
                    to=patient.phone,
                    body=message.body,
                    now=now,
                ),
            )
        )
    _add_events(session, events)
    return outgoing


def _reason_not_to_send(
    *, patient: Patient, procedure: Procedure, care: CareContext, step: str
) -> str | None:
    if procedure.status == "cancelled":
        return "procedure cancelled"
    if procedure.status != "completed" or procedure.completed_at is None:
        return "procedure not completed"
    if patient.opted_out_at is not None:
        return "patient opted out"
    if patient.sms_consent_at is None:
        return "no SMS consent on record"
    protocol = care.protocols.get(procedure.kind)
    if protocol is None or all(s.key != step for s in protocol.steps):
        return "step no longer in the care protocol"
    if not protocol.step(step).applies(has_blood_thinner=procedure.blood_thinner is not None):
        return "step no longer applies"
    return None


def _release(message: Message, status: str, now: datetime) -> None:
    message.status = status
    message.lease_owner = None
    message.lease_expires_at = None
    message.updated_at = now


def _send_one(
    *,
    session: so.Session,
    transport: SmsTransport,
    message: Message,
    sms: OutgoingSms,
    now: datetime,
    owner: str,
    rng: random.Random,
    report: DispatchReport,
) -> None:
    try:
        result = transport.send(sms)
    except TransientSendError as exc:
        _record_transient(
            session=session, message=message, exc=exc, now=now, owner=owner, rng=rng, report=report
        )
    except PermanentSendError as exc:
        _finish(
            session=session,
            message=message,
            owner=owner,
            now=now,
            values={"status": FAILED, "error_code": exc.code, "error_message": exc.message[:500]},
            detail=f"error {exc.code}",
        )
        report.failed += 1
        if exc.opted_out:
            cancelled = record_opt_out(
                session=session,
                patient_id=message.patient_id,
                now=now,
                reason=f"provider error {exc.code}: {OPTED_OUT}",
            )
            report.cancelled += cancelled
        log.warning("message %s failed permanently code=%s", message.id, exc.code)
    except Exception as exc:  # noqa: BLE001 - an unknown outcome must not crash the batch
        # The text may or may not have gone out: leave it in `sending` under its lease so
        # the reaper reconciles it (or holds it) instead of sending it twice.
        session.rollback()
        log.error(
            "message %s: transport raised %s; left for the reaper", message.id, type(exc).__name__
        )
        report.unknown += 1
        return
    else:
        _record_sent(
            session=session, message=message, result=result, now=now, owner=owner, report=report
        )
    session.commit()


def _finish(
    *,
    session: so.Session,
    message: Message,
    owner: str,
    now: datetime,
    values: dict[str, Any],
    detail: str,
    kind: str | None = None,
) -> bool:
    """Record a claimed text's outcome and its event, if the lease is still ours.

    One guarded UPDATE (status `sending`, lease owner us) and one INSERT: the hot path of
    the dispatcher, kept off the ORM's unit of work. Returns False when the lease moved on.
    """
    status = values.get("status", SENDING)
    if status != SENDING:
        values = {"lease_owner": None, "lease_expires_at": None, **values}
    ours = _update_outcome(session, message.id, {"updated_at": now, **values}, owner=owner)
    if not ours:
        detail += "; lease had moved on"
    _add_events(session, [_event(message.id, now, kind or status, status, detail)])
    return ours


def _record_sent(
    *,
    session: so.Session,
    message: Message,
    result: SendResult,
    now: datetime,
    owner: str,
    report: DispatchReport,
) -> None:
    values: dict[str, Any] = {
        "status": SENT,
        "provider_sid": result.provider_sid,
        "segments": result.segments,
        "sent_at": now,
        "error_code": None,
        "error_message": None,
    }
    detail = f"sid {result.provider_sid} ({result.provider_status})"
    if not _finish(
        session=session, message=message, owner=owner, now=now, values=values, detail=detail
    ):
        # The provider has the text even though our lease ran out: record it anyway, so a
        # requeued copy is not sent a second time.
        log.warning("message %s: sent after its lease moved on; recording it", message.id)
        values.update(updated_at=now, lease_owner=None, lease_expires_at=None)
        _update_outcome(session, message.id, values, owner=None)
    report.sent += 1
    log.info("message %s sent sid=%s", message.id, result.provider_sid)


def _record_transient(
    *,
    session: so.Session,
    message: Message,
    exc: TransientSendError,
    now: datetime,
    owner: str,
    rng: random.Random,
    report: DispatchReport,
) -> None:
    error = {"error_code": exc.code, "error_message": exc.message[:500]}
    retry_at = now + retry_delay(message.attempts, rng=rng, retry_after=exc.retry_after)
    finish = partial(_finish, session=session, message=message, owner=owner, now=now)
    if exc.maybe_sent:
        # The request may have reached the provider: keep the text in `sending` until the
        # reaper has asked the provider whether it exists, then send or record it.
        finish(
            values={"lease_expires_at": retry_at, **error},
            detail=f"error {exc.code}",
            kind="outcome-unknown",
        )
        report.retried += 1
    elif message.attempts >= MAX_ATTEMPTS:
        finish(
            values={"status": FAILED, **error},
            detail=f"error {exc.code}; {MAX_ATTEMPTS} attempts",
        )
        report.failed += 1
    elif retry_at >= message.expires_at:
        finish(
            values={"status": EXPIRED, **error},
            detail=f"error {exc.code}; no retry before expiry",
        )
        report.expired += 1
    else:
        finish(
            values={"status": PENDING, "not_before": retry_at, **error},
            detail=f"error {exc.code}; retry at {retry_at.isoformat()}",
            kind="retry",
        )
        report.retried += 1
    log.warning(
        "message %s transient error code=%s attempt=%s", message.id, exc.code, message.attempts
    )


# --- reaping ------------------------------------------------------------------------------


def reap_stale(
    *, session: so.Session, transport: SmsTransport, now: datetime, limit: int = DISPATCH_BATCH
) -> ReapReport:
    """Settle texts left in `sending` after their lease ran out, without sending twice.

    Where the transport can be asked, a text it already has is recorded as sent and one it
    has not is sent again; where it cannot, the text is held for a person to settle.
    """
    stale = session.scalars(
        sa.select(Message)
        .where(Message.status == SENDING, Message.lease_expires_at <= now)
        .order_by(Message.lease_expires_at)
        .limit(limit)
        .execution_options(populate_existing=True)
    ).all()
    report = ReapReport(stale=len(stale))
    for message in stale:
        since = (message.claimed_at or now) - RECONCILE_SLACK
        try:
            found = transport.find_sent(
                to=message.to_phone or "", body=message.body or "", since=since
            )
        except NotImplementedError:
            message.lease_owner = None
            message.lease_expires_at = None
            message.updated_at = now
            message.error_message = "outcome unknown after lease expiry; held, not resent"
            _add_events(
                session,
                [_event(message.id, now, "held", SENDING, "lease expired; outcome unknown")],
            )
            report.held += 1
            log.warning(
                "message %s held: lease expired and the transport cannot be asked", message.id
            )
        except Exception as exc:  # noqa: BLE001 - try again on the next pass
            message.lease_expires_at = now + LEASE
            log.warning(
                "message %s: reconcile failed (%s); will retry", message.id, type(exc).__name__
            )
        else:
            if found is not None:
                _release(message, SENT, now)
                message.provider_sid = found.provider_sid
                message.segments = found.segments
                message.sent_at = message.sent_at or now
                _add_events(
                    session,
                    [
                        _event(
                            message.id,
                            now,
                            "reconciled",
                            SENT,
                            f"found at provider: sid {found.provider_sid}",
                        )
                    ],
                )
                report.reconciled += 1
                if TWILIO_STATUSES.get(found.provider_status) == DELIVERED:
                    apply_provider_status(
                        session=session,
                        message=message,
                        status=found.provider_status,
                        error_code=None,
                        now=now,
                        kind="reconciled",
                    )
            elif now >= message.expires_at:
                _release(message, EXPIRED, now)
                _add_events(
                    session,
                    [_event(message.id, now, "expired", EXPIRED, "not at provider; window closed")],
                )
                report.expired += 1
            elif message.attempts >= MAX_ATTEMPTS:
                _release(message, FAILED, now)
                _add_events(
                    session,
                    [
                        _event(
                            message.id,
                            now,
                            "failed",
                            FAILED,
                            f"not at provider; {MAX_ATTEMPTS} attempts",
                        )
                    ],
                )
                report.failed += 1
            else:
                _release(message, PENDING, now)
                message.not_before = None
                _add_events(
                    session,
                    [_event(message.id, now, "requeued", PENDING, "not at provider; send again")],
                )
                report.requeued += 1
        session.commit()
    return report


# --- one pass -----------------------------------------------------------------------------


def run_tick(
    *,
    session: so.Session,
    transport: SmsTransport,
    care: CareContext,
    now: datetime,
    owner: str,
    rng: random.Random | None = None,
    max_batches: int = 1000,
) -> TickReport:
    """Plan, dispatch every due text and reap, all at the one instant `now`."""
    report = TickReport()
    while True:
        plan = plan_procedures(session=session, care=care, now=now)
        session.commit()
        report.plan.add(plan)
        if plan.procedures == 0:
            break
    report.reap.add(reap_stale(session=session, transport=transport, now=now))
    for _ in range(max_batches):
        batch = dispatch_due(
            session=session, transport=transport, care=care, now=now, owner=owner, rng=rng
        )
        report.dispatch.add(batch)
        if batch.claimed == 0:
            break
    return report


# --- delivery status ----------------------------------------------------------------------

# Twilio's message statuses, as ours. Everything before a handset answered is `sent` to us.
TWILIO_STATUSES: dict[str, str] = {
    "accepted": SENT,
    "scheduled": SENT,
    "queued": SENT,
    "sending": SENT,
    "sent": SENT,
    "delivered": DELIVERED,
    "read": DELIVERED,
    "undelivered": UNDELIVERED,
    "failed": FAILED,
    "canceled": FAILED,
}
# A status only ever moves up this ladder; failed and undelivered are the top, so any
# arrival order of one text's callbacks ends in the same status.
_RANK = {SENDING: 1, SENT: 2, DELIVERED: 3, UNDELIVERED: 4, FAILED: 4}


@dataclass(frozen=True)
class ProviderStatus:
    """What the provider says about one text now."""

    status: str  # the provider's word: queued, sent, delivered, undelivered, failed, ...
    error_code: int | None = None


@runtime_checkable
class StatusLookup(Protocol):
    """A transport that can be asked for one text's current status (the poller)."""

    def fetch_status(self, provider_sid: str) -> ProviderStatus: ...


def apply_provider_status(
    *,
    session: so.Session,
    message: Message,
    status: str,
    error_code: int | None,
    now: datetime,
    kind: str,
) -> bool:
    """Record what the provider reported for `message`, moving its status only forward.

    Every report becomes an event (`kind`) with its error code, applied or not; error
    21610 opts the patient out. Return whether the message's status changed.
    """
    target = TWILIO_STATUSES.get(status)
    current_rank = _RANK.get(message.status)
    changed = target is not None and current_rank is not None and _RANK[target] > current_rank
    if changed and target is not None:
        message.status = target
        message.updated_at = now
        message.lease_owner = None
        message.lease_expires_at = None
        if target == DELIVERED:
            message.delivered_at = now
        elif target in (FAILED, UNDELIVERED):
            code = str(error_code) if error_code is not None else None
            message.error_code = code
            message.error_message = describe_error_code(error_code) or (
                f"Twilio error {code}" if code else f"reported {status} by the provider"
            )
    detail = f"provider status {status or '-'}"
    if error_code is not None:
        detail += f"; error {error_code}"
    if not changed:
        detail += f"; kept {message.status}"
    _add_events(session, [_event(message.id, now, kind, message.status, detail[:500])])
    if error_code in OPT_OUT_CODES:
        record_opt_out(
            session=session,
            patient_id=message.patient_id,
            now=now,
            reason=f"provider error {error_code}: {OPTED_OUT}",
        )
    return changed


def record_status_callback(
    *,
    session: so.Session,
    provider_sid: str,
    status: str,
    error_code: int | None,
    now: datetime,
) -> Message | None:
    """Apply one status callback; None (and a log line with the SID) for an unknown SID."""
    query = sa.select(Message).where(Message.provider_sid == provider_sid)
    if is_postgresql(session):
        query = query.with_for_update()  # two callbacks for one text apply one at a time
    message = session.scalar(query)
    if message is None:
        log.info("status callback for unknown sid %s (status %s)", provider_sid, status)
        return None
    apply_provider_status(
        session=session,
        message=message,
        status=status,
        error_code=error_code,
        now=now,
        kind="status-callback",
    )
    return message


def poll_stale_statuses(
    *,
    session: so.Session,
    lookup: StatusLookup,
    now: datetime,
    older_than: timedelta,
    limit: int = DISPATCH_BATCH,
) -> PollReport:
    """Ask the provider about texts `sent` for longer than `older_than` (a callback was lost).

    A text asked about and still `sent` is asked about again `older_than` later (its
    updated_at marks the last look), until STATUS_POLL_GIVE_UP after it was sent.
    """
    stale = session.scalars(
        sa.select(Message)
        .where(
            Message.status == SENT,
            Message.provider_sid.is_not(None),
            Message.updated_at <= now - older_than,
            Message.sent_at > now - STATUS_POLL_GIVE_UP,
        )
        .order_by(Message.updated_at, Message.id)
        .limit(limit)
    ).all()
    report = PollReport(checked=len(stale))
    for message in stale:
        assert message.provider_sid is not None  # noqa: S101 - the query asked for it
        try:
            found = lookup.fetch_status(message.provider_sid)
        except Exception as exc:  # noqa: BLE001 - ask again on a later pass
            report.errors += 1
            log.warning("message %s: status poll failed (%s)", message.id, type(exc).__name__)
        else:
            if apply_provider_status(
                session=session,
                message=message,
                status=found.status,
                error_code=found.error_code,
                now=now,
                kind="status-polled",
            ):
                report.changed += 1
        message.updated_at = now
        session.commit()
    return report


# --- opting back in -----------------------------------------------------------------------


def record_opt_in(*, session: so.Session, patient_id: int, care: CareContext, now: datetime) -> int:
    """Clear a patient's opt-out and bring back the texts it cancelled; return how many.

    Only texts cancelled because of the opt-out, whose window is still open, return to
    pending (re-planned at `now`: quiet hours apply); nothing whose window has passed is
    sent. Procedures never planned while opted out are planned now.
    """
    patient = session.get(Patient, patient_id)
    if patient is None or patient.opted_out_at is None:
        return 0
    patient.opted_out_at = None
    session.flush()
    cancelled_by_opt_out = sa.exists().where(
        MessageEvent.message_id == Message.id,
        MessageEvent.kind == "cancelled",
        MessageEvent.detail.contains(OPTED_OUT),
    )
    rows = session.execute(
        sa.select(Message, Procedure)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(
            Message.patient_id == patient_id,
            Message.status == CANCELLED,
            cancelled_by_opt_out,
        )
        .order_by(Message.due_at)
    ).all()
    events: list[dict[str, Any]] = []
    for message, procedure in rows:
        if _reason_not_to_send(patient=patient, procedure=procedure, care=care, step=message.step):
            continue
        assert procedure.completed_at is not None  # noqa: S101 - checked just above
        planned = plan_step(
            step=care.protocol(procedure.kind).step(message.step),
            completed_at=procedure.completed_at,
            tz=zone(patient.timezone),
            quiet_hours=care.quiet_hours,
            now=now,
        )
        if planned.status != PENDING:
            continue  # its window has passed: it stays cancelled
        message.status = PENDING
        message.due_at = planned.due_at
        message.expires_at = planned.expires_at
        message.not_before = None
        message.updated_at = now
        events.append(_event(message.id, now, "replanned", PENDING, "patient opted back in"))
    _add_events(session, events)
    unplanned = session.scalars(
        sa.select(Procedure.id).where(
            Procedure.patient_id == patient_id, Procedure.planned_at.is_(None)
        )
    ).all()
    if unplanned:
        plan_procedures(session=session, care=care, now=now, procedure_ids=list(unplanned))
    log.info("patient %s opted back in; %d texts back", patient_id, len(events))
    return len(events)


# --- replies ------------------------------------------------------------------------------

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})
# Twilio's Advanced Opt-Out names what it did with a reply in the OptOutType field.
OPT_OUT_TYPES = {"STOP": REPLY_STOP, "START": REPLY_START, "HELP": REPLY_HELP}
PAIN_ALERT = 7  # a pain score at or above this needs a nurse
PAIN_CHECK_STEP = "pain-check"
_PAIN_RE = re.compile(r"^(\d{1,2})(?:\s*/\s*10)?$")
# Words that need a nurse whatever else the reply says (with the Spanish a patient may use).
_WARNING_RE = re.compile(
    r"\b(worse|bleed\w*|fever\w*|numb\w*|weak\w*|peor|sangr\w*|fiebre|entumec\w*|d[eé]bil\w*)\b",
    re.IGNORECASE,
)
HELP_TEXT = {
    "en": "{clinic_name}: aftercare texts after your procedure. Questions? Call {clinic_phone}. "
    "In an emergency call 911. Reply STOP to end these texts.",
    "es": "{clinic_name}: mensajes de cuidados despues de su procedimiento. Preguntas? Llame al "
    "{clinic_phone}. En una emergencia llame al 911. Responda STOP para no recibir mas.",
}


@dataclass(frozen=True)
class Classified:
    kind: str
    pain_score: int | None = None
    needs_attention: bool = False


@dataclass(frozen=True)
class InboundResult:
    inbound: InboundMessage
    duplicate: bool  # the provider retried a webhook we had already stored
    reply: str | None  # text to answer with (HELP), or None


def classify_reply(body: str, *, opt_out_type: str | None, pain_check_sent: bool) -> Classified:
    """Say what a reply means: a keyword, a pain score, a warning sign or something else.

    Keywords are exact (any case, surrounding whitespace ignored); Twilio's OptOutType,
    when present, wins. A number 0-10 is a pain score only after a pain check was sent.
    """
    forced = OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if forced is not None:
        return Classified(forced)
    text = body.strip()
    word = text.upper()
    if word in STOP_WORDS:
        return Classified(REPLY_STOP)
    if word in START_WORDS:
        return Classified(REPLY_START)
    if word in HELP_WORDS:
        return Classified(REPLY_HELP)
    if _WARNING_RE.search(text):
        return Classified(REPLY_SYMPTOM, needs_attention=True)
    match = _PAIN_RE.match(text)
    if match and pain_check_sent and int(match.group(1)) <= 10:
        score = int(match.group(1))
        return Classified(REPLY_PAIN, pain_score=score, needs_attention=score >= PAIN_ALERT)
    return Classified(REPLY_OTHER, needs_attention=True)


def record_inbound(
    *,
    session: so.Session,
    provider_sid: str,
    from_phone: str,
    body: str,
    opt_out_type: str | None,
    care: CareContext,
    now: datetime,
) -> InboundResult:
    """Store one reply, once per provider SID, and act on it; the caller commits.

    STOP opts out every patient with that number and cancels their pending texts; START
    opts them back in; HELP is answered. A sender who matches no patient is stored and
    flagged. Call it first in its transaction: a duplicate SID rolls the session back.
    """
    existing = _inbound_by_sid(session, provider_sid)
    if existing is not None:
        return InboundResult(existing, duplicate=True, reply=_reply_text(session, existing, care))
    patients = list(
        session.scalars(sa.select(Patient).where(Patient.phone == from_phone).order_by(Patient.id))
    )
    ids = [p.id for p in patients]
    pain_check_patient = (
        session.scalar(
            sa.select(Message.patient_id)
            .where(
                Message.patient_id.in_(ids),
                Message.step == PAIN_CHECK_STEP,
                Message.sent_at.is_not(None),
                Message.sent_at <= now,
            )
            .order_by(Message.sent_at.desc())
            .limit(1)
        )
        if ids
        else None
    )
    classified = classify_reply(
        body, opt_out_type=opt_out_type, pain_check_sent=pain_check_patient is not None
    )
    patient_id = (
        pain_check_patient
        if classified.kind == REPLY_PAIN
        else _last_texted_patient(session, ids)
        if ids
        else None
    )
    inbound = InboundMessage(
        patient_id=patient_id,
        from_phone=from_phone[:32],
        body=body,
        provider_sid=provider_sid,
        received_at=now,
        kind=classified.kind,
        pain_score=classified.pain_score,
        needs_attention=classified.needs_attention or not patients,
    )
    session.add(inbound)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # The same webhook, retried while the first was being stored.
        session.rollback()
        stored = _inbound_by_sid(session, provider_sid)
        if stored is None:
            raise
        return InboundResult(stored, duplicate=True, reply=_reply_text(session, stored, care))
    for patient in patients:
        if classified.kind == REPLY_STOP:
            record_opt_out(
                session=session,
                patient_id=patient.id,
                now=now,
                reason=f"patient replied STOP: {OPTED_OUT}",
            )
        elif classified.kind == REPLY_START:
            record_opt_in(session=session, patient_id=patient.id, care=care, now=now)
    log.info(
        "inbound %s sid=%s patient=%s kind=%s attention=%s",
        inbound.id,
        provider_sid,
        patient_id if patient_id is not None else "unknown",
        inbound.kind,
        inbound.needs_attention,
    )
    return InboundResult(inbound, duplicate=False, reply=_reply_text(session, inbound, care))


def _inbound_by_sid(session: so.Session, provider_sid: str) -> InboundMessage | None:
    return session.scalar(
        sa.select(InboundMessage).where(InboundMessage.provider_sid == provider_sid)
    )


def _last_texted_patient(session: so.Session, ids: list[int]) -> int:
    """Of the patients sharing a number, the one texted last (else the newest)."""
    texted = session.scalar(
        sa.select(Message.patient_id)
        .where(Message.patient_id.in_(ids), Message.sent_at.is_not(None))
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )
    return texted if texted is not None else max(ids)


def _reply_text(session: so.Session, inbound: InboundMessage, care: CareContext) -> str | None:
    if inbound.kind != REPLY_HELP:
        return None
    patient = session.get(Patient, inbound.patient_id) if inbound.patient_id else None
    template = HELP_TEXT.get(patient.language if patient else "en", HELP_TEXT["en"])
    return template.format(clinic_name=care.clinic_name, clinic_phone=care.clinic_phone)
