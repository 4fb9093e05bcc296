"""Migration 0008: what unknown-account sign-ins typed is removed from the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from followup.db import make_engine
from followup.migrate import alembic_config


def test_upgrading_removes_typed_text_of_unknown_account_sign_ins(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "0004")
    engine = make_engine(database_url)
    at = datetime(2026, 3, 6, tzinfo=UTC)
    audit = sa.table(
        "audit_events",
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("detail", sa.String),
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                audit.insert(),
                [
                    {"at": at, "actor": "Hunter2-typed-here", "action": "user.sign_in_failed",
                     "detail": "no such account"},
                    {"at": at, "actor": "nurse@example.org", "action": "user.sign_in_failed",
                     "detail": None},
                    {"at": at, "actor": "admin@example.org", "action": "user.signed_in",
                     "detail": None},
                ],
            )  # fmt: skip
        command.upgrade(config, "head")
        with engine.connect() as conn:
            actors = conn.scalars(sa.select(audit.c.actor).order_by(audit.c.actor)).all()
            assert "user_sessions" in sa.inspect(conn).get_table_names()
    finally:
        command.upgrade(config, "head")
        engine.dispose()
    assert sorted(actors) == [
        "admin@example.org",
        "nurse@example.org",
        "unknown account (removed)",
    ]
