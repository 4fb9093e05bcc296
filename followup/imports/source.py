"""Reading an import file: size and row limits, encoding, which format it is.

A file is refused whole (FileRefused, one line naming the file and what is wrong) when it
cannot be read as a whole: too big, not UTF-8, a CSV header that does not match, a Bundle
that is not JSON. Otherwise each row (CSV) or Procedure (FHIR) becomes an ImportItem, and
a bad one is refused on its own in the report while the others import.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from followup.errors import FollowupError
from followup.patients.bulk import BulkRow

MAX_IMPORT_BYTES = 64 * 1024 * 1024  # all the files of one import together
MAX_IMPORT_ROWS = 100_000  # CSV rows, or FHIR Procedures, in one import
MAX_UPLOAD_BYTES = MAX_IMPORT_BYTES + 1024 * 1024  # a web request: the files and the form

CSV = "csv"
FHIR_BUNDLE = "fhir-bundle"
FHIR_NDJSON = "fhir-ndjson"

_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


class FileRefused(FollowupError):
    """The file cannot be imported at all; nothing of it was written."""


@dataclass(frozen=True)
class Upload:
    """One file's name (for the report) and bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ImportItem:
    """One row of the report: a CSV row or a FHIR Procedure, ready for `enroll_bulk`.

    `row` is None when the item was refused before it could be read as an enrollment
    (a row with the wrong number of cells, a resource the FHIR library refused); `errors`
    then says why, already in the file's own names. `field_names` gives, for each
    enrollment field, the name the file uses for it (a CSV column, a FHIR path).
    """

    ref: str
    patient: str
    row: BulkRow | None
    field_names: Mapping[str, str]
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedImport:
    format: str
    items: list[ImportItem]
    notes: list[str] = field(default_factory=list)  # e.g. resources of other types ignored


def _too_big(name: str, size: int) -> FileRefused:
    return FileRefused(
        f"{name}: is {size / 1_048_576:,.1f} MB; an import takes at most "
        f"{MAX_IMPORT_BYTES // 1_048_576} MB: split the file"
    )


def read_path(path: Path, *, already: int = 0) -> Upload:
    """Read a file from disk, refusing it by its size before reading it.

    `already` counts the bytes of the files read before it in the same import.
    """
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be read ({exc.strerror})") from exc
    if already + size > MAX_IMPORT_BYTES:
        raise _too_big(path.name, already + size)
    with open(path, "rb") as stream:
        return read_stream(path.name, stream, already=already)


def read_stream(
    name: str, stream: IO[bytes], *, declared_size: int | None = None, already: int = 0
) -> Upload:
    """Read an upload, refusing it by its declared size first and never reading more than
    the limit allows (plus one byte, to know it is over)."""
    if declared_size is not None and already + declared_size > MAX_IMPORT_BYTES:
        raise _too_big(name, already + declared_size)
    room = MAX_IMPORT_BYTES - already
    data = stream.read(room + 1)
    if len(data) > room:
        raise FileRefused(
            f"{name}: is larger than {MAX_IMPORT_BYTES // 1_048_576} MB (with the files "
            "before it); split the file"
        )
    return Upload(name=name, data=data)


def decode_utf8(upload: Upload) -> str:
    """The file's text: UTF-8, with or without a byte order mark (Excel's "CSV UTF-8").

    Anything else is refused with the first line that is not UTF-8: guessing another
    encoding would turn "Muñoz" into "MuÃ±oz" on a patient's record without a word.
    """
    data = upload.data
    for bom, encoding in _OTHER_BOMS.items():
        if data.startswith(bom) and not data.startswith(_UTF8_BOM):
            raise FileRefused(
                f"{upload.name}: is {encoding} text; save it as UTF-8 (in Excel: "
                "Save As, 'CSV UTF-8 (Comma delimited)')"
            )
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = exc.start - line_start + 1
        raise FileRefused(
            f"{upload.name}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02X} at "
            f"character {column}); save the file as UTF-8 (in Excel: Save As, "
            "'CSV UTF-8 (Comma delimited)'); nothing was imported"
        ) from exc


def detect_format(upload: Upload) -> str:
    """CSV, a FHIR Bundle (JSON) or FHIR NDJSON, by the file's name, else by its content."""
    suffix = Path(upload.name).suffix.lower()
    if suffix == ".csv":
        return CSV
    if suffix in (".ndjson", ".jsonl"):
        return FHIR_NDJSON
    if suffix == ".json":
        return FHIR_BUNDLE
    head = upload.data[:4096].removeprefix(_UTF8_BOM).lstrip()
    if not head.startswith(b"{"):
        return CSV
    first_line = head.split(b"\n", 1)[0].strip()
    # NDJSON: a whole resource on the first line, and more lines after it.
    if first_line.endswith(b"}") and b"\n" in head.strip():
        return FHIR_NDJSON
    return FHIR_BUNDLE


def patient_label(first: str, last: str, phone: str) -> str:
    """How the report names a patient: the name and the phone's last 4 digits only."""
    # A control character (a NUL PostgreSQL refuses to store) shows as U+FFFD: the row is
    # refused for it, and its report line must not stop the import.
    name = " ".join(printable(f"{first or ''} {last or ''}").split()) or "(no name)"
    digits = "".join(ch for ch in phone or "" if ch.isdigit())
    return f"{name} (phone ending {digits[-4:]})" if len(digits) >= 4 else name


def printable(text: str) -> str:
    """`text` with its control characters (but tab and newline) shown as U+FFFD."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) == "Cc" and ch not in "\t\n" else ch for ch in text
    )
