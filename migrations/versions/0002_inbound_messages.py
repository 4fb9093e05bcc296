"""inbound messages: patients' replies, matched to a patient, classified, flagged for nurses

provider_sid is unique: a webhook Twilio retries stores nothing twice. patient_id is NULL
for a sender who matches no patient (stored and flagged, never dropped). handled_* are for
the nurses' review and stay NULL until then.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("from_phone", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("provider_sid", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pain_score", sa.Integer(), nullable=True),
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handled_by", sa.String(length=254), nullable=True),
        sa.Column("handled_note", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "pain_score BETWEEN 0 AND 10", name=op.f("ck_inbound_messages_pain_score")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_inbound_messages_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        sa.UniqueConstraint("provider_sid", name=op.f("uq_inbound_messages_provider_sid")),
    )
    op.create_index(
        op.f("ix_inbound_messages_patient_id"), "inbound_messages", ["patient_id"], unique=False
    )
    op.create_index(
        op.f("ix_inbound_messages_received_at"), "inbound_messages", ["received_at"], unique=False
    )
    op.create_index(
        "ix_inbound_messages_attention",
        "inbound_messages",
        ["needs_attention", "handled_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_attention", table_name="inbound_messages")
    op.drop_index(op.f("ix_inbound_messages_received_at"), table_name="inbound_messages")
    op.drop_index(op.f("ix_inbound_messages_patient_id"), table_name="inbound_messages")

    op.drop_table("inbound_messages")
