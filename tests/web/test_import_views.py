"""The Import page through Flask's test client: upload, progress, report, limits."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.clock import FakeClock
from followup.imports.csvformat import HEADER
from followup.imports.models import RUNNING, ImportRun
from followup.imports.views import THREADS
from followup.patients.models import Patient
from tests.imports.helpers import BAD, BOOKED, DONE, bundle, consent, csv_text, patient, procedure
from tests.imports.test_csv import HUNDRED_MB, CountingStream
from tests.web.conftest import ADMIN, NURSE, Browser, csrf_from


@pytest.fixture
def nurse(signed_in: Callable[[str], Browser]) -> Browser:
    return signed_in(NURSE)


def upload(browser: Browser, app: Flask, name: str, data: bytes, **extra: str) -> Any:
    """Post a file as the page's form does, then wait for the import thread to finish."""
    token = csrf_from(browser.get("/import"))
    response = browser.client.post(
        "/import",
        data={"csrf_token": token, "files": (io.BytesIO(data), name), **extra},
        content_type="multipart/form-data",
    )
    for thread in app.extensions.get(THREADS, []):
        thread.join(timeout=60)
    return response


def test_the_import_page_explains_the_csv_and_offers_the_template(nurse: Browser) -> None:
    page = nurse.get("/import").get_data(as_text=True)
    assert '<a href="/import">Import</a>' in page  # in the navigation
    assert "Download the CSV template" in page
    for name in HEADER:
        assert f"<code>{name}</code>" in page
    template = nurse.get("/import/template.csv")
    assert template.mimetype == "text/csv"
    assert "attachment" in template.headers["Content-Disposition"]
    assert template.get_data(as_text=True) == ",".join(HEADER) + "\r\n"


def test_a_nurse_imports_a_csv_and_reads_the_report_then_a_second_import_adds_nothing(
    nurse: Browser, app: Flask, session: so.Session
) -> None:
    data = csv_text(DONE, BOOKED, BAD).encode()

    response = upload(nurse, app, "patients.csv", data)

    assert response.status_code == 303
    run_url = response.headers["Location"]
    page = nurse.get(run_url)
    text = page.get_data(as_text=True)
    assert "Refresh" not in page.headers  # finished: no more reloading
    assert "Import finished" in text
    assert "The refused rows were not saved; every other row was imported." in text
    assert 'data-outcome="planned"' in text
    assert "Ada Moreno (phone ending 0143)" in text
    assert "kyphoplasty finished Fri 2026-03-06 13:30 EST; 5 texts: no-driving" in text
    assert "takes_blood_thinner: &#39;maybe&#39; is not yes or no" in text
    assert [p.last_name for p in session.scalars(sa.select(Patient).order_by(Patient.id))] == [
        "Moreno",
        "Muñoz",
    ]

    refused_only = nurse.get(run_url + "?outcome=refused").get_data(as_text=True)
    assert "Bea Lopez" in refused_only and "Ada Moreno" not in refused_only
    report = nurse.get(run_url + "/report.csv")
    lines = report.get_data(as_text=True).splitlines()
    assert lines[0] == "row,patient,outcome,patient_id,detail"
    assert lines[1].startswith("line 2,Ada Moreno (phone ending 0143),planned,1,")
    assert lines[3].startswith("line 4,Bea Lopez,refused,,")

    again = nurse.get(upload(nurse, app, "patients.csv", data).headers["Location"]).get_data(
        as_text=True
    )
    assert again.count('data-outcome="already enrolled"') == 2
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 2
    listing = nurse.get("/import").get_data(as_text=True)
    assert listing.count("patients.csv") == 2  # both in Recent imports


def test_a_dry_run_on_the_page_reports_and_saves_no_patient(
    nurse: Browser, app: Flask, session: so.Session
) -> None:
    response = upload(nurse, app, "patients.csv", csv_text(DONE).encode(), dry_run="y")

    text = nurse.get(response.headers["Location"]).get_data(as_text=True)
    assert "Dry run: nothing is saved." in text
    assert 'data-outcome="would be planned"' in text
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_a_fhir_bundle_imports_from_the_page(
    nurse: Browser, app: Flask, session: so.Session
) -> None:
    data = bundle(
        patient("p1"),
        procedure("x1", "Patient/p1"),
        consent("c1", "Patient/p1"),
        patient("p2", phone="202-555-0122"),
        procedure("x2", "Patient/p2"),
    ).encode()

    text = nurse.get(upload(nurse, app, "export.json", data).headers["Location"]).get_data(
        as_text=True
    )

    assert "entry 2 Procedure/x1 (Patient/p1)" in text
    assert "Consent: no active Consent for SMS names this patient" in text
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 1


def test_a_refused_file_is_shown_with_its_reason(
    nurse: Browser, app: Flask, session: so.Session
) -> None:
    header = [("mobile" if n == "mobile_phone" else n) for n in HEADER]
    response = upload(nurse, app, "patients.csv", csv_text(DONE, header=header).encode())

    text = nurse.get(response.headers["Location"]).get_data(as_text=True)
    assert (
        "The file was refused: patients.csv: header: unknown columns: mobile (did you mean mobile_phone?)"
        in text
    )
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0


