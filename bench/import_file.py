"""Import a 50,000-row CSV (and optionally a FHIR NDJSON export of as many patients) into
a fresh database, the way `followup import` does; print rows per second, median of runs.

Each run reads the file from disk (size check, UTF-8, header), validates every row with the
enrollment's rules, inserts the patients and procedures, plans their texts and writes the
per-row report (as --report would). The rows are a realistic mix: 70% done today with or
without a blood thinner, 29% booked in the next weeks (some with a stop date), 1% refused.

    python bench/import_file.py                        # SQLite in a temporary folder, 3 runs
    python bench/import_file.py --format fhir          # FHIR NDJSON instead (or both)
    python bench/import_file.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database  # noqa: E402
from followup.db import make_engine, make_session_factory  # noqa: E402
from followup.imports.csvformat import HEADER  # noqa: E402
from followup.imports.fhirformat import BLOOD_THINNER_URL, CPT_SYSTEM  # noqa: E402
from followup.imports.fhirpatient import SMS_CONSENT_SYSTEM  # noqa: E402
from followup.imports.service import import_items, parse_uploads, write_report_csv  # noqa: E402
from followup.imports.source import read_path  # noqa: E402
from followup.runtime import build_care  # noqa: E402
from followup.settings import Settings  # noqa: E402

# A Tuesday at 15:00 in New York.
NOW = datetime(2026, 6, 2, 19, 0, tzinfo=UTC)
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
AREAS = ("202", "212", "303", "312", "415", "512", "617", "713")
THINNERS = ("Eliquis", "Xarelto", "warfarin", "Plavix")


def phone(i: int) -> str:
    return f"{AREAS[i % len(AREAS)]}-{201 + i // 10000:03d}-{i % 10000:04d}"


def csv_rows(count: int) -> list[dict[str, str]]:
    rows = []
    for i in range(count):
        tz = ZONES[i % len(ZONES)]
        booked = i % 100 >= 70
        thinner = THINNERS[i % len(THINNERS)] if i % 3 == 0 else ""
        day = 3 + i % 20
        row = {
            "first_name": "Bench",
            "last_name": f"Patient{i}",
            "mobile_phone": phone(i),
            "language": "es" if i % 5 == 0 else "en",
            "timezone": tz,
            "procedure": "kyphoplasty" if i % 2 else "vertebroplasty",
            "completed_at": "" if booked else f"2026-06-02T{6 + i % 6:02d}:{i % 60:02d}",
            "scheduled_at": f"2026-06-{day:02d}T09:30" if booked else "",
            "takes_blood_thinner": "yes" if thinner else "no",
            "blood_thinner": thinner,
            "stop_blood_thinner_on": f"2026-06-{day - 2:02d}" if booked and thinner else "",
            "sms_consent": "yes",
            "external_id": f"BENCH-{i}",
        }
        if i % 100 == 99:
            row["mobile_phone"] = "12"  # refused
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, HEADER, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def write_ndjson(folder: Path, rows: list[dict[str, str]]) -> list[Path]:
    """The same patients as a FHIR bulk export: Patient, Procedure and Consent files."""
    offsets = {"America/New_York": "-04:00", "America/Chicago": "-05:00",
               "America/Denver": "-06:00", "America/Los_Angeles": "-07:00"}  # fmt: skip
    files = {kind: io.StringIO() for kind in ("Patient", "Procedure", "Consent")}
    for i, row in enumerate(rows):
        pid = f"p{i}"
        files["Patient"].write(json.dumps({
            "resourceType": "Patient", "id": pid,
            "name": [{"use": "official", "family": row["last_name"], "given": [row["first_name"]]}],
            "telecom": [{"system": "phone", "value": row["mobile_phone"], "use": "mobile"}],
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": row["language"]}]}}],
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": row["timezone"]}],
        }) + "\n")  # fmt: skip
        booked = bool(row["scheduled_at"])
        moment = (row["scheduled_at"] or row["completed_at"]) + ":00" + offsets[row["timezone"]]
        thinner = [{"url": "takes", "valueBoolean": bool(row["blood_thinner"])}]
        if row["blood_thinner"]:
            thinner.append({"url": "name", "valueString": row["blood_thinner"]})
        if row["stop_blood_thinner_on"]:
            thinner.append({"url": "stopOn", "valueDate": row["stop_blood_thinner_on"]})
        procedure: dict[str, Any] = {
            "resourceType": "Procedure", "id": f"x{i}",
            "status": "preparation" if booked else "completed",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": CPT_SYSTEM, "code": "22513" if row["procedure"] == "kyphoplasty" else "22510"}]},
            "extension": [{"url": BLOOD_THINNER_URL, "extension": thinner}],
        }  # fmt: skip
        if booked:
            procedure["performedPeriod"] = {"start": moment}
        else:
            procedure["performedDateTime"] = moment
        files["Procedure"].write(json.dumps(procedure) + "\n")
        files["Consent"].write(json.dumps({
            "resourceType": "Consent", "id": f"c{i}", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": SMS_CONSENT_SYSTEM, "code": "sms"}]}],
            "patient": {"reference": f"Patient/{pid}"},
        }) + "\n")  # fmt: skip
    paths = []
    for kind, text in files.items():
        path = folder / f"{kind}.ndjson"
        path.write_text(text.getvalue(), encoding="utf-8")
        paths.append(path)
    return paths


def run_once(url: str, paths: list[Path], settings: Settings, report: Path) -> tuple[float, Any]:
    care = build_care(settings)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    uploads = []
    for path in paths:
        uploads.append(read_path(path, already=sum(len(u.data) for u in uploads)))
    parsed = parse_uploads(uploads, default_timezone="America/New_York", now=NOW)
    rows: list[Any] = []
    summary = import_items(
        session_factory=factory,
        parsed=parsed,
        care=care,
        region="US",
        now=NOW,
        actor="bench",
        source="bench",
        dry_run=False,
        on_chunk=lambda _s, chunk: rows.extend(chunk),
    )
    with open(report, "w", encoding="utf-8", newline="") as out:
        write_report_csv(rows, out)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, summary


def measure(
    label: str, paths: list[Path], args: argparse.Namespace, folder: Path, count: int
) -> None:
    settings = Settings(
        database_url="sqlite://",
        clinic_name="Riverside Spine Center",
        clinic_phone="(202) 555-0100",
    )
    size = sum(path.stat().st_size for path in paths)
    times = []
    for run in range(args.runs):
        url = fresh_database(args.database_url, args.reset, folder, f"{label}-{run}")
        elapsed, summary = run_once(url, paths, settings, folder / f"{label}-report.csv")
        times.append(elapsed)
        print(
            f"  {label} run {run + 1}: {elapsed:.1f} s, {count / elapsed:,.0f} rows/s ({summary.describe()})"
        )
    median = statistics.median(times)
    print(
        f"{label}: {count:,} rows, {size / 1_048_576:.1f} MB: median {median:.1f} s, {count / median:,.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--format",
        choices=("csv", "fhir", "both"),
        default="csv",
        help="CSV, the same patients as FHIR NDJSON (Patient, Procedure, Consent), or both",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reset", action="store_true", help="drop and re-create the schema first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = csv_rows(args.rows)
        if args.format in ("csv", "both"):
            csv_path = folder / "patients.csv"
            write_csv(csv_path, rows)
            measure("csv", [csv_path], args, folder, args.rows)
        if args.format in ("fhir", "both"):
            measure("fhir-ndjson", write_ndjson(folder, rows), args, folder, args.rows)


if __name__ == "__main__":
    main()
