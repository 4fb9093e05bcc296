"""the copy of a text that failed and was tried again: messages.failed_sid

A delivery report of error 30001 (Twilio's queue overflowed) puts a sent text back in the
queue. The failed copy's SID is kept here, so that when the reaper asks Twilio about a
later request of that text (or of another text with the same words to the same number) it
never takes the failed copy for that request's. A partial index: only such rows have an
entry.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = "failed_sid IS NOT NULL"


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: no copy of the table.
    op.add_column("messages", sa.Column("failed_sid", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_messages_failed_sid",
        "messages",
        ["failed_sid"],
        unique=False,
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_failed_sid", table_name="messages")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's own DROP COLUMN (3.35+): a batch copy of `messages` would drop the table
        # that message_events' foreign key points at.
        op.execute("ALTER TABLE messages DROP COLUMN failed_sid")
    else:
        op.drop_column("messages", "failed_sid")
