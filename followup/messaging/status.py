"""Delivery status: the provider's callbacks and polls, applied forward only."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import zone
from followup.messaging.errors import OPT_OUT_CODES, RETRIED_CODES, describe_error_code
from followup.messaging.events import MESSAGES, add_events, event_row
from followup.messaging.models import (
    DELIVERED,
    EXPIRED,
    FAILED,
    PENDING,
    REPLY_START,
    SENDING,
    SENT,
    UNDELIVERED,
    FailedCopy,
    HeldStatusReport,
    InboundMessage,
    Message,
)
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.messaging.replan import replan_procedure
from followup.messaging.reports import PollReport
from followup.messaging.retries import retry_time
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)

STATUS_POLL_GIVE_UP = timedelta(days=3)  # stop asking about a text still `sent` after this
STATUS_POLL_BATCH = 100
# A delivery report whose SID no text carries yet is kept this long for the dispatcher (or
# the reaper) to record the SID; a text is recorded within seconds, or reaped in minutes.
HOLD_UNMATCHED = timedelta(days=1)
HELD_BATCH = 500

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


# For each of our statuses, those it may replace (strictly lower on the ladder).
_BELOW = {
    target: tuple(status for status, rank in _RANK.items() if rank < _RANK[target])
    for target in _RANK
}


def record_permanent_failure(
    *, session: so.Session, message_id: int, patient_id: int, error_code: str | None, now: datetime
) -> int:
    """Act on a text that failed for good, once its status is written; the one place for it.

    Called for a failure at hand-over (the provider refused the text) and for a `failed` or
    `undelivered` report (callback or poll) that moved the text's status. Error 21610 (the
    patient replied STOP) opts the patient out and cancels their pending texts, unless the
    patient texted START after the text's request (the refusal is news of an opt-out that
    START has undone, whoever reports it: the dispatcher's own answer too); returns how
    many were cancelled.
    """
    code = int(error_code) if error_code is not None and error_code.isdigit() else None
    if code in OPT_OUT_CODES:
        if _started_since_request(session, message_id):
            log.info("message %s: error %s predates the patient's START; kept", message_id, code)
            return 0
        return record_opt_out(
            session=session,
            patient_id=patient_id,
            now=now,
            reason=f"provider error {code}: {OPTED_OUT}",
        )
    return 0


def apply_provider_status(
    *,
    session: so.Session,
    status: str,
    error_code: int | None,
    now: datetime,
    kind: str,
    message_id: int | None = None,
    provider_sid: str | None = None,
    reported_sid: str | None = None,
    opt_out: bool = True,
    retry: bool = True,
    care: CareContext | None = None,
) -> bool | None:
    """Record what the provider reported for one text, moving its status only forward.

    The text is named by id or by the provider's SID; named by id, `reported_sid` is the
    copy the report is about (a poll's, the reaper's find), and the report counts only
    while the text still carries that copy: a text retried since carries another. The move
    is one guarded UPDATE (the status must still be below the reported one), so reports
    applied at the same time, in any order, on SQLite or PostgreSQL, end in the highest
    status. Every report becomes an event (`kind`) with its error code, applied or not;
    error 21610 opts the patient out, unless `opt_out` is False (the caller knows the
    patient opted back in since) or the patient texted START after the text's request
    (`_started_since_request`). A failure that passes (30001) retries the text
    (`_retry_reported`), unless `retry` is False (a copy closed while at the provider stays
    closed), before quiet hours that outlast its window when `care` is given.
    Returns whether the status changed, or None for an unknown text.
    """
    if (message_id is None) == (provider_sid is None):
        raise ValueError("apply_provider_status needs message_id or provider_sid")
    table = MESSAGES.c
    which = table.id == message_id if message_id is not None else table.provider_sid == provider_sid
    if reported_sid is not None:
        which = sa.and_(which, table.provider_sid == reported_sid)
    copy_named = provider_sid is not None or reported_sid is not None
    target = TWILIO_STATUSES.get(status)
    code = str(error_code) if error_code is not None else None
    row = None
    retries = False
    if target is not None:
        values: dict[str, object] = {
            "status": target,
            "updated_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if target == DELIVERED:
            values["delivered_at"] = now
        retries = (
            target in (FAILED, UNDELIVERED) and retry and copy_named and error_code in RETRIED_CODES
        )
        if retries and _retry_reported(
            session, which, status=status, error_code=error_code, now=now, kind=kind, care=care
        ):
            return True
        if target in (FAILED, UNDELIVERED):
            # Failed after a delivery receipt: not delivered after all (the report stays in
            # the text's history); the dashboard then counts it failed, not both.
            values["delivered_at"] = None
            values["error_code"] = code
            values["error_message"] = describe_error_code(error_code) or (
                f"Twilio error {code}" if code else f"reported {status} by the provider"
            )
        row = _move_forward(session, which, target, values)
    changed = row is not None
    if row is None:
        row = session.execute(
            sa.select(table.id, table.patient_id, table.status).where(which)
        ).first()
        if row is None:
            return None
        if target is not None and row.status in _BELOW[target]:
            # Committed after the UPDATE had looked (PostgreSQL, READ COMMITTED): the
            # dispatcher recording this SID at that very moment. Once more, by id (and a
            # failure that passes retried, as it would have been a moment later).
            if retries and _retry_reported(
                session, table.id == row.id, status=status, error_code=error_code, now=now,
                kind=kind, care=care,
            ):  # fmt: skip
                return True
            moved = _move_forward(session, table.id == row.id, target, values)
            if moved is not None:
                row, changed = moved, True
    message_id, patient_id, current = row
    detail = f"provider status {status or '-'}"
    if error_code is not None:
        detail += f"; error {error_code}"
    if not changed:
        detail += f"; kept {current}"
    add_events(session, [event_row(message_id, now, kind, current, detail[:500])])
    # A 21610 opts the patient out even on a text whose status did not move (already
    # failed): record_permanent_failure is the one place that acts on it (and on START).
    if opt_out and ((changed and current in (FAILED, UNDELIVERED)) or error_code in OPT_OUT_CODES):
        record_permanent_failure(
            session=session, message_id=message_id, patient_id=patient_id, error_code=code, now=now
        )
    return changed


def _retry_reported(
    session: so.Session,
    which: sa.ColumnElement[bool],
    *,
    status: str,
    error_code: int | None,
    now: datetime,
    kind: str,
    care: CareContext | None,
) -> bool:
    """A text the provider took and then reported failed for a reason that passes (30001:
    its queue overflowed, the patient got nothing): back to the queue with backoff, as the
    same error at the create would, while a try fits its window (the error table, README),
    before quiet hours that outlast it too (`last_moment`, with `care`).
    Only from `sent`, the copy reported being the one the text carries: a text delivered,
    or carrying another copy since, is left to the usual forward move. When no try fits,
    the text expires (the patient got nothing: its introduction goes to the next text).
    Returns whether it was requeued or expired (else the caller records the report). The
    failed copy is kept (`FailedCopy`): when the reaper asks about a later request of this
    text, or of another with the same words to the same number, it looks past that copy
    (`lookup.find_unrecorded`)."""
    table = MESSAGES.c
    row = session.execute(
        sa.select(
            table.id, table.attempts, table.expires_at, table.handed_at, table.sent_at,
            table.provider_sid, table.procedure_id, table.patient_id, Patient.timezone,
        )
        .join(Patient, Patient.id == table.patient_id)
        .where(which, table.status == SENT)
    ).first()  # fmt: skip
    if row is None or row.provider_sid is None:
        return False
    retry_at = retry_time(
        attempts=row.attempts,
        expires_at=row.expires_at,
        now=now,
        rng=random.Random(row.id * 1000 + row.attempts),  # jitter spread across texts  # noqa: S311
        tz=zone(row.timezone),
        care=care,
    )
    code = str(error_code)
    why = describe_error_code(error_code) or f"Twilio error {code}"
    # No try fits: the patient got nothing, as when the create is refused so at its
    # window's end: expired, not failed, and without the copy, so that the introduction
    # it carried is given by the next text (`replan_lost_intros`), as it is then.
    moved = session.execute(
        sa.update(MESSAGES)
        .where(table.id == row.id, table.status == SENT, table.provider_sid == row.provider_sid)
        .values(
            status=PENDING if retry_at else EXPIRED, not_before=retry_at, provider_sid=None,
            sent_at=None, delivered_at=None, lease_owner=None, lease_expires_at=None,
            updated_at=now, error_code=code,
            error_message=why if retry_at else f"{why}; no retry fits before its expiry",
        )
        .returning(table.id)
    ).first()  # fmt: skip
    if moved is None:
        return False
    if session.get(FailedCopy, row.provider_sid) is None:  # a copy fails once
        session.add(FailedCopy(provider_sid=row.provider_sid, message_id=row.id, failed_at=now))
        session.flush()
    if retry_at is None:
        detail = f"provider status {status}; error {code}; no retry fits before its expiry"
        add_events(session, [event_row(row.id, now, kind, EXPIRED, detail)])
        log.warning("message %s reported failed (error %s): expired, no retry fits", row.id, code)
        return True
    detail = f"provider status {status}; error {code}; retry at {retry_at.isoformat()}"
    add_events(session, [event_row(row.id, now, kind, PENDING, detail)])
    log.warning("message %s reported failed (error %s): retried later", row.id, code)
    if care is not None:
        # Sent, it kept the times it went at while a nurse's correction re-timed the rest
        # (re-planning leaves texts that reached the provider alone). Unsent again, it
        # takes the procedure's current times, as any text waiting for a retry does: a
        # window the correction closed expires it, a later mark moves it later.
        procedure = session.get(Procedure, row.procedure_id)
        patient = session.get(Patient, row.patient_id)
        if procedure is not None and patient is not None:
            replan_procedure(
                session=session, procedure=procedure, patient=patient, care=care, now=now
            )
    return True


def _started_since_request(session: so.Session, message_id: int) -> bool:
    """The number this text went to texted START after its request: an opt-out code on it
    (Twilio refused it for a STOP before the request) is news of an opt-out the START has
    undone since, as a late report, a poll or the reaper's look-up can bring it."""
    row = session.execute(
        sa.select(Message.to_phone, Message.handed_at, Message.sent_at).where(
            Message.id == message_id
        )
    ).first()
    if row is None or not row.to_phone:
        return False
    requested = row.handed_at or row.sent_at
    if requested is None:
        return False
    return (
        session.scalar(
            sa.select(InboundMessage.id)
            .where(
                InboundMessage.from_phone == row.to_phone,
                InboundMessage.kind == REPLY_START,
                InboundMessage.received_at > requested,
            )
            .limit(1)
        )
        is not None
    )


