"""the needs-attention queue's index: critical steps in a problem status, newest first

Without it the queue reads every critical text ever planned (an OR over statuses and the
patient's opt-out); with it, two short index ranges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_step_status_updated_at",
        "messages",
        ["step", "status", "updated_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_step_status_updated_at", table_name="messages")
