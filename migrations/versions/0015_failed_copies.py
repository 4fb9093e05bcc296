"""the copies of texts that failed and were tried again: failed_copies

A delivery report of error 30001 (Twilio's queue overflowed) puts a sent text back in the
queue. Each failed copy's SID is kept here, however many times the text was tried, so that
when the reaper asks Twilio about a later request of that text (or of another text with
the same words to the same number) it never takes a failed copy for that request's.

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


def upgrade() -> None:
    op.create_table(
        "failed_copies",
        sa.Column("provider_sid", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_failed_copies_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("provider_sid", name=op.f("pk_failed_copies")),
    )
    op.create_index(
        op.f("ix_failed_copies_message_id"), "failed_copies", ["message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_failed_copies_message_id"), table_name="failed_copies")
    op.drop_table("failed_copies")