def _move_forward(
    session: so.Session, which: sa.ColumnElement[bool], target: str, values: dict[str, object]
) -> Any:
    """One guarded UPDATE: the text's status moves to `target` only from below it."""
    table = MESSAGES.c
    return session.execute(
        sa.update(MESSAGES)
        .where(which, table.status.in_(_BELOW[target]))
        .values(values)
        .returning(table.id, table.patient_id, table.status)
    ).first()


def record_status_callback(
    *,
    session: so.Session,
    provider_sid: str,
    status: str,
    error_code: int | None,
    now: datetime,
    care: CareContext | None = None,
) -> bool | None:
    """Apply one status callback; None (and a log line with the SID) for an unknown SID."""
    changed = apply_provider_status(
        session=session,
        provider_sid=provider_sid,
        status=status,
        error_code=error_code,
        now=now,
        kind="status-callback",
        care=care,
    )
    if changed is None:
        log.info("status callback for unknown sid %s (status %s)", provider_sid, status)
    return changed


def hold_status_report(
    *, session: so.Session, provider_sid: str, status: str, error_code: int | None, now: datetime
) -> None:
    """Keep a delivery report for a SID no text carries yet (Twilio called back before the
    dispatcher committed its answer); `apply_held_status_reports` applies it later."""
    session.add(
        HeldStatusReport(
            provider_sid=provider_sid[:64],
            status=status[:20],
            error_code=error_code,
            received_at=now,
        )
    )
    log.info(
        "status callback for sid %s (status %s) held until its text is recorded",
        provider_sid,
        status,
    )


