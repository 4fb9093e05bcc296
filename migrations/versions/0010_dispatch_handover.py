"""the dispatcher's hand-over mark

`messages.handed_at` records when the current claim handed a text to the transport (NULL
until then): the reaper requeues a claimed text that never left without asking Twilio,
and asks only about those that may have reached it. No index: it is read only for texts
the reaper has already found by (status, lease_expires_at).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("handed_at")
