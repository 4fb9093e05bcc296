"""No patient data in any output: when the database refuses a row, `followup enroll` and
`followup tick` (real subprocesses) say so in one line, with no name, phone or text.

PostgreSQL's error for a refused row carries `DETAIL: Failing row contains (...)`, the
whole row. The test adds a CHECK constraint (a trigger on SQLite, which cannot add one to
an existing table) that refuses this patient's row, and reads stderr and the logs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup.db import make_engine
from followup.logsafe import describe_failure, log_failure
from followup.runtime import Runtime

FOLLOWUP = str(Path(sys.executable).with_name("followup"))
NOW = "2026-03-06T20:00:00Z"
PATIENT_DATA = ("Ada", "Moreno", "555-0143", "5550143", "0143", "Riverside", "sedation")


class Refusing:
    """Make the database refuse one kind of row, and undo it afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.undo: list[str] = []

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def refuse(self, table: str, condition: str) -> None:
        """Refuse rows of `table` for which `condition` (SQL on `{row}.column`) is true."""
        with self.engine.begin() as conn:
            if self.postgres:
                check = condition.replace("{row}.", "")
                conn.execute(
                    sa.text(f"ALTER TABLE {table} ADD CONSTRAINT test_refuse CHECK (NOT ({check}))")
                )
                self.undo.append(f"ALTER TABLE {table} DROP CONSTRAINT test_refuse")
            else:
                new = condition.replace("{row}", "NEW")
                for event in ("INSERT", "UPDATE"):
                    name = f"test_refuse_{event.lower()}"
                    conn.execute(
                        sa.text(
                            f"CREATE TRIGGER {name} BEFORE {event} ON {table} WHEN {new} "
                            "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: test_refuse'); END"
                        )
                    )
                    self.undo.append(f"DROP TRIGGER {name}")

    def close(self) -> None:
        with self.engine.begin() as conn:
            for statement in self.undo:
                conn.execute(sa.text(statement))
        self.engine.dispose()


@pytest.fixture
def refusing(database_url: str) -> Iterator[Refusing]:
    refusing = Refusing(database_url)
    try:
        yield refusing
    finally:
        refusing.close()


def run(database_url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))},
        "DATABASE_URL": database_url,
        "SMS_TRANSPORT": "console",
        "CLINIC_NAME": "Riverside Spine Center",
        "CLINIC_PHONE": "(202) 555-0100",
    }
    return subprocess.run(
        [FOLLOWUP, "--now", NOW, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


ENROLL = (
    "enroll", "--first-name", "Ada", "--last-name", "Moreno", "--phone", "(202) 555-0143",
    "--procedure", "kyphoplasty", "--completed-at", "2026-03-06T13:30",
    "--timezone", "America/New_York", "--blood-thinner", "Eliquis", "--consent",
)  # fmt: skip


def assert_one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "DETAIL" not in result.stderr
    assert "Failing row" not in result.stderr and "INSERT" not in result.stderr
    for word in PATIENT_DATA:
        assert word not in result.stderr, (word, result.stderr)
    return lines[0]


def test_enroll_refused_by_the_database_prints_one_line_without_patient_data(
    database_url: str, refusing: Refusing, tmp_path: Path
) -> None:
    refusing.refuse("patients", "{row}.last_name = 'Moreno'")
    result = run(database_url, tmp_path, *ENROLL)
    assert result.returncode == 1
    line = assert_one_clean_line(result)
    assert line.startswith("error: database refused a change: ")
    if refusing.postgres:
        assert "CheckViolation 23514" in line and "constraint test_refuse" in line
    assert "Ada" not in result.stdout and "5550143" not in result.stdout
    with refusing.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM patients")) == 0


def test_tick_refused_by_the_database_prints_one_line_without_patient_data(
    database_url: str, refusing: Refusing, tmp_path: Path
) -> None:
    enrolled = run(database_url, tmp_path, *ENROLL)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "5550143" not in enrolled.stdout and "+1******0143" in enrolled.stdout
    # The dispatcher writes the text's body and number on the row it sends: refuse that.
    refusing.refuse("messages", "{row}.body IS NOT NULL")
    result = run(database_url, tmp_path, "tick")
    assert result.returncode == 1
    line = assert_one_clean_line(result)
    assert line.startswith("error: database refused a change: ")
    assert "at followup/" in line  # where it happened, for whoever debugs it


def test_a_job_logs_a_database_refusal_in_one_line_without_patient_data(
    database_url: str, refusing: Refusing, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler's jobs log the same one line (jobs/scheduler.py's guard)."""
    from followup.models import Patient
    from jobs.scheduler import _guarded

    refusing.refuse("patients", "{row}.last_name = 'Moreno'")
    engine = make_engine(database_url)
    now = datetime(2026, 3, 6, tzinfo=UTC)

    def job(_runtime: object) -> None:
        with sa.orm.Session(engine) as session:
            session.add(
                Patient(
                    first_name="Ada", last_name="Moreno", phone="+12025550143",
                    timezone="America/New_York", language="en", created_at=now,
                )
            )  # fmt: skip
            session.commit()

    try:
        with caplog.at_level(logging.ERROR):
            _guarded("plan", job, runtime)
    finally:
        engine.dispose()
    records = [r for r in caplog.records if r.name == "jobs.scheduler"]
    assert len(records) == 1
    text = records[0].getMessage()
    assert "\n" not in text and "job plan failed" in text and "IntegrityError" in text
    for word in PATIENT_DATA:
        assert word not in text


def test_describe_failure_names_type_code_and_place_never_the_message() -> None:
    try:
        raise ValueError("Ada Moreno +12025550143")
    except ValueError as caught:
        exc = caught
    described = describe_failure(exc)
    assert "Ada" not in described and "0143" not in described
    assert described.startswith("builtins.ValueError at test_no_patient_data.py:")
    logger = logging.getLogger("test.logsafe")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        log_failure(logger, "thing %s failed", 7, exc=exc)
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == f"thing 7 failed ({described})"
