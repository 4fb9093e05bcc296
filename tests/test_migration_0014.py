"""Migration 0014: a needs-attention mark covers the problem it was written for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from alembic import command

from followup.inbox.models import AttentionResolution
from followup.messaging.models import Message
from followup.migrate import alembic_config
from tests.messaging.helpers import Enroll

AT = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)


def test_marks_keep_what_they_covered_across_the_migration(
    database_url: str, session: so.Session, enroll: Enroll
) -> None:
    # Two marks of one text (two problems, handled one after the other): going back to
    # 0013, whose unique constraint allows one, keeps the latest; coming up again, a mark
    # from before 0014 covers the text as it was when it was written.
    restart = enroll(blood_thinner="Eliquis").messages[2]
    for minutes, note in ((10, "first"), (20, "second")):
        session.add(
            AttentionResolution(
                message_id=restart.id, problem_at=AT + timedelta(minutes=minutes - 1),
                handled_at=AT + timedelta(minutes=minutes), handled_by="nurse", note=note,
            )
        )  # fmt: skip
    session.commit()
    session.close()
    config = alembic_config(database_url)
    try:
        command.downgrade(config, "0013")
        command.upgrade(config, "head")
    finally:
        command.upgrade(config, "head")
    marks = session.execute(
        sa.select(AttentionResolution.note, AttentionResolution.problem_at,
                  AttentionResolution.handled_at)
    ).all()  # fmt: skip
    assert [(note, problem_at) for note, problem_at, _ in marks] == [
        ("second", AT + timedelta(minutes=20))
    ]
    assert session.get(Message, restart.id) is not None
