"""needs-attention marks for critical texts, and the send log's indexes

The indexes serve the admins' log (keyset pages on due_at, id; the step filter) and the
dashboard (sent, delivered and failed per day; opt-outs). All are plain B-trees that
PostgreSQL builds in seconds at a million texts; on a live database with far more rows,
build them first with CREATE INDEX CONCURRENTLY under the same names.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attention_resolutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_by", sa.String(length=254), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_attention_resolutions_message_id_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attention_resolutions")),
        sa.UniqueConstraint("message_id", name=op.f("uq_attention_resolutions_message_id")),
    )
    op.create_index("ix_messages_delivered_at", "messages", ["delivered_at"], unique=False)
    op.create_index("ix_messages_due_at_id", "messages", ["due_at", "id"], unique=False)
    op.create_index("ix_messages_sent_at", "messages", ["sent_at"], unique=False)
    op.create_index(
        "ix_messages_status_updated_at", "messages", ["status", "updated_at"], unique=False
    )
    op.create_index("ix_messages_step_due_at", "messages", ["step", "due_at"], unique=False)

    op.create_index(op.f("ix_patients_opted_out_at"), "patients", ["opted_out_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_patients_opted_out_at"), table_name="patients")

    op.drop_index("ix_messages_step_due_at", table_name="messages")
    op.drop_index("ix_messages_status_updated_at", table_name="messages")
    op.drop_index("ix_messages_sent_at", table_name="messages")
    op.drop_index("ix_messages_due_at_id", table_name="messages")
    op.drop_index("ix_messages_delivered_at", table_name="messages")

    op.drop_table("attention_resolutions")
