"""The CSV import format: one enrollment a row, under a documented header."""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass

from followup.imports.source import (
    CSV,
    MAX_IMPORT_ROWS,
    FileRefused,
    ImportItem,
    ParsedImport,
    Upload,
    decode_utf8,
    patient_label,
)
from followup.patients.bulk import BulkRow
from followup.patients.validation import EnrollmentForm


@dataclass(frozen=True)
class Column:
    name: str  # as written in the header
    field: str  # the EnrollmentForm field it fills
    required: bool  # the column must be in the header (its cells may still be empty)
    meaning: str
    example: str


COLUMNS = (
    Column("first_name", "first_name", True, "First name", "Ada"),
    Column("last_name", "last_name", True, "Last name", "Moreno"),
    Column(
        "mobile_phone",
        "phone",
        True,
        "Mobile number: national (202-555-0143, DEFAULT_REGION applies) or E.164 (+12025550143)",
        "202-555-0143",
    ),
    Column("language", "language", False, "Language of the texts: en or es (empty: en)", "en"),
    Column(
        "timezone",
        "timezone",
        False,
        "The patient's IANA time zone, e.g. America/Chicago (empty: DEFAULT_TIMEZONE)",
        "America/New_York",
    ),
    Column("procedure", "procedure", True, "kyphoplasty or vertebroplasty", "kyphoplasty"),
    Column(
        "completed_at",
        "completed_at",
        False,
        "When it finished, local time in the patient's zone: 2026-03-06T13:30 (or with "
        "its offset, 2026-03-06T13:30-05:00); empty for a booked procedure",
        "2026-03-06T13:30",
    ),
    Column(
        "scheduled_at",
        "scheduled_at",
        False,
        "When it is booked, the same way; empty for a procedure already done",
        "",
    ),
    Column(
        "takes_blood_thinner",
        "takes_blood_thinner",
        True,
        "Does the patient take a blood thinner? yes or no (required)",
        "yes",
    ),
    Column(
        "blood_thinner",
        "blood_thinner",
        True,
        "Its name when yes (at most 30 characters); empty when no",
        "Eliquis",
    ),
    Column(
        "stop_blood_thinner_on",
        "stop_blood_thinner_on",
        False,
        "Booked procedure with a blood thinner: the date the doctor gave to stop it, "
        "2026-03-07; empty otherwise",
        "",
    ),
    Column(
        "sms_consent",
        "consent",
        True,
        "yes: the patient agreed to receive texts (a row without yes is refused)",
        "yes",
    ),
    Column(
        "external_id",
        "external_id",
        False,
        "Your id for the procedure (at most 64 characters); a row whose id was imported "
        "before is skipped",
        "CASE-2026-0142",
    ),
)
HEADER = [column.name for column in COLUMNS]
FIELD_NAMES = {column.field: column.name for column in COLUMNS} | {"row": "row"}
_BY_NAME = {column.name: column for column in COLUMNS}
_TIMES = ("completed_at", "scheduled_at")
YES = frozenset({"yes", "y", "true", "1", "si", "sí"})
NO = frozenset({"no", "n", "false", "0"})


def template_csv() -> str:
    """The header row a clinic fills in (no example rows: they could be imported)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(HEADER)
    return out.getvalue()


def _normalize(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _check_header(cells: list[str], file_name: str) -> list[str]:
    """The header's column names, normalized; refuse a header that does not match."""
    names = [_normalize(cell) for cell in cells]
    if len(names) == 1 and (";" in cells[0] or "\t" in cells[0]):
        separator = "semicolons" if ";" in cells[0] else "tabs"
        raise FileRefused(
            f"{file_name}: header: the columns are separated by {separator}; save the file "
            "as comma-separated CSV"
        )
    problems = []
    duplicates = sorted({name for name in names if names.count(name) > 1 and name})
    if duplicates:
        problems.append("columns given twice: " + ", ".join(duplicates))
    unknown = [name or "(empty)" for name in names if name not in _BY_NAME]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, HEADER, n=1, cutoff=0.6)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        problems.append("unknown columns: " + ", ".join(hints))
    missing = [c.name for c in COLUMNS if c.required and c.name not in names]
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    if not any(name in names for name in _TIMES):
        problems.append("missing columns: completed_at or scheduled_at (one of them, or both)")
    if problems:
        raise FileRefused(
            f"{file_name}: header: " + "; ".join(problems) + ". The header is: " + ",".join(HEADER)
        )
    return names


def _yes_no(value: str, errors: dict[str, str], field: str) -> bool | None:
    text = value.strip().lower()
    if not text:
        return None
    if text in YES:
        return True
    if text in NO:
        return False
    errors[field] = f"{value.strip()!r} is not yes or no"
    return None


def parse_csv(upload: Upload, *, default_timezone: str) -> ParsedImport:
    """Read a CSV import: one ImportItem a non-empty row; refuse a file it cannot read.

    An empty `timezone` cell (or no such column) means `default_timezone`.
    """
    text = decode_utf8(upload)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileRefused(f"{upload.name}: line 1: {exc}") from exc
    if header is None or not any(cell.strip() for cell in header):
        raise FileRefused(f"{upload.name}: is empty; the first line must be the header")
    names = _check_header(header, upload.name)
    items: list[ImportItem] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise FileRefused(
                f"{upload.name}: the row from line {start}: {exc} (a quote left open?); "
                "nothing was imported"
            ) from exc
        if cells is None:
            break
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(items) >= MAX_IMPORT_ROWS:
            raise FileRefused(
                f"{upload.name}: has more than {MAX_IMPORT_ROWS:,} rows; split the file"
            )
        items.append(_item(f"line {start}", names, cells, default_timezone))
    if not items:
        raise FileRefused(f"{upload.name}: has a header but no rows")
    return ParsedImport(format=CSV, items=items)


def _item(ref: str, names: list[str], cells: list[str], default_timezone: str) -> ImportItem:
    values = dict(zip(names, cells, strict=False))
    label = patient_label(
        values.get("first_name", ""), values.get("last_name", ""), values.get("mobile_phone", "")
    )
    if len(cells) != len(names):
        return ImportItem(
            ref=ref,
            patient=label,
            row=None,
            field_names=FIELD_NAMES,
            errors={"row": f"has {len(cells)} cells; the header has {len(names)} columns"},
        )
    errors: dict[str, str] = {}
    takes = _yes_no(values.get("takes_blood_thinner", ""), errors, "takes_blood_thinner")
    consent = _yes_no(values.get("sms_consent", ""), errors, "consent")
    form = EnrollmentForm(
        first_name=values.get("first_name", ""),
        last_name=values.get("last_name", ""),
        phone=values.get("mobile_phone", ""),
        procedure=values.get("procedure", ""),
        timezone=values.get("timezone", "").strip() or default_timezone,
        completed_at=values.get("completed_at", ""),
        scheduled_at=values.get("scheduled_at", ""),
        language=values.get("language", "") or "en",
        takes_blood_thinner=takes,
        blood_thinner=values.get("blood_thinner") or None,
        stop_blood_thinner_on=values.get("stop_blood_thinner_on") or None,
        consent=bool(consent),
        external_id=values.get("external_id") or None,
    )
    return ImportItem(
        ref=ref,
        patient=label,
        row=BulkRow(ref=ref, form=form, format_errors=errors),
        field_names=FIELD_NAMES,
    )
