"""Reaping: settle texts left in `sending` after their lease ran out, never sending twice."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.dispatch import DISPATCH_BATCH, LEASE, MAX_ATTEMPTS
from followup.messaging.events import add_events, event_row, release
from followup.messaging.models import (
    DELIVERED,
    EXPIRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
    Message,
)
from followup.messaging.reports import ReapReport
from followup.messaging.status import TWILIO_STATUSES, apply_provider_status
from followup.messaging.transports.base import SmsTransport

log = logging.getLogger(__name__)

RECONCILE_SLACK = timedelta(minutes=2)  # look a little before the claim for clock skew


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
            add_events(
                session,
                [event_row(message.id, now, "held", SENDING, "lease expired; outcome unknown")],
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
                release(message, SENT, now)
                message.provider_sid = found.provider_sid
                message.segments = found.segments
                message.sent_at = message.sent_at or now
                add_events(
                    session,
                    [
                        event_row(
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
                release(message, EXPIRED, now)
                add_events(
                    session,
                    [
                        event_row(
                            message.id, now, "expired", EXPIRED, "not at provider; window closed"
                        )
                    ],
                )
                report.expired += 1
            elif message.attempts >= MAX_ATTEMPTS:
                release(message, FAILED, now)
                add_events(
                    session,
                    [
                        event_row(
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
                release(message, PENDING, now)
                message.not_before = None
                add_events(
                    session,
                    [
                        event_row(
                            message.id, now, "requeued", PENDING, "not at provider; send again"
                        )
                    ],
                )
                report.requeued += 1
        session.commit()
    return report
