"""`followup import`, end to end: real subprocesses, files made here, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup.db import make_engine
from tests.imports.helpers import BAD, BOOKED, DONE, consent, csv_text, ndjson, patient, procedure
from tests.test_cli import Cli

NOW = "2026-03-06T20:00Z"  # Friday 15:00 in New York


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    folder = tmp_path / "work"
    folder.mkdir()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{folder / 'followup.db'}"
    runner = Cli(folder, database_url)
    runner.run("db", "upgrade")
    return runner


def patients_count(cli: Cli) -> int:
    engine = make_engine(cli.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM patients")).scalar_one())
    finally:
        engine.dispose()


def test_import_prints_a_report_line_per_row_writes_the_csv_report_and_a_rerun_adds_nothing(
    cli: Cli,
) -> None:
    (cli.folder / "patients.csv").write_text(csv_text(DONE, BOOKED, BAD), encoding="utf-8")

    first = cli.run("--now", NOW, "import", "patients.csv", "--report", "report.csv", check=False)

    assert first.returncode == 1, first.stderr  # a row was refused; the others imported
    assert "Importing" in first.stderr  # the progress bar
    lines = first.stdout.splitlines()
    assert lines[0].startswith("line 2")
    assert "Ada Moreno (phone ending 0143)" in lines[0] and "planned" in lines[0]
    assert "5 texts: no-driving Fri 2026-03-06 15:00 EST" in lines[0]
    assert lines[2].startswith("line 4") and "refused" in lines[2]
    assert "mobile_phone: is not a valid phone number for region US" in lines[2]
    assert (
        "3 rows: 2 planned, 0 already enrolled (nothing added), 1 refused (the other rows were imported)"
        in first.stdout
    )
    with open(cli.folder / "report.csv", encoding="utf-8", newline="") as report:
        rows = list(csv.DictReader(report))
    assert [(r["row"], r["outcome"], r["patient_id"]) for r in rows] == [
        ("line 2", "planned", "1"),
        ("line 3", "planned", "2"),
        ("line 4", "refused", ""),
    ]
    assert "soreness" in cli.run("schedule", "1").stdout

    second = cli.run("--now", NOW, "import", "patients.csv", check=False)

    assert second.returncode == 1
    assert "3 rows: 0 planned, 2 already enrolled (nothing added), 1 refused" in second.stdout
    assert patients_count(cli) == 2


def test_a_dry_run_checks_and_reports_but_writes_nothing(cli: Cli) -> None:
    (cli.folder / "patients.csv").write_text(csv_text(DONE, BOOKED), encoding="utf-8")

    result = cli.run("--now", NOW, "import", "patients.csv", "--dry-run")

    assert "Checking" in result.stderr
    assert result.stdout.count("  would be planned  ") == 2
    assert "dry run: nothing was written" in result.stdout
    assert patients_count(cli) == 0


def test_a_100_mb_file_is_refused_by_its_size_with_one_line(cli: Cli) -> None:
    with open(cli.folder / "big.csv", "wb") as out:
        out.truncate(100 * 1024 * 1024)  # sparse: nothing to read

    result = cli.run("import", "big.csv", check=False)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: big.csv: is 100.0 MB; an import takes at most 64 MB: split the file"
    )
    assert result.stdout == ""


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(cli: Cli) -> None:
    (cli.folder / "excel.csv").write_bytes(csv_text(DONE, BOOKED).encode("cp1252"))

    result = cli.run("import", "excel.csv", check=False)

    assert result.returncode == 2
    assert "error: excel.csv: line 3 is not UTF-8 (byte 0xF1 at character 8)" in result.stderr
    assert patients_count(cli) == 0


def test_a_missing_file_is_refused(cli: Cli) -> None:
    result = cli.run("import", "nowhere.csv", check=False)
    assert result.returncode == 2
    assert "error: nowhere.csv: cannot be read (No such file or directory)" in result.stderr


def test_fhir_bulk_export_files_import_together(cli: Cli) -> None:
    (cli.folder / "Patient.ndjson").write_text(
        ndjson(patient("p1"), patient("p2", phone="202-555-0122"))
    )
    (cli.folder / "Procedure.ndjson").write_text(
        ndjson(procedure("x1", "Patient/p1"), procedure("x2", "Patient/p2"))
    )
    (cli.folder / "Consent.ndjson").write_text(
        ndjson(consent("c1", "Patient/p1"), consent("c2", "Patient/p2"))
    )

    result = cli.run("--now", NOW, "import", "Patient.ndjson", "Procedure.ndjson", "Consent.ndjson")

    assert "Procedure.ndjson line 1 Procedure/x1 (Patient/p1)" in result.stdout
    assert "2 rows: 2 planned" in result.stdout
    assert patients_count(cli) == 2
