"""Delivery status: the provider's callbacks and polls, applied forward only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import is_postgresql
from followup.messaging.errors import OPT_OUT_CODES, describe_error_code
from followup.messaging.events import add_events, event_row
from followup.messaging.models import (
    DELIVERED,
    FAILED,
    SENDING,
    SENT,
    UNDELIVERED,
    Message,
)
from followup.messaging.outbox import OPTED_OUT, record_opt_out
from followup.messaging.reports import PollReport

log = logging.getLogger(__name__)

STATUS_POLL_GIVE_UP = timedelta(days=3)  # stop asking about a text still `sent` after this
STATUS_POLL_BATCH = 100

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
    add_events(session, [event_row(message.id, now, kind, message.status, detail[:500])])
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
    limit: int = STATUS_POLL_BATCH,
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
