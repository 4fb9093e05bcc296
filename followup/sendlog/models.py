"""What staff did about the needs-attention queue."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import Base, UTCDateTime
from followup.messaging.models import Message


class AttentionResolution(Base):
    """A critical text a nurse or admin has followed up (replies carry their own marks)."""

    __tablename__ = "attention_resolutions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    message_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("messages.id"), unique=True)
    handled_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    handled_by: so.Mapped[str] = so.mapped_column(sa.String(254))
    note: so.Mapped[str] = so.mapped_column(sa.String(500))


# Indexes on the outbox that serve the send log and the dashboard (declared here, beside
# the queries that need them; the dispatcher's own indexes live with the Message model).
sa.Index("ix_messages_due_at_id", Message.due_at, Message.id)  # keyset pages, newest first
sa.Index("ix_messages_step_due_at", Message.step, Message.due_at)  # the step filter
sa.Index("ix_messages_sent_at", Message.sent_at)  # sent per day
sa.Index("ix_messages_delivered_at", Message.delivered_at)  # delivered per day
sa.Index("ix_messages_status_updated_at", Message.status, Message.updated_at)  # failures
# The needs-attention queue: critical steps in a problem status, newest first.
sa.Index("ix_messages_step_status_updated_at", Message.step, Message.status, Message.updated_at)
