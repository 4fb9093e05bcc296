"""server-side sign-in sessions; scrub what unknown-account sign-ins typed from the audit

A row per sign-in, holding only the SHA-256 of the random token the browser's cookie
carries, so that sign-out, a password change or reset and deactivation end a session
for good (a copied cookie stops working), and its lifetime is counted from sign-in.

Failed sign-ins for unknown accounts used to keep what was typed in the e-mail box as
the audit actor: sometimes a password. Those actors are replaced; new rows keep a keyed,
non-reversible fingerprint instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_sessions_token_hash")),
    )
    op.create_index(op.f("ix_user_sessions_user_id"), "user_sessions", ["user_id"], unique=False)
    audit = sa.table(
        "audit_events",
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("detail", sa.String),
    )
    op.execute(
        audit.update()
        .where(audit.c.action == "user.sign_in_failed", audit.c.detail == "no such account")
        .values(actor="unknown account (removed)")
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_user_sessions_user_id"), table_name="user_sessions")
    op.drop_table("user_sessions")
