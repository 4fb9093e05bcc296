"""CSV imports through the real services, on SQLite and PostgreSQL: every row checked as
enrollment checks it, a report line per row, nothing added by a second import."""

from __future__ import annotations

import io
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.imports import csvformat, source
from followup.imports.csvformat import HEADER, template_csv
from followup.imports.source import FileRefused, Upload, read_path, read_stream
from followup.messaging.models import Message
from followup.patients.models import Patient, Procedure
from tests.imports.conftest import Importer, counts
from tests.imports.helpers import BAD, BOOKED, DONE, csv_text, row


def test_csv_plans_good_rows_and_refuses_a_bad_one_naming_each_column(
    run_import: Importer, session: so.Session
) -> None:
    result = run_import({"patients.csv": csv_text(DONE, BOOKED, BAD)})

    assert (result.summary.planned, result.summary.already, result.summary.refused) == (2, 0, 1)
    assert "(the other rows were imported)" in result.summary.describe()
    done, booked, bad = result.rows
    assert (done.ref, done.outcome) == ("line 2", "planned")
    assert done.patient == "Ada Moreno (phone ending 0143)"
    assert done.detail.startswith(
        f"patient {done.patient_id}: kyphoplasty finished Fri 2026-03-06 13:30 EST; 5 texts: "
    )
    assert "blood-thinner-restart Sun 2026-03-08 14:30 EDT" in done.detail
    assert "blood thinner Eliquis" in done.detail
    assert booked.outcome == "planned"
    assert "vertebroplasty booked Thu 2026-03-12 09:00 CDT" in booked.detail
    assert "day-before Wed 2026-03-11 16:00 CDT" in booked.detail
    assert (bad.ref, bad.outcome) == ("line 4", "refused")
    for expected in (
        "mobile_phone: is not a valid phone number",
        "language: must be one of: en, es",
        "timezone: 'Mars/Olympus' is not an IANA time zone",
        "procedure: must be one of: kyphoplasty, vertebroplasty",
        "takes_blood_thinner: 'maybe' is not yes or no",
        "sms_consent: the patient must agree to receive texts",
    ):
        assert expected in bad.detail

    patients = session.scalars(sa.select(Patient).order_by(Patient.id)).all()
    assert [(p.first_name, p.last_name, p.phone, p.language, p.timezone) for p in patients] == [
        ("Ada", "Moreno", "+12025550143", "en", "America/New_York"),
        ("Luis", "Muñoz", "+13125550177", "es", "America/Chicago"),
    ]
    assert all(
        p.sms_consent_at is not None and p.consent_recorded_by == "nurse@example.org"
        for p in patients
    )
    procedures = session.scalars(sa.select(Procedure).order_by(Procedure.id)).all()
    assert [(p.external_id, p.status, p.blood_thinner) for p in procedures] == [
        ("CASE-1", "completed", "Eliquis"),
        ("CASE-2", "scheduled", "warfarin"),
    ]
    assert procedures[1].stop_blood_thinner_on.isoformat() == "2026-03-07"
    steps = session.scalars(
        sa.select(Message.step)
        .where(Message.procedure_id == procedures[0].id)
        .order_by(Message.due_at)
    ).all()
    assert steps == [
        "no-driving",
        "soreness",
        "blood-thinner-restart",
        "warning-signs",
        "pain-check",
    ]
    audit = session.execute(
        sa.select(AuditEvent.action, AuditEvent.record_id, AuditEvent.detail)
    ).all()
    assert (
        "patient.imported",
        patients[0].id,
        f"procedure {procedures[0].id} (kyphoplasty, completed) from patients.csv, line 2",
    ) in audit
    assert any(a == "patients.imported" and "3 rows: 2 planned" in (d or "") for a, _, d in audit)


