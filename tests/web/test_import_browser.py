"""The Import page in a real headless Chromium: choose a file, follow the progress page
until the import finishes, read the report, import it again. Checked like every page:
375 px wide, every input labelled, no serious or critical axe-core violation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.imports.models import RUNNING, ImportRun
from followup.patients.models import Patient
from tests.imports.helpers import BAD, BOOKED, DONE, csv_text
from tests.web import test_browser
from tests.web.conftest import NURSE
from tests.web.test_browser import sign_in

check_page = test_browser.check_page  # the same fixture: 375 px wide, labels, axe-core


def choose_and_import(page: Any, data: bytes) -> None:
    page.goto("/import")
    page.get_by_label("File to import").set_input_files(
        files=[{"name": "patients.csv", "mimeType": "text/csv", "buffer": data}]
    )
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_url("**/import/*")
    # The page reloads itself (Refresh header) until the background import is done.
    page.get_by_text("Import finished").wait_for(timeout=30_000)


def test_a_nurse_imports_a_spreadsheet_and_reads_the_report(
    page: Any, staff: dict[str, int], session: so.Session, check_page: Callable[..., None]
) -> None:
    sign_in(page, NURSE)
    page.get_by_role("link", name="Import", exact=True).click()
    page.wait_for_url("**/import")
    check_page(page, "import-form")
    template = page.get_by_role("link", name="Download the CSV template")
    assert template.get_attribute("href") == "/import/template.csv"

    choose_and_import(page, csv_text(DONE, BOOKED, BAD).encode())

    check_page(page, "import-report")
    numbers = page.locator(".numbers").inner_text()
    assert "Planned\n2" in numbers and "Refused\n1" in numbers
    planned = page.locator("tr[data-outcome='planned']")
    assert planned.count() == 2
    assert "Ada Moreno (phone ending 0143)" in planned.nth(0).inner_text()
    assert "no-driving Fri 2026-03-06 15:00 EST" in planned.nth(0).inner_text()
    refused = page.locator("tr[data-outcome='refused']").inner_text()
    assert "mobile_phone: is not a valid phone number" in refused
    assert "sms_consent: the patient must agree to receive texts" in refused
    planned.nth(0).get_by_role("link").click()  # the patient's own page
    page.wait_for_url("**/patients/*")
    assert "Moreno" in page.inner_text("h1")

    choose_and_import(page, csv_text(DONE, BOOKED, BAD).encode())
    assert page.locator("tr[data-outcome='already enrolled']").count() == 2
    session.expire_all()
    assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 2


def test_the_progress_page_of_a_large_import_is_accessible(
    page: Any,
    staff: dict[str, int],
    session: so.Session,
    clock: FakeClock,
    check_page: Callable[..., None],
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
    sign_in(page, NURSE)

    page.goto(f"/import/{run.id}?updates=off")

    check_page(page, "import-progress")
    progress = page.get_by_label("Checked 12,000 of 50,000 rows")
    assert progress.get_attribute("value") == "12000"
