"""An admin, in Chromium: finds last week's failed texts, reads why, exports them as CSV."""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.patients.validation import EnrollmentResult
from tests.web.conftest import ADMIN, ARTIFACTS
from tests.web.test_browser import AXE_RUN_JS, UNLABELLED_JS, sign_in

Enroll = Callable[..., EnrollmentResult]


def accessible(page: Any, axe_source: str) -> None:
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, page.url
    assert page.evaluate(UNLABELLED_JS) == [], page.url
    page.evaluate(axe_source)
    serious = [v for v in page.evaluate(AXE_RUN_JS) if v["impact"] in ("serious", "critical")]
    assert serious == [], f"axe on {page.url}: {serious}"


def test_an_admin_finds_last_weeks_failed_texts_and_exports_them(
    page: Any,
    axe_source: str,
    staff: dict[str, int],
    session: so.Session,
    enroll: Enroll,
    clock: FakeClock,
    tmp_path: Any,
) -> None:
    ada = enroll(first_name="Ada", last_name="Moreno", blood_thinner="Eliquis")
    enroll(first_name="Bo", last_name="Lindqvist", phone="(202) 555-0177")
    now = clock.now()
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == ada.patient.id, Message.step == "no-driving")
        .values(status="failed", error_code="30006", attempts=1, updated_at=now)
    )
    session.execute(
        sa.update(Message)
        .where(Message.step == "no-driving", Message.patient_id != ada.patient.id)
        .values(status="delivered", sent_at=now, delivered_at=now)
    )
    session.commit()

    sign_in(page, ADMIN)
    page.goto("/")
    accessible(page, axe_source)
    chart = page.locator("svg.chart")
    assert chart.get_attribute("role") == "img"
    assert "1 sent, 1 delivered, 1 failed" in (page.locator("svg.chart desc").text_content() or "")
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "dashboard-chart.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})

    page.goto("/log")
    page.select_option("#status", "failed")
    page.fill("#date_from", "2026-02-28")
    page.fill("#date_to", "2026-03-06")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/log?**")
    accessible(page, axe_source)
    rows = page.locator("table.log tbody tr")
    assert rows.count() == 1
    text = rows.first.inner_text()
    assert "Ada Moreno" in text and "30006" in text and "landline or unreachable carrier" in text
    page.screenshot(path=str(ARTIFACTS / "send-log-failed.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    path = tmp_path / "export.csv"
    download_info.value.save_as(str(path))
    exported = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert [(r["patient_id"], r["step"], r["status"], r["error_code"]) for r in exported] == [
        (str(ada.patient.id), "no-driving", "failed", "30006")
    ]

    page.goto("/audit")
    assert "sendlog.exported" in page.content()
