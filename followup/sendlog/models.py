"""Indexes on the outbox that serve the send log and the dashboard (no tables of its own)."""

from __future__ import annotations

import sqlalchemy as sa

from followup.messaging.models import Message

# Indexes on the outbox that serve the send log and the dashboard (declared here, beside
# the queries that need them; the dispatcher's own indexes live with the Message model).
sa.Index("ix_messages_due_at_id", Message.due_at, Message.id)  # keyset pages, newest first
sa.Index("ix_messages_step_due_at", Message.step, Message.due_at)  # the step filter
# Sent and delivered per day: only texts that have the time (every query on them is a range
# or an order over such texts), so planning, claiming and the hand-over write no entry here.
_SENT, _DELIVERED = sa.text("sent_at IS NOT NULL"), sa.text("delivered_at IS NOT NULL")
sa.Index("ix_messages_sent_at", Message.sent_at, sqlite_where=_SENT, postgresql_where=_SENT)
sa.Index(
    "ix_messages_delivered_at",
    Message.delivered_at,
    sqlite_where=_DELIVERED,
    postgresql_where=_DELIVERED,
)
sa.Index("ix_messages_status_updated_at", Message.status, Message.updated_at)  # failures