def test_a_second_import_of_the_same_file_adds_nothing(
    run_import: Importer, session: so.Session
) -> None:
    text = csv_text(DONE, BOOKED, BAD)
    run_import({"patients.csv": text})
    before = counts(session)

    again = run_import({"patients.csv": text})

    assert [r.outcome for r in again.rows] == ["already enrolled", "already enrolled", "refused"]
    assert again.rows[0].detail.startswith("external_id: already used by procedure ")
    after = counts(session)
    assert after["patients"] == before["patients"] == 2
    assert after["messages"] == before["messages"]
    assert after["audit_events"] == before["audit_events"] + 1  # only the run's own line


def test_rows_without_an_external_id_are_idempotent_by_phone_and_time(
    run_import: Importer, session: so.Session
) -> None:
    text = csv_text(row(DONE, external_id=""), row(BOOKED, external_id=""))
    assert run_import({"p.csv": text}).summary.planned == 2

    again = run_import({"p.csv": text})

    assert [r.outcome for r in again.rows] == ["already enrolled"] * 2
    assert again.rows[0].detail.startswith(
        "mobile_phone: already enrolled with the same completion time (patient "
    )
    assert again.rows[1].detail.startswith(
        "mobile_phone: already enrolled with the same booked time (patient "
    )
    assert counts(session)["patients"] == 2


def test_a_row_repeated_in_the_file_is_enrolled_once(
    run_import: Importer, session: so.Session
) -> None:
    result = run_import(
        {"p.csv": csv_text(DONE, row(DONE, first_name="Adah"), row(DONE, external_id="CASE-9"))}
    )

    assert [r.outcome for r in result.rows] == ["planned", "already enrolled", "already enrolled"]
    assert result.rows[1].detail == "external_id: the same as line 2 of this file"
    assert result.rows[2].detail == "mobile_phone: the same phone and time as line 2 of this file"
    assert counts(session)["patients"] == 1


def test_dry_run_reports_every_plan_and_writes_nothing(
    run_import: Importer, session: so.Session
) -> None:
    result = run_import({"patients.csv": csv_text(DONE, BOOKED, BAD)}, dry_run=True)

    assert [r.outcome for r in result.rows] == ["would be planned", "would be planned", "refused"]
    assert "5 texts: no-driving Fri 2026-03-06 15:00 EST" in result.rows[0].detail
    assert "nothing was written" in result.summary.describe()
    assert counts(session) == {"patients": 0, "procedures": 0, "messages": 0, "audit_events": 0}


def test_a_number_that_replied_stop_is_refused_and_a_late_row_expires_what_passed(
    run_import: Importer, session: so.Session, enroll: Any
) -> None:
    enrolled = enroll(phone="(202) 555-0111", completed_at="2026-03-05T10:00")
    enrolled.patient.opted_out_at = enrolled.patient.created_at
    session.commit()
    late = row(
        DONE, completed_at="2026-03-02T09:00", external_id="CASE-7", mobile_phone="202-555-0122"
    )

    result = run_import({"p.csv": csv_text(row(DONE, mobile_phone="202-555-0111"), late)})

    assert result.rows[0].outcome == "refused"
    assert (
        result.rows[0].detail
        == "mobile_phone: this number replied STOP; the patient must text START before enrolling"
    )
    assert result.rows[1].outcome == "planned"
    assert (
        "expired (their window had passed): no-driving, soreness, blood-thinner-restart"
        in result.rows[1].detail
    )


def test_a_time_that_happens_twice_is_refused_with_both_offsets(run_import: Importer) -> None:
    # 2026-11-01 01:30 happens twice in New York; booked, so it is in the future.
    ambiguous = row(
        BOOKED,
        timezone="America/New_York",
        scheduled_at="2026-11-01T01:30",
        stop_blood_thinner_on="2026-10-30",
    )

    result = run_import(
        {
            "p.csv": csv_text(
                ambiguous, row(ambiguous, external_id="X", scheduled_at="2026-11-01T01:30-05:00")
            )
        }
    )

    assert result.rows[0].outcome == "refused"
    assert (
        "scheduled_at: 2026-11-01 01:30 happens twice in America/New_York" in result.rows[0].detail
    )
    assert "-04:00 (EDT, the first) or -05:00 (EST, the second)" in result.rows[0].detail
    assert result.rows[1].outcome == "planned"