def apply_held_status_reports(
    *,
    session: so.Session,
    now: datetime,
    sids: Collection[str] | None = None,
    care: CareContext | None = None,
) -> tuple[int, int]:
    """Apply held delivery reports whose SID is now on a text, in the order they came (each
    at the time it came); drop those unmatched for HOLD_UNMATCHED. Only `sids` when given
    (the dispatcher, right after recording them). Returns (applied, dropped); not committed.

    Only reports a text now carries are read: reports that match none can pile up for a
    day (a Messaging Service whose own status callback is this webhook reports every
    reply and every other sender's text here), and read oldest first with them, a matched
    one behind HELD_BATCH of them waited a day instead of one reaper round. A staff
    alert's reports are the alerts job's (`apply_held_alert_reports`); neither drops the
    other's before HOLD_UNMATCHED.
    """
    held_sid = HeldStatusReport.provider_sid
    on_a_text = sa.exists().where(MESSAGES.c.provider_sid == held_sid)
    query = (
        sa.select(HeldStatusReport)
        .where(on_a_text)
        .order_by(HeldStatusReport.received_at, HeldStatusReport.id)
    )
    if sids is not None:
        if not sids:
            return 0, 0
        query = query.where(held_sid.in_(list(sids)))
    held = session.scalars(query.limit(HELD_BATCH)).all()
    applied = 0
    done: list[int] = []
    for report in held:
        found = apply_provider_status(
            session=session,
            provider_sid=report.provider_sid,
            status=report.status,
            error_code=report.error_code,
            now=report.received_at,
            kind="status-callback",
            care=care,
        )
        if found is not None:
            applied += 1
            done.append(report.id)
    if done:
        session.execute(sa.delete(HeldStatusReport).where(HeldStatusReport.id.in_(done)))
    dropped = 0
    if sids is None:
        # Unmatched for a day: nothing of ours carries that SID (another sender's text).
        gone = session.execute(
            sa.delete(HeldStatusReport).where(
                HeldStatusReport.received_at <= now - HOLD_UNMATCHED, ~on_a_text
            )
        )
        dropped = int(getattr(gone, "rowcount", 0) or 0)
        if dropped:
            log.warning("%d held status reports matched no text in a day: dropped", dropped)
    return applied, dropped


