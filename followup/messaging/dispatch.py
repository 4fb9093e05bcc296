"""Dispatching: claim due texts under a lease, re-check them, hand them to the transport.

The dispatcher commits on the session it is given: the claim first (so a crash cannot lose
it), then each text's outcome with its event, one text per transaction.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import quiet_period_end, zone
from followup.db import is_postgresql
from followup.messaging.events import add_events, event_row, release, update_outcome
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    Message,
)
from followup.messaging.outbox import OPTED_OUT, reason_not_to_send, record_opt_out
from followup.messaging.reports import DispatchReport
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
DISPATCH_BATCH = 100


def expire_overdue(*, session: so.Session, now: datetime) -> int:
    """Mark pending texts whose window has closed as expired; return how many."""
    ids = session.scalars(
        sa.update(Message)
        .where(Message.status == PENDING, Message.expires_at <= now)
        .values(status=EXPIRED, updated_at=now)
        .returning(Message.id),
    ).all()
    add_events(
        session, [event_row(i, now, "expired", EXPIRED, "not sent before its expiry") for i in ids]
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
    add_events(session, [event_row(i, now, "claimed", SENDING, f"by {owner}") for i in claimed])
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
        reason = reason_not_to_send(
            patient=patient, procedure=procedure, care=care, step=message.step
        )
        if reason is not None:
            release(message, CANCELLED, now)
            events.append(event_row(message.id, now, "cancelled", CANCELLED, reason))
            report.cancelled += 1
            continue
        tz = zone(patient.timezone)
        quiet_end = quiet_period_end(now, tz, care.quiet_hours)
        if quiet_end is not None:
            if quiet_end >= message.expires_at:
                release(message, EXPIRED, now)
                events.append(
                    event_row(
                        message.id, now, "expired", EXPIRED, "quiet hours last past its expiry"
                    )
                )
                report.expired += 1
            else:
                release(message, PENDING, now)
                message.not_before = quiet_end
                events.append(event_row(message.id, now, "deferred", PENDING, "quiet hours"))
                report.deferred += 1
            continue
        message.body = care.render_text(
            kind=procedure.kind,
            step_key=message.step,
            language=patient.language,
            tz=tz,
            completed_at=procedure.completed_at,
            blood_thinner=procedure.blood_thinner,
            scheduled_at=procedure.scheduled_at,
            stop_blood_thinner_on=procedure.stop_blood_thinner_on,
            intro=message.step == procedure.intro_step,
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
                    due_at=message.due_at,
                ),
            )
        )
    add_events(session, events)
    return outgoing


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
    ours = update_outcome(session, message.id, {"updated_at": now, **values}, owner=owner)
    if not ours:
        detail += "; lease had moved on"
    add_events(session, [event_row(message.id, now, kind or status, status, detail)])
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
        update_outcome(session, message.id, values, owner=None)
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
