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
from functools import lru_cache
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


def _add_events(session: so.Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(sa.insert(MessageEvent), rows)


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
            session=session, message=message, exc=exc, now=now, rng=rng, report=report
        )
    except PermanentSendError as exc:
        _release(message, FAILED, now)
        message.error_code, message.error_message = exc.code, exc.message[:500]
        _add_events(session, [_event(message.id, now, "failed", FAILED, f"error {exc.code}")])
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


def _record_sent(
    *,
    session: so.Session,
    message: Message,
    result: SendResult,
    now: datetime,
    owner: str,
    report: DispatchReport,
) -> None:
    if message.status != SENDING or message.lease_owner != owner:
        log.warning("message %s: sent after its lease moved on; recording sid only", message.id)
    _release(message, SENT, now)
    message.provider_sid = result.provider_sid
    message.segments = result.segments
    message.sent_at = now
    message.error_code = message.error_message = None
    _add_events(
        session,
        [
            _event(
                message.id,
                now,
                "sent",
                SENT,
                f"sid {result.provider_sid} ({result.provider_status})",
            )
        ],
    )
    report.sent += 1
    log.info("message %s sent sid=%s", message.id, result.provider_sid)


def _record_transient(
    *,
    session: so.Session,
    message: Message,
    exc: TransientSendError,
    now: datetime,
    rng: random.Random,
    report: DispatchReport,
) -> None:
    message.error_code, message.error_message = exc.code, exc.message[:500]
    retry_at = now + retry_delay(message.attempts, rng=rng, retry_after=exc.retry_after)
    if exc.maybe_sent:
        # The request may have reached the provider: keep the text in `sending` until the
        # reaper has asked the provider whether it exists, then send or record it.
        message.lease_expires_at = retry_at
        message.updated_at = now
        _add_events(
            session, [_event(message.id, now, "outcome-unknown", SENDING, f"error {exc.code}")]
        )
        report.retried += 1
    elif message.attempts >= MAX_ATTEMPTS:
        _release(message, FAILED, now)
        _add_events(
            session,
            [
                _event(
                    message.id, now, "failed", FAILED, f"error {exc.code}; {MAX_ATTEMPTS} attempts"
                )
            ],
        )
        report.failed += 1
    elif retry_at >= message.expires_at:
        _release(message, EXPIRED, now)
        _add_events(
            session,
            [
                _event(
                    message.id, now, "expired", EXPIRED, f"error {exc.code}; no retry before expiry"
                )
            ],
        )
        report.expired += 1
    else:
        _release(message, PENDING, now)
        message.not_before = retry_at
        _add_events(
            session,
            [
                _event(
                    message.id,
                    now,
                    "retry",
                    PENDING,
                    f"error {exc.code}; retry at {retry_at.isoformat()}",
                )
            ],
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