def poll_stale_statuses(
    *,
    session: so.Session,
    lookup: StatusLookup,
    now: datetime,
    older_than: timedelta,
    limit: int = STATUS_POLL_BATCH,
    care: CareContext | None = None,
    stopping: Callable[[], bool] | None = None,
) -> PollReport:
    """Ask the provider about texts `sent` for longer than `older_than` (a callback was lost).

    A text asked about and still `sent` is asked about again `older_than` later (its
    updated_at marks the last look), until STATUS_POLL_GIVE_UP after it was sent. Ends
    early once `stopping()` (the process is told to stop): the rest wait for the next poll.
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
        if stopping is not None and stopping():
            break
        assert message.provider_sid is not None  # noqa: S101 - the query asked for it
        try:
            found = lookup.fetch_status(message.provider_sid)
        except Exception as exc:  # noqa: BLE001 - ask again on a later pass
            report.errors += 1
            log.warning("message %s: status poll failed (%s)", message.id, type(exc).__name__)
        else:
            # About the copy asked after, while the text still carries it: one reported
            # failed (30001) since the batch was read was retried, and carries another.
            if apply_provider_status(
                session=session,
                message_id=message.id,
                reported_sid=message.provider_sid,
                status=found.status,
                error_code=found.error_code,
                now=now,
                kind="status-polled",
                care=care,
            ):
                report.changed += 1
        message.updated_at = now
        session.commit()
    return report
