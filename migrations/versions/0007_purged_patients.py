"""purged_patients: which patients the retention purge emptied, and when

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purged_patients",
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_purged_patients_patient_id_patients"),
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_purged_patients")),
    )


def downgrade() -> None:
    op.drop_table("purged_patients")
