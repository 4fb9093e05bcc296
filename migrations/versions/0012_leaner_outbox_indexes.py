"""leaner outbox indexes: fewer entries to write per planned, claimed and sent text

Every text is inserted once and updated three times on its way out (claim, hand-over,
outcome); each write adds an entry to every index it touches (on PostgreSQL to every index,
as a status change is never a HOT update). So:

- `ix_messages_status_lease_expires_at` goes: the texts in `sending` are the few in flight,
  and the reaper and the stuck-texts gauge find them through `ix_messages_status_due_at`'s
  leading status column.
- `ix_messages_sent_at` and `ix_messages_delivered_at` hold only the texts that have the
  time (every query on them is a range or an order over texts that have it), so planning,
  claiming and the hand-over add no entry to them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = ("sent_at", "delivered_at")


def upgrade() -> None:
    op.drop_index("ix_messages_status_lease_expires_at", table_name="messages")
    for column in _PARTIAL:
        op.drop_index(f"ix_messages_{column}", table_name="messages")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            f"ix_messages_{column}",
            "messages",
            [column],
            unique=False,
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for column in _PARTIAL:
        op.drop_index(f"ix_messages_{column}", table_name="messages")
        op.create_index(f"ix_messages_{column}", "messages", [column], unique=False)
    op.create_index(
        "ix_messages_status_lease_expires_at",
        "messages",
        ["status", "lease_expires_at"],
        unique=False,
    )