def test_a_row_with_the_wrong_number_of_cells_is_refused_alone(
    run_import: Importer, session: so.Session
) -> None:
    text = csv_text(DONE) + "Bea,Lopez,202-555-0199\r\n" + csv_text(BOOKED).split("\r\n", 1)[1]

    result = run_import({"p.csv": text})

    assert [r.outcome for r in result.rows] == ["planned", "refused", "planned"]
    assert result.rows[1].detail == "row: has 3 cells; the header has 13 columns"
    assert result.rows[1].patient == "Bea Lopez (phone ending 0199)"
    assert counts(session)["patients"] == 2


def test_header_names_are_forgiving_about_case_spaces_and_order_and_optional_columns_may_go(
    run_import: Importer, session: so.Session
) -> None:
    header = [
        "Last Name",
        "First name",
        "Mobile-Phone",
        "procedure",
        "completed_at",
        "takes_blood_thinner",
        "blood_thinner",
        "SMS consent",
    ]
    values = {
        "Last Name": "Moreno",
        "First name": "Ada",
        "Mobile-Phone": "202-555-0143",
        "procedure": "kyphoplasty",
        "completed_at": "2026-03-06T13:30",
        "takes_blood_thinner": "No",
        "blood_thinner": "",
        "SMS consent": "Y",
    }

    result = run_import({"p.csv": csv_text(values, header=header)})

    assert result.rows[0].outcome == "planned"
    patient = session.scalars(sa.select(Patient)).one()
    assert (patient.language, patient.timezone) == ("en", "America/New_York")  # the defaults


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            [n for n in HEADER if n not in ("mobile_phone", "sms_consent")],
            "header: missing columns: mobile_phone, sms_consent.",
        ),
        (
            [("mobile" if n == "mobile_phone" else n) for n in HEADER],
            "header: unknown columns: mobile (did you mean mobile_phone?); missing columns: mobile_phone.",
        ),
        (
            [n for n in HEADER if n not in ("completed_at", "scheduled_at")],
            "missing columns: completed_at or scheduled_at (one of them, or both)",
        ),
        (HEADER + ["first_name"], "header: columns given twice: first_name"),
    ],
)
def test_a_wrong_header_refuses_the_file_naming_the_columns(
    run_import: Importer, session: so.Session, header: list[str], message: str
) -> None:
    with pytest.raises(FileRefused) as refused:
        run_import({"patients.csv": csv_text(DONE, header=header)})
    assert str(refused.value).startswith("patients.csv: header: ")
    assert message in str(refused.value)
    assert "The header is: first_name,last_name,mobile_phone," in str(refused.value)
    assert counts(session)["patients"] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "first_name;last_name;mobile_phone\r\nAda;Moreno;1\r\n",
            "header: the columns are separated by semicolons",
        ),
        ("", "is empty; the first line must be the header"),
        (",".join(HEADER) + "\r\n", "has a header but no rows"),
        (",".join(HEADER) + '\r\n"Ada,Moreno\r\n', "the row from line 2: unexpected end of data"),
    ],
)
def test_a_file_that_is_not_a_usable_csv_is_refused(
    run_import: Importer, text: str, message: str
) -> None:
    with pytest.raises(FileRefused, match=message):
        run_import({"patients.csv": text})


def test_utf8_with_a_byte_order_mark_is_read(run_import: Importer, session: so.Session) -> None:
    data = b"\xef\xbb\xbf" + csv_text(BOOKED).encode("utf-8")  # Excel's "CSV UTF-8"

    assert run_import({"p.csv": data}).rows[0].outcome == "planned"
    assert session.scalars(sa.select(Patient.last_name)).one() == "Muñoz"


