"""closed copies to ask the provider about: a partial index on the lease

A requeued copy that a STOP, a cancellation or re-planning closed while an older request
of it may still have reached Twilio keeps a lease owner and a time to ask after; the
reaper finds these few rows through this index (no other write adds an entry to it).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in followup/messaging/models.py (CLOSED_UNSETTLED), written out: a migration does
# not follow later edits of the model.
_WHERE = "lease_owner IS NOT NULL AND status IN ('cancelled', 'expired')"


def upgrade() -> None:
    op.create_index(
        "ix_messages_closed_unsettled",
        "messages",
        ["lease_expires_at"],
        unique=False,
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_closed_unsettled", table_name="messages")
