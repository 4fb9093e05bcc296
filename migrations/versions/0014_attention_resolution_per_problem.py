"""needs-attention marks cover the problem they were written for, not the text for good

A critical text a nurse handled (cancelled by an opt-out, say) may come back (START) and
then fail or expire: a new problem, which must be raised again. A mark now records the
text's `updated_at` when it was handled (`problem_at`), and covers the text only while
the text has not changed since; a text can so carry several marks, one per problem, and
the unique constraint on `message_id` gives way to a plain index. Marks written before
this migration cover what happened up to when they were written (`handled_at`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attention_resolutions") as batch_op:
        batch_op.add_column(sa.Column("problem_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint("uq_attention_resolutions_message_id", type_="unique")
        batch_op.create_index(
            "ix_attention_resolutions_message_id", ["message_id", "problem_at"], unique=False
        )
    op.execute("UPDATE attention_resolutions SET problem_at = handled_at")
    with op.batch_alter_table("attention_resolutions") as batch_op:
        batch_op.alter_column("problem_at", existing_type=sa.DateTime(timezone=True),
                              nullable=False)  # fmt: skip


def downgrade() -> None:
    # Keeps each text's latest mark: the unique constraint allows one.
    op.execute(
        "DELETE FROM attention_resolutions WHERE id NOT IN"
        " (SELECT max(id) FROM attention_resolutions GROUP BY message_id)"
    )
    with op.batch_alter_table("attention_resolutions") as batch_op:
        batch_op.drop_index("ix_attention_resolutions_message_id")
        batch_op.create_unique_constraint("uq_attention_resolutions_message_id", ["message_id"])
        batch_op.drop_column("problem_at")