def test_a_file_that_is_not_utf8_is_refused_naming_its_line(
    run_import: Importer, session: so.Session
) -> None:
    data = csv_text(DONE, BOOKED).encode("cp1252")  # "Muñoz" on line 3, Excel's plain "CSV"

    with pytest.raises(FileRefused) as refused:
        run_import({"patients.csv": data})

    assert str(refused.value) == (
        "patients.csv: line 3 is not UTF-8 (byte 0xF1 at character 8); save the file as UTF-8 "
        "(in Excel: Save As, 'CSV UTF-8 (Comma delimited)'); nothing was imported"
    )
    assert counts(session)["patients"] == 0


def test_utf16_is_refused_by_its_byte_order_mark(run_import: Importer) -> None:
    with pytest.raises(FileRefused, match="is UTF-16 text; save it as UTF-8"):
        run_import({"patients.csv": csv_text(DONE).encode("utf-16")})


def test_more_rows_than_the_limit_refuse_the_file(
    run_import: Importer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvformat, "MAX_IMPORT_ROWS", 2)
    rows = [row(DONE, external_id=f"C{i}", mobile_phone=f"202-555-01{i:02d}") for i in range(3)]
    with pytest.raises(FileRefused, match="has more than 2 rows; split the file"):
        run_import({"patients.csv": csv_text(*rows)})


class CountingStream(io.RawIOBase):
    """A 100 MB upload that counts what is read of it (and makes up the bytes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.size - self.position))
        buffer[:n] = b"a" * n
        self.position += n
        self.read_bytes += n
        return n


HUNDRED_MB = 100 * 1024 * 1024


def test_a_100_mb_upload_is_refused_by_its_declared_size_before_any_byte_is_read() -> None:
    stream = CountingStream(HUNDRED_MB)
    with pytest.raises(
        FileRefused, match=r"big.csv: is 100.0 MB; an import takes at most 64 MB: split the file"
    ):
        read_stream("big.csv", stream, declared_size=HUNDRED_MB)
    assert stream.read_bytes == 0


def test_an_upload_of_unknown_size_is_read_no_further_than_the_limit() -> None:
    stream = CountingStream(HUNDRED_MB)
    with pytest.raises(FileRefused, match="is larger than 64 MB"):
        read_stream("big.csv", stream)
    assert stream.read_bytes == source.MAX_IMPORT_BYTES + 1


def test_a_100_mb_file_on_disk_is_refused_by_its_size_without_reading_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.csv"
    with open(path, "wb") as out:
        out.truncate(HUNDRED_MB)  # sparse: 100 MB long, nothing written
    opened: list[str] = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(str(a[0])))
    with pytest.raises(FileRefused, match=r"big.csv: is 100.0 MB; an import takes at most 64 MB"):
        read_path(path)
    assert opened == []


def test_the_template_is_the_documented_header_and_imports_as_no_rows() -> None:
    text = template_csv()
    assert text == ",".join(HEADER) + "\r\n"
    with pytest.raises(FileRefused, match="has a header but no rows"):
        csvformat.parse_csv(Upload("template.csv", text.encode()), default_timezone="UTC")


def test_a_chunk_that_collides_with_a_concurrent_enrollment_is_checked_again(
    run_import: Importer, session: so.Session, enroll: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the duplicate check and the insert, another nurse enrolled CASE-1: the
    chunk's insert fails on the unique external id, nothing of it stays, and the second
    check reports the row as already enrolled and imports the other."""
    from followup.patients import bulk

    enroll(phone="(202) 555-0188", external_id="CASE-1")
    real = bulk.stored_for
    calls = []

    def blind_once(s: so.Session, enrollments: Any) -> Any:
        calls.append(len(enrollments))
        stored = real(s, enrollments)
        if len(calls) == 1:
            stored.external_ids.clear()  # the concurrent enrollment is not seen yet
        return stored

    monkeypatch.setattr(bulk, "stored_for", blind_once)

    result = run_import({"p.csv": csv_text(DONE, BOOKED)})

    assert len(calls) == 2
    assert [r.outcome for r in result.rows] == ["already enrolled", "planned"]
    assert counts(session)["patients"] == 2  # the nurse's and Luis
    assert (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Procedure)
            .where(Procedure.external_id == "CASE-1")
        )
        == 1
    )
