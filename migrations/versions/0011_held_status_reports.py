"""delivery reports that arrive before their text's SID is recorded

`held_status_reports` keeps a signed status callback whose MessageSid is not yet on any
text (Twilio answered the create, the dispatcher had not committed it yet) until the SID
is recorded; it holds no patient data.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_status_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_sid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_status_reports")),
    )
    op.create_index(
        op.f("ix_held_status_reports_provider_sid"), "held_status_reports", ["provider_sid"]
    )
    op.create_index(
        op.f("ix_held_status_reports_received_at"), "held_status_reports", ["received_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_held_status_reports_received_at"), table_name="held_status_reports")
    op.drop_index(op.f("ix_held_status_reports_provider_sid"), table_name="held_status_reports")
    op.drop_table("held_status_reports")
