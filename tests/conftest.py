"""Shared fixtures: settings, databases (SQLite always, PostgreSQL with TEST_DATABASE_URL),
a FakeClock, the care context and small factories."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from alembic import command

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.db import make_engine, make_session_factory
from followup.migrate import alembic_config
from followup.models import Base
from followup.patients.service import enroll_patient
from followup.patients.validation import EnrollmentForm, EnrollmentResult
from followup.runtime import Runtime, build_care
from followup.settings import Settings
from tests.fakes.transport import ScriptedTransport

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])
# A Friday afternoon in New York, two days before the spring DST change (2026-03-08).
START = datetime(2026, 3, 6, 20, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _a_loaded_machine_starts_calls_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow a worker thread 10 s, not 1 s, between a text's guard and its call: on a
    loaded CI machine a thread may start later than a second, and a test that dispatches
    once would find its text put back unsent. The limit itself is tested with its own value
    (`handover_max_wait=`)."""
    monkeypatch.setattr("followup.messaging.dispatch.HANDOVER_MAX_WAIT", 10.0)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated with Alembic; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")
    return path


@pytest.fixture(scope="session")
def postgresql_url() -> str:
    """The PostgreSQL test database, emptied and migrated once per session."""
    assert TEST_DATABASE_URL, "TEST_DATABASE_URL is not set"
    engine = make_engine(TEST_DATABASE_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    except sa.exc.OperationalError as exc:  # CI must fail, not skip, without PostgreSQL
        pytest.fail(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {exc.orig}")
    finally:
        engine.dispose()
    command.upgrade(alembic_config(TEST_DATABASE_URL), "head")
    return TEST_DATABASE_URL


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database for one test."""
    if request.param == "sqlite":
        path = tmp_path / "followup.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgresql_url")
    engine = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: sa.Engine) -> so.sessionmaker[so.Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: so.sessionmaker[so.Session]) -> Iterator[so.Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        clinic_name="Riverside Spine Center",
        clinic_phone="(202) 555-0100",
    )


@pytest.fixture
def care(settings: Settings) -> CareContext:
    return build_care(settings)


@pytest.fixture
def transport() -> ScriptedTransport:
    return ScriptedTransport()


@pytest.fixture
def runtime(
    settings: Settings,
    database_url: str,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    clock: FakeClock,
    care: CareContext,
    transport: ScriptedTransport,
) -> Runtime:
    return Runtime(
        settings=replace(settings, database_url=database_url),
        clock=clock,
        engine=engine,
        session_factory=session_factory,
        care=care,
        transport=transport,
        owner="test-worker",
    )


def enrollment_form(**overrides: Any) -> EnrollmentForm:
    """A valid enrollment; override any field."""
    values: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": "Moreno",
        "phone": "(202) 555-0143",
        "procedure": "kyphoplasty",
        "completed_at": "2026-03-06T13:30",
        "timezone": "America/New_York",
        "language": "en",
        "blood_thinner": None,
        "consent": True,
    }
    values.update(overrides)
    # The blood-thinner question is explicit: answer it from the name unless a test does.
    values.setdefault("takes_blood_thinner", values["blood_thinner"] is not None)
    return EnrollmentForm(**values)


@pytest.fixture
def enroll(
    session: so.Session, care: CareContext, clock: FakeClock
) -> Callable[..., EnrollmentResult]:
    """Enroll a patient through the real service and commit; returns the result."""

    def _enroll(**overrides: Any) -> EnrollmentResult:
        result = enroll_patient(
            session=session,
            form=enrollment_form(**overrides),
            care=care,
            region="US",
            now=clock.now(),
            actor="test",
        )
        session.commit()
        return result

    return _enroll
