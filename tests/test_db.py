import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from alembic import command
from alembic.util.exc import CommandError

from followup.migrate import alembic_config
from followup.models import AuditEvent
from followup.runtime import Runtime


def test_datetimes_round_trip_as_aware_utc(session: so.Session) -> None:
    eastern = timezone(timedelta(hours=-5))
    event = AuditEvent(at=datetime(2026, 3, 8, 1, 30, tzinfo=eastern), actor="t", action="x")
    session.add(event)
    session.commit()
    session.expunge_all()
    loaded = session.scalars(sa.select(AuditEvent)).one()
    assert loaded.at == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    assert loaded.at.tzinfo is UTC


def test_a_naive_datetime_is_refused(session: so.Session) -> None:
    session.add(AuditEvent(at=datetime(2026, 3, 8, 1, 30), actor="t", action="x"))  # noqa: DTZ001
    with pytest.raises(sa.exc.StatementError, match="naive datetime refused"):
        session.commit()


def test_migrations_match_the_models(database_url: str) -> None:
    # `alembic check` raises when autogenerate finds any difference.
    config = alembic_config(database_url)
    try:
        command.check(config)
    except CommandError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"alembic check is not clean: {exc}")


def test_migrations_downgrade_and_upgrade_again(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)


def test_a_failing_job_logs_no_phone_number_or_name(
    session: so.Session, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error quotes the refused row (PostgreSQL's DETAIL): the log must not."""
    from followup.models import Patient
    from jobs.scheduler import _guarded

    now = datetime(2026, 3, 6, tzinfo=UTC)

    def job(_runtime: object) -> None:
        session.add(
            Patient(
                first_name="Ada", last_name="Moreno", phone="+12025550143",
                timezone="America/New_York", language="xx", created_at=now,
            )
        )  # fmt: skip
        session.commit()

    with caplog.at_level(logging.ERROR):
        _guarded("plan", job, runtime)
    session.rollback()
    assert "job plan failed" in caplog.text
    assert "IntegrityError" in caplog.text
    assert "5550143" not in caplog.text and "Moreno" not in caplog.text
