"""The outbox (`messages`) and each message's append-only history (`message_events`)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
UNDELIVERED = "undelivered"
FAILED = "failed"
CANCELLED = "cancelled"
EXPIRED = "expired"
STATUSES = (PENDING, SENDING, SENT, DELIVERED, UNDELIVERED, FAILED, CANCELLED, EXPIRED)
FINAL_STATUSES = frozenset({DELIVERED, UNDELIVERED, FAILED, CANCELLED, EXPIRED})

_status_list = ", ".join(f"'{s}'" for s in STATUSES)
# Copies closed (cancelled, expired) while a request of theirs may be at the provider keep
# a lease owner until the reaper has asked the provider about them (reconcile.py).
CLOSED_UNSENT = (CANCELLED, EXPIRED)
CLOSED_UNSETTLED = f"lease_owner IS NOT NULL AND status IN ('{CANCELLED}', '{EXPIRED}')"


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("procedure_id", "step", name="uq_messages_procedure_id_step"),
        sa.CheckConstraint(f"status IN ({_status_list})", name="status"),
        # The dispatcher's claim, its wake-up and expiry: pending texts in due order (a
        # pending text is due before its window closes, so expiry reads only this range).
        # Its leading status also finds the few texts in `sending` for the reaper: no index
        # on the lease, which every claim, hand-over and outcome would have to write.
        sa.Index("ix_messages_status_due_at", "status", "due_at"),
        # Closed copies a request of which may be at the provider, for the reaper to ask
        # about (rare): an index that no claim, hand-over or outcome adds an entry to.
        sa.Index(
            "ix_messages_closed_unsettled",
            "lease_expires_at",
            sqlite_where=sa.text(CLOSED_UNSETTLED),
            postgresql_where=sa.text(CLOSED_UNSETTLED),
        ),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    procedure_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("procedures.id"))
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patients.id"), index=True)
    step: so.Mapped[str] = so.mapped_column(sa.String(64))
    due_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    not_before: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    lease_owner: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    lease_expires_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    claimed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    # When the current claim handed the text to the transport; NULL while it has not, so
    # the reaper requeues a claimed text that never left without asking the provider.
    handed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    body: so.Mapped[str | None] = so.mapped_column(sa.Text())
    to_phone: so.Mapped[str | None] = so.mapped_column(sa.String(20))
    provider_sid: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    segments: so.Mapped[int | None] = so.mapped_column()
    error_code: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    error_message: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    sent_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    delivered_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    updated_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())


class MessageEvent(Base):
    __tablename__ = "message_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id"), index=True)
    at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    kind: so.Mapped[str] = so.mapped_column(sa.String(32))
    status: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    detail: so.Mapped[str | None] = so.mapped_column(sa.String(500))


class FailedCopy(Base):
    """A provider's copy of a text that failed for a reason that passes (30001: its queue
    overflowed) and set off a retry (status.py `_retry_reported`). Every such copy is kept,
    however many times the text was tried: it is never a later request's copy, this text's
    or another's with the same words to the same number (lookup.py `find_unrecorded`)."""

    __tablename__ = "failed_copies"

    provider_sid: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id"), index=True)
    failed_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())


class HeldStatusReport(Base):
    """A delivery report that came before its text's provider SID was recorded.

    Twilio may call back (a fast `failed` or `undelivered`) before the dispatcher has
    committed the answer that carries the SID. Such a report is kept here, with no patient
    data, and applied as soon as the SID is known; one never matched is dropped after a day.
    """

    __tablename__ = "held_status_reports"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    provider_sid: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(20))
    error_code: so.Mapped[int | None] = so.mapped_column(sa.Integer())
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)


# What a reply was taken to mean (inbound_messages.kind).
REPLY_STOP = "stop"
REPLY_START = "start"
REPLY_HELP = "help"
REPLY_PAIN = "pain"
REPLY_SYMPTOM = "symptom"
REPLY_OTHER = "other"
REPLY_CLOSING = "closing"  # "thanks", "ok", an emoji: recorded, not queued, not answered
REPLY_KINDS = (
    REPLY_STOP,
    REPLY_START,
    REPLY_HELP,
    REPLY_PAIN,
    REPLY_SYMPTOM,
    REPLY_OTHER,
    REPLY_CLOSING,
)

# What a reply needs from people (inbound_messages.triage).
TRIAGE_URGENT = "urgent"  # a warning sign or a pain score of 7 or more: answered, alerted
TRIAGE_READING = "reading"  # a question or anything not understood: a nurse reads it
TRIAGE_CLOSING = "closing"  # thanks, ok: recorded only
TRIAGE_RECORDED = "recorded"  # a pain score below 7: recorded and thanked
TRIAGE_KEYWORD = "keyword"  # STOP, START, HELP and their Spanish words
TRIAGES = (TRIAGE_URGENT, TRIAGE_READING, TRIAGE_CLOSING, TRIAGE_RECORDED, TRIAGE_KEYWORD)


class InboundMessage(Base):
    """A text a patient (or an unknown sender) sent us, as classified when it arrived."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        sa.CheckConstraint("pain_score BETWEEN 0 AND 10", name="pain_score"),
        # The nurses' queue: replies needing attention that nobody has handled yet.
        sa.Index("ix_inbound_messages_attention", "needs_attention", "handled_at"),
        # Replies from one number over time: the "a nurse will read it" answer's 12-hour limit.
        sa.Index("ix_inbound_messages_from_phone_received_at", "from_phone", "received_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # NULL when the sender matches no patient: stored and flagged, never dropped.
    patient_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("patients.id"), index=True)
    from_phone: so.Mapped[str] = so.mapped_column(sa.String(32))
    body: so.Mapped[str] = so.mapped_column(sa.Text())
    provider_sid: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(16))
    pain_score: so.Mapped[int | None] = so.mapped_column()
    needs_attention: so.Mapped[bool] = so.mapped_column(default=False)
    handled_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime())
    handled_by: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    handled_note: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    # Triage: what the reply needs (urgent, reading, ...) and why, in words for the nurse.
    # A row written without one needs reading: when in doubt, a person looks.
    triage: so.Mapped[str] = so.mapped_column(
        sa.String(16), default=TRIAGE_READING, server_default=TRIAGE_READING
    )
    triage_reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    # The text the patient was answering: the last one sent to them before the reply.
    answers_message_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("messages.id"))
    # The automatic answer sent back (TwiML), if any: which kind, and its words.
    answer_kind: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    answer_body: so.Mapped[str | None] = so.mapped_column(sa.Text())
