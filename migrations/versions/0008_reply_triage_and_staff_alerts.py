"""reply triage and answers, staff alerts, handled "cannot receive texts" items

inbound_messages gains its triage (urgent, reading, closing, recorded, keyword) and the
reason in words, the text it answers, and the automatic answer it got. Replies stored
before this get a triage from what they were classified as: a symptom or a pain score of
7 or more is urgent, anything else flagged is `reading`.

staff_alerts: one row per alert to one member of staff about one urgent reply; its unique
(reply, round, channel, recipient) is the claim that keeps two processes from sending the
same alert. unreachable_resolutions: the notes of handled "cannot receive texts" items.
Two partial indexes on messages (problem statuses; rows with an error code) hold every
column the queue's counts read, so the header's figures on every page stay index-only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROBLEMS = "status IN ('failed', 'expired', 'undelivered', 'cancelled')"
FAILED_WITH_CODE = "error_code IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "unreachable_resolutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_by", sa.String(length=254), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_unreachable_resolutions_message_id_messages"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_unreachable_resolutions_patient_id_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unreachable_resolutions")),
        sa.UniqueConstraint("message_id", name=op.f("uq_unreachable_resolutions_message_id")),
    )
    op.create_index(
        op.f("ix_unreachable_resolutions_patient_id"),
        "unreachable_resolutions",
        ["patient_id"],
        unique=False,
    )

    op.create_table(
        "staff_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbound_message_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_sid", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('sending', 'sent', 'delivered', 'failed', 'retry', 'unknown')",
            name=op.f("ck_staff_alerts_status"),
        ),
        sa.ForeignKeyConstraint(
            ["inbound_message_id"],
            ["inbound_messages.id"],
            name=op.f("fk_staff_alerts_inbound_message_id_inbound_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_alerts")),
        sa.UniqueConstraint(
            "inbound_message_id", "round", "channel", "recipient", name="uq_staff_alerts_claim"
        ),
    )
    op.create_index(
        op.f("ix_staff_alerts_inbound_message_id"),
        "staff_alerts",
        ["inbound_message_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_staff_alerts_provider_sid"), "staff_alerts", ["provider_sid"], unique=False
    )
    op.create_index(
        "ix_staff_alerts_status_not_before", "staff_alerts", ["status", "not_before"], unique=False
    )

    # SQLite copies the table for the foreign key (batch mode); PostgreSQL alters it.
    with op.batch_alter_table("inbound_messages") as batch_op:
        batch_op.add_column(
            sa.Column("triage", sa.String(length=16), server_default="reading", nullable=False)
        )
        batch_op.add_column(sa.Column("triage_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("answers_message_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("answer_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("answer_body", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_inbound_messages_answers_message_id_messages"),
            "messages",
            ["answers_message_id"],
            ["id"],
        )
    op.create_index(
        "ix_inbound_messages_from_phone_received_at",
        "inbound_messages",
        ["from_phone", "received_at"],
        unique=False,
    )
    op.execute(
        "UPDATE inbound_messages SET triage = CASE"
        " WHEN kind IN ('stop', 'start', 'help') THEN 'keyword'"
        " WHEN kind = 'symptom' THEN 'urgent'"
        " WHEN kind = 'pain' AND pain_score >= 7 THEN 'urgent'"
        " WHEN kind = 'pain' THEN 'recorded'"
        " ELSE 'reading' END"
    )

    # The queue's counts on every page read only these two partial indexes. The first
    # replaces 0004's ix_messages_step_status_updated_at (same queries, problem rows only).
    op.drop_index("ix_messages_step_status_updated_at", table_name="messages")
    op.create_index(
        "ix_messages_problems",
        "messages",
        ["step", "status", "updated_at", "id"],
        unique=False,
        # Partial on PostgreSQL only: SQLite cannot prove status = ? implies the IN list.
        postgresql_where=sa.text(PROBLEMS),
    )
    op.create_index(
        "ix_messages_error_code",
        "messages",
        ["error_code", "status", "patient_id", "id", "to_phone"],
        unique=False,
        postgresql_where=sa.text(FAILED_WITH_CODE),
        sqlite_where=sa.text(FAILED_WITH_CODE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_error_code", table_name="messages")
    op.drop_index("ix_messages_problems", table_name="messages")
    op.create_index(
        "ix_messages_step_status_updated_at",
        "messages",
        ["step", "status", "updated_at"],
        unique=False,
    )

    op.drop_index("ix_inbound_messages_from_phone_received_at", table_name="inbound_messages")
    with op.batch_alter_table("inbound_messages") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_inbound_messages_answers_message_id_messages"), type_="foreignkey"
        )
        batch_op.drop_column("answer_body")
        batch_op.drop_column("answer_kind")
        batch_op.drop_column("answers_message_id")
        batch_op.drop_column("triage_reason")
        batch_op.drop_column("triage")

    op.drop_index("ix_staff_alerts_status_not_before", table_name="staff_alerts")
    op.drop_index(op.f("ix_staff_alerts_provider_sid"), table_name="staff_alerts")
    op.drop_index(op.f("ix_staff_alerts_inbound_message_id"), table_name="staff_alerts")
    op.drop_table("staff_alerts")

    op.drop_index(
        op.f("ix_unreachable_resolutions_patient_id"), table_name="unreachable_resolutions"
    )
    op.drop_table("unreachable_resolutions")