def test_an_upload_without_a_file_is_refused_next_to_the_field(nurse: Browser) -> None:
    token = csrf_from(nurse.get("/import"))
    response = nurse.client.post(
        "/import", data={"csrf_token": token}, content_type="multipart/form-data"
    )
    assert response.status_code == 422
    assert (
        "File to import is required: choose a CSV, FHIR JSON or NDJSON file"
        in response.get_data(as_text=True)
    )


def test_an_upload_without_the_form_token_is_refused(nurse: Browser, session: so.Session) -> None:
    response = nurse.client.post(
        "/import",
        data={"files": (io.BytesIO(csv_text(DONE).encode()), "p.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert session.scalar(sa.select(sa.func.count()).select_from(ImportRun)) == 0


def test_a_100_mb_upload_is_refused_by_its_size_before_the_body_is_read(
    nurse: Browser, session: so.Session
) -> None:
    stream = CountingStream(HUNDRED_MB)

    response = nurse.client.post(
        "/import",
        input_stream=stream,
        content_length=HUNDRED_MB,
        content_type="multipart/form-data; boundary=xyz",
    )

    assert response.status_code == 413
    assert (
        "File to import is larger than 64 MB; split the file. Nothing was imported."
        in response.get_data(as_text=True)
    )
    assert stream.read_bytes == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(ImportRun)) == 0


def test_a_running_import_shows_its_progress_and_reloads_until_told_to_stop(
    nurse: Browser, session: so.Session, clock: FakeClock
) -> None:
    run = ImportRun(
        created_at=clock.now(),
        created_by=NURSE,
        filename="big.csv",
        dry_run=False,
        status=RUNNING,
        total=50_000,
        processed=12_000,
        planned=11_990,
        already=0,
        refused=10,
        heartbeat_at=clock.now(),
    )
    session.add(run)
    session.commit()

    page = nurse.get(f"/import/{run.id}")
    text = page.get_data(as_text=True)
    assert page.headers["Refresh"] == "2"
    assert '<label for="progress">Checked 12,000 of 50,000 rows</label>' in text
    assert '<progress id="progress" max="50000" value="12000">24%</progress>' in text
    assert f'href="/import/{run.id}?updates=off">Stop updating</a>' in text

    quiet = nurse.get(f"/import/{run.id}?updates=off")
    assert "Refresh" not in quiet.headers
    assert "Check again" in quiet.get_data(as_text=True)

    clock.advance(timedelta(minutes=6))  # the process that ran it is gone
    stalled = nurse.get(f"/import/{run.id}")
    assert "Refresh" not in stalled.headers
    assert "This import stopped before it finished" in stalled.get_data(as_text=True)


def test_admins_import_too_and_anonymous_users_are_sent_to_sign_in(
    signed_in: Callable[[str], Browser], browser: Browser
) -> None:
    assert signed_in(ADMIN).get("/import").status_code == 200
    response = browser.get("/import")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_bulk_export_of_several_ndjson_files_is_uploaded_at_once(
    nurse: Browser, app: Flask, session: so.Session
) -> None:
    from tests.imports.helpers import ndjson

    files = [
        (io.BytesIO(ndjson(patient("p1")).encode()), "Patient.ndjson"),
        (io.BytesIO(ndjson(procedure("x1", "Patient/p1")).encode()), "Procedure.ndjson"),
        (io.BytesIO(ndjson(consent("c1", "Patient/p1")).encode()), "Consent.ndjson"),
    ]
    token = csrf_from(nurse.get("/import"))
    response = nurse.client.post(
        "/import", data={"csrf_token": token, "files": files}, content_type="multipart/form-data"
    )
    for thread in app.extensions.get(THREADS, []):
        thread.join(timeout=60)

    text = nurse.get(response.headers["Location"]).get_data(as_text=True)
    assert "Import of Patient.ndjson, Procedure.ndjson, Consent.ndjson" in text
    assert "Procedure.ndjson line 1 Procedure/x1 (Patient/p1)" in text
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 1


def multipart(fields: dict[str, str], name: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body built in memory (the test client would spool it to disk)."""
    boundary = "followup-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_only_a_signed_in_import_may_exceed_the_one_megabyte_request_limit(
    nurse: Browser, app: Flask
) -> None:
    two_mb = b"x" * (2 * 1024 * 1024)
    # A signed-in nurse's file of 2 MB is read (and refused for its content, not its size).
    token = csrf_from(nurse.get("/import"))
    body, content_type = multipart({"csrf_token": token}, "big.csv", two_mb)
    big = nurse.client.post("/import", data=body, content_type=content_type)
    assert big.status_code != 413
    assert "larger than" not in big.get_data(as_text=True)
    # The same body anywhere else is refused unread (413), and from someone not signed in
    # before anything is read (401: the sign-in gate comes first).
    elsewhere = nurse.client.post("/patients/new", data=body, content_type=content_type)
    assert elsewhere.status_code == 413
    body, content_type = multipart({}, "big.csv", two_mb)
    stranger = app.test_client().post("/import", data=body, content_type=content_type)
    assert stranger.status_code == 401
