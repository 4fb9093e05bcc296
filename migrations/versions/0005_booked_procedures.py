"""booked procedures: scheduled time, blood-thinner stop date and explicit answer, intro step

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("procedures") as batch:
        batch.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("takes_blood_thinner", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("stop_blood_thinner_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("intro_step", sa.String(length=64), nullable=True))
        batch.create_check_constraint("booked", "status != 'scheduled' OR scheduled_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("procedures") as batch:
        batch.drop_constraint(op.f("ck_procedures_booked"), type_="check")
        batch.drop_column("intro_step")
        batch.drop_column("stop_blood_thinner_on")
        batch.drop_column("takes_blood_thinner")
        batch.drop_column("scheduled_at")
