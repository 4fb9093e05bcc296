"""The care team's queue: what staff did about its items, and the alerts sent for them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime
from followup.messaging.models import Message


class AttentionResolution(Base):
    """A critical text a nurse or admin has followed up (replies carry their own marks).

    It covers the problem it was written for: the text as it was then (`problem_at`, the
    text's `updated_at` when handled). A text that changes afterwards (brought back by
    START, then failed or expired) is a new problem, raised again and handled with a mark
    of its own.
    """

    __tablename__ = "attention_resolutions"
    __table_args__ = (sa.Index("ix_attention_resolutions_message_id", "message_id", "problem_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id"))
    problem_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    handled_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    handled_by: so.Mapped[str] = so.mapped_column(sa.String(254))
    note: so.Mapped[str] = so.mapped_column(sa.String(500))


class UnreachableResolution(Base):
    """A "cannot receive texts" item a nurse handled.

    It covers every permanent failure of the patient's texts that had failed when it was
    handled (`message_id` is the newest of them), and every later failure to that text's
    number: a landline stays a landline, so the item comes back only for a new number.
    """

    __tablename__ = "unreachable_resolutions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patients.id"), index=True)
    # Unique: two nurses handling the same item at once cannot both record it.
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id"), unique=True)
    handled_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    handled_by: so.Mapped[str] = so.mapped_column(sa.String(254))
    note: so.Mapped[str] = so.mapped_column(sa.String(500))


# Alert channels, rounds and outcomes (staff_alerts).
SMS = "sms"
EMAIL = "email"
FIRST = 0  # sent when the urgent reply arrives
ESCALATION = 1  # sent when it is still unhandled after ESCALATE_AFTER_MINUTES
ALERT_SENDING = "sending"  # claimed: being handed to the SMS provider or the mail server
ALERT_SENT = "sent"
ALERT_DELIVERED = "delivered"
ALERT_FAILED = "failed"
ALERT_RETRY = "retry"  # did not reach the provider; tried again at not_before
ALERT_UNKNOWN = "unknown"  # the sender died mid-send: never resent, since it may have gone
ALERT_STATUSES = (
    ALERT_SENDING,
    ALERT_SENT,
    ALERT_DELIVERED,
    ALERT_FAILED,
    ALERT_RETRY,
    ALERT_UNKNOWN,
)
_alert_statuses = ", ".join(f"'{s}'" for s in ALERT_STATUSES)


class StaffAlert(Base):
    """One alert to one member of staff about one urgent reply: who, when, how, outcome.

    The row is the claim: it is inserted (and committed) before anything is sent, and the
    unique (reply, round, channel, recipient) means two processes (serve and tick, two
    workers) cannot both send it. A staff alert is not a patient text: it never enters the
    outbox, carries no name, phone or reply words, and obeys no quiet hours.
    """

    __tablename__ = "staff_alerts"
    __table_args__ = (
        sa.UniqueConstraint(
            "inbound_message_id", "round", "channel", "recipient", name="uq_staff_alerts_claim"
        ),
        sa.CheckConstraint(f"status IN ({_alert_statuses})", name="status"),
        sa.Index("ix_staff_alerts_status_not_before", "status", "not_before"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    inbound_message_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("inbound_messages.id"), index=True
    )
    round: so.Mapped[int] = so.mapped_column(default=FIRST)
    channel: so.Mapped[str] = so.mapped_column(sa.String(8))
    role: so.Mapped[str] = so.mapped_column(sa.String(16))  # oncall, escalation, email
    recipient: so.Mapped[str] = so.mapped_column(sa.String(254))  # staff phone or e-mail
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=ALERT_SENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=1)
    claimed_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    claimed_by: so.Mapped[str] = so.mapped_column(sa.String(64))
    not_before: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    sent_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    provider_sid: so.Mapped[str | None] = so.mapped_column(sa.String(64), index=True)
    error: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    updated_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())


# The queue's indexes on the outbox, beside the queries that need them. Both carry every
# column the queue's counts read, so the header's figures come from the index alone
# (PostgreSQL: an index-only scan), however long the log; both are partial where the
# planner can use them so (SQLite proves only "x IS NOT NULL" from "x = ?", so the first
# is a full index there).
# Critical steps in a problem status, newest first:
_PROBLEMS = "status IN ('failed', 'expired', 'undelivered', 'cancelled')"
sa.Index(
    "ix_messages_problems",
    Message.step,
    Message.status,
    Message.updated_at,
    Message.id,
    postgresql_where=sa.text(_PROBLEMS),
)
# texts that failed with an error code ("cannot receive texts"), per patient and number:
_FAILED_WITH_CODE = "error_code IS NOT NULL"
sa.Index(
    "ix_messages_error_code",
    Message.error_code,
    Message.status,
    Message.patient_id,
    Message.id,
    Message.to_phone,
    postgresql_where=sa.text(_FAILED_WITH_CODE),
    sqlite_where=sa.text(_FAILED_WITH_CODE),
)
