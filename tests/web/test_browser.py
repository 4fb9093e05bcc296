"""The nurse web app in a real headless Chromium (Debian's), driven by Playwright.

The app runs in a werkzeug server thread against the test database, with the FakeClock
pinned to Friday 2026-03-06 15:00 in New York (two days before the spring DST change).
Every page visited is checked at 375 px wide: no horizontal overflow, every input
labelled, and no serious or critical axe-core violation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.messaging.models import Message
from followup.patients.models import Patient, Procedure
from followup.patients.validation import EnrollmentResult
from tests.web.conftest import ADMIN, ARTIFACTS, NURSE, PASSWORD

WIDTH = 375
STEPS = ["no-driving", "soreness", "blood-thinner-restart", "warning-signs", "pain-check"]
# Completed 13:30 EST on Friday 2026-03-06 and previewed at 15:00 EST the same day.
EXPECTED_TIMES = {
    "no-driving": "Fri 2026-03-06 15:00 EST",  # due at completion: goes out now
    "soreness": "Sat 2026-03-07 10:00 EST",
    "blood-thinner-restart": "Sun 2026-03-08 14:30 EDT",  # exactly 48 h, across DST
    "warning-signs": "Mon 2026-03-09 10:00 EDT",
    "pain-check": "Fri 2026-03-13 10:00 EDT",
}
UNLABELLED_JS = """() => Array.from(
  document.querySelectorAll('input:not([type=hidden]), select, textarea')
).filter(el => el.labels.length === 0 && !el.getAttribute('aria-label')
  && !el.getAttribute('aria-labelledby')).map(el => el.name || el.id || el.outerHTML)"""
AXE_RUN_JS = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
  }));
}"""


def counts(session: so.Session) -> tuple[int, int, int]:
    session.expire_all()
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Procedure)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Message)) or 0,
    )


@pytest.fixture
def check_page(axe_source: str) -> Callable[..., None]:
    """Check the page a person sees now; optionally save a screenshot as a test artifact."""

    def _check(page: Any, screenshot: str | None = None) -> None:
        page.wait_for_load_state("load")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{page.url} is {width} px wide at {WIDTH} px"
        assert page.evaluate(UNLABELLED_JS) == [], f"unlabelled inputs on {page.url}"
        page.evaluate(axe_source)
        violations = page.evaluate(AXE_RUN_JS)
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert serious == [], f"axe on {page.url}: {serious}"
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{screenshot}.png"), full_page=True)

    return _check


def sign_in(page: Any, email: str, check: Callable[..., None] | None = None) -> None:
    page.goto("/login")
    if check:
        check(page, "login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/patients")


def fill_enrollment(page: Any, **overrides: str) -> None:
    values = {
        "#first_name": "Ada",
        "#last_name": "Moreno",
        "#phone": "(202) 555-0143",
        "#completed_at": "2026-03-06T13:30",
        "#blood_thinner": "Eliquis",
    } | overrides
    for selector, value in values.items():
        page.fill(selector, value)
    page.select_option("#procedure", "kyphoplasty")
    page.select_option("#language", "en")
    page.select_option("#timezone", "America/New_York")
    # The blood-thinner question is answered explicitly: yes with a name, or no.
    page.check("#takes_blood_thinner-0" if values["#blood_thinner"] else "#takes_blood_thinner-1")
    page.check("#consent")


def test_enrollment_previews_all_five_texts_at_local_times_then_enrolls(
    page: Any, staff: dict[str, int], session: so.Session, check_page: Callable[..., None]
) -> None:
    sign_in(page, NURSE, check_page)
    check_page(page, "patients-empty")
    page.get_by_role("link", name="Enroll a patient").click()
    check_page(page, "enrollment-form")
    fill_enrollment(page)
    page.get_by_role("button", name="Preview the texts").click()
    page.wait_for_selector("li[data-step]")
    check_page(page, "enrollment-preview")

    cards = page.locator("li[data-step]")
    assert [cards.nth(i).get_attribute("data-step") for i in range(cards.count())] == STEPS
    for step, local_time in EXPECTED_TIMES.items():
        card = page.locator(f"li[data-step='{step}']")
        assert card.locator(".when").inner_text() == local_time
    restart = page.locator("li[data-step='blood-thinner-restart'] .sms").inner_text()
    assert "You may restart your Eliquis from 2:30 PM on Sunday, March 8." in restart
    assert counts(session) == (0, 0, 0), "the preview must not save anything"

    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "enrollment-preview-desktop.png"), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": 812})

    page.get_by_role("button", name="Enroll", exact=True).click()
    page.wait_for_url("**/patients/*")
    assert "Enrolled. 5 texts are planned." in page.inner_text("main")
    check_page(page, "patient-page")
    titles = page.locator(".patient-timeline h3").all_inner_texts()
    assert [t.split(" ")[0] for t in titles] == ["No", "Soreness", "Restart", "Warning", "Pain"]
    assert "Sun 2026-03-08 14:30 EDT" in page.inner_text(".patient-timeline")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "patient-page-desktop.png"), full_page=True)

    assert counts(session) == (1, 1, 5)
    actions = session.scalars(sa.select(AuditEvent.action)).all()
    assert "patient.enrolled" in actions


def test_an_invalid_phone_is_shown_next_to_the_field_and_nothing_is_saved(
    page: Any, staff: dict[str, int], session: so.Session, check_page: Callable[..., None]
) -> None:
    sign_in(page, NURSE)
    page.goto("/patients/new")
    fill_enrollment(page, **{"#phone": "555-12"})
    page.get_by_role("button", name="Preview the texts").click()
    error = page.locator("#phone-error")
    error.wait_for()
    assert "is not a valid phone number" in error.inner_text()
    assert page.locator("#phone").get_attribute("aria-invalid") == "true"
    # What was typed is kept.
    assert page.input_value("#first_name") == "Ada"
    assert page.input_value("#phone") == "555-12"
    assert page.input_value("#blood_thinner") == "Eliquis"
    assert page.is_checked("#consent")
    check_page(page, "enrollment-phone-error")
    assert counts(session) == (0, 0, 0)


def test_correcting_the_completion_time_shows_then_moves_the_schedule(
    page: Any,
    staff: dict[str, int],
    session: so.Session,
    enroll: Callable[..., EnrollmentResult],
    check_page: Callable[..., None],
) -> None:
    result = enroll(blood_thinner="Eliquis")
    sign_in(page, NURSE)
    page.goto(f"/patients/{result.patient.id}")
    field = page.get_by_label("Corrected completion (local date and time)")
    field.fill("2026-03-06T11:00")
    page.get_by_role("button", name="Preview the new schedule").click()
    page.wait_for_selector("table.schedule")
    check_page(page, "completion-preview")
    row = page.locator("tr", has=page.locator("th", has_text="Restart the blood thinner"))
    cells = row.locator("td").all_inner_texts()
    assert cells[:2] == ["Sun 2026-03-08 14:30 EDT", "Sun 2026-03-08 12:00 EDT"]
    session.expire_all()
    restart = session.scalars(
        sa.select(Message).where(Message.step == "blood-thinner-restart")
    ).one()
    assert restart.due_at.hour == 18  # 14:30 EDT: nothing changed yet

    page.get_by_role("button", name="Confirm the change").click()
    page.wait_for_url(f"**/patients/{result.patient.id}")
    assert "re-planned" in page.inner_text(".flash")
    timeline = page.inner_text(".patient-timeline")
    assert "Sun 2026-03-08 12:00 EDT" in timeline
    assert "Sun 2026-03-08 14:30 EDT" not in timeline
    assert "Finished Fri 2026-03-06 11:00 EST" in page.inner_text("main")
    session.expire_all()
    restart = session.scalars(
        sa.select(Message).where(Message.step == "blood-thinner-restart")
    ).one()
    assert restart.due_at.hour == 16  # 12:00 EDT
    actions = session.scalars(sa.select(AuditEvent.action)).all()
    assert "procedure.completion_changed" in actions


@pytest.mark.parametrize("path", ["/audit", "/users", "/log", "/log.csv"])
def test_a_nurse_is_refused_the_admin_pages(
    page: Any, staff: dict[str, int], path: str, check_page: Callable[..., None]
) -> None:
    sign_in(page, NURSE)
    response = page.goto(path)
    assert response is not None and response.status == 403
    assert "for admins only" in page.inner_text("main")
    assert page.get_by_role("link", name="Audit").count() == 0  # not offered either
    if path == "/audit":
        check_page(page, "nurse-refused")


def test_an_admin_reads_the_audit_and_users_pages(
    page: Any,
    staff: dict[str, int],
    enroll: Callable[..., EnrollmentResult],
    check_page: Callable[..., None],
) -> None:
    enroll()
    sign_in(page, ADMIN)
    page.get_by_role("link", name="Audit").click()
    page.wait_for_url("**/audit")
    check_page(page, "audit")
    assert "patient.enrolled" in page.inner_text("table")
    page.get_by_role("link", name="Users").click()
    page.wait_for_url("**/users")
    check_page(page, "users")
    assert NURSE in page.inner_text("table")
    page.get_by_role("link", name="Patients").first.click()
    page.wait_for_url("**/patients")
    check_page(page, "patients-list")
    assert "Moreno, Ada" in page.inner_text("main")


def test_a_booked_patient_is_enrolled_then_finished_and_the_plan_changes_phase(
    page: Any,
    staff: dict[str, int],
    session: so.Session,
    clock: Any,
    check_page: Callable[..., None],
) -> None:
    sign_in(page, NURSE)
    page.goto("/patients/new")
    page.check("#when-1")  # booked for a later time
    fill_enrollment(
        page,
        **{"#completed_at": "", "#scheduled_at": "2026-03-12T09:00", "#blood_thinner": "warfarin"},
    )
    page.fill("#stop_blood_thinner_on", "2026-03-10")
    page.select_option("#timezone", "America/Chicago")  # the patient is not in the clinic's zone
    page.get_by_role("button", name="Preview the texts").click()
    page.wait_for_selector("li[data-step]")
    check_page(page, "booked-preview")
    cards = page.locator("li[data-step]")
    assert [cards.nth(i).get_attribute("data-step") for i in range(cards.count())] == [
        "welcome",
        "stop-blood-thinner",
        "day-before",
    ]
    # Both zones: the patient's, and the clinic's beside it.
    assert (
        page.inner_text("#procedure-time") == "Thu 2026-03-12 09:00 CDT (10:00 EDT at the clinic)"
    )
    assert page.locator("li[data-step='stop-blood-thinner'] .when").inner_text() == (
        "Mon 2026-03-09 10:00 CDT"
    )
    assert "Stop taking your warfarin on Tuesday, March 10" in page.inner_text(
        "li[data-step='stop-blood-thinner'] .sms"
    )
    page.get_by_role("button", name="Enroll", exact=True).click()
    page.wait_for_url("**/patients/*")
    timeline = page.inner_text(".patient-timeline")
    for title in ("Welcome", "Stop the blood thinner", "The day before"):
        assert title in timeline
    assert "No driving today" not in timeline

    # Thursday 11:00 in Chicago: the procedure finished at 10:30.
    clock.set(datetime(2026, 3, 12, 16, 0, tzinfo=UTC))
    patient_url = page.url
    sign_in(page, NURSE)  # days later: the morning's session has ended, a new shift signs in
    page.goto(patient_url)
    check_page(page, "booked-patient-page")
    page.fill("[id$='-completed_at']", "2026-03-12T10:30")
    page.get_by_role("button", name="Procedure finished").click()
    page.wait_for_selector("table.schedule")
    check_page(page, "procedure-finished-preview")
    assert page.inner_text("h1") == "Confirm the procedure is finished"
    assert page.inner_text("#new-time") == "Thu 2026-03-12 10:30 CDT (11:30 EDT at the clinic)"
    rows = page.inner_text("table.schedule")
    assert "cancelled: procedure finished" in rows  # the day-before text had not gone out
    page.get_by_role("button", name="Confirm the change").click()
    page.wait_for_url("**/patients/*")
    entries = page.locator(".patient-timeline li.entry")
    statuses = {
        entries.nth(i).locator("h3").inner_text().rsplit(" ", 1)[0]: entries.nth(i).get_attribute(
            "class"
        )
        for i in range(entries.count())
    }
    assert "cancelled" in statuses["The day before"] and "cancelled" in statuses["Welcome"]
    for title in ("No driving today", "Soreness is normal", "Restart the blood thinner"):
        assert "pending" in statuses[title], statuses
    restart = page.locator(".patient-timeline li.entry", has_text="Restart the blood thinner")
    assert "Sat 2026-03-14 10:30 CDT" in restart.inner_text()  # 48 h after the real finish
    check_page(page, "finished-patient-page")


def test_an_admin_ends_a_nurses_session_and_her_browser_is_signed_out(
    chromium: Any,
    live_server: str,
    page: Any,
    staff: dict[str, int],
    check_page: Callable[..., None],
) -> None:
    nurse_context = chromium.new_context(base_url=live_server)
    try:
        nurse = nurse_context.new_page()
        sign_in(nurse, NURSE)
        sign_in(page, ADMIN)
        page.goto("/users")
        page.get_by_role("link", name=f"open sessions of {NURSE}").click()
        page.wait_for_url(f"**/users/{staff['nurse']}/sessions")
        check_page(page, "user-sessions")
        assert "From 127.0.0.1" in page.inner_text("main")
        page.get_by_role("button", name=f"End all sessions of {NURSE}").click()
        page.wait_for_url(f"**/users/{staff['nurse']}/sessions")
        assert "1 session ended." in page.inner_text("main")
        assert "No open sessions." in page.inner_text("main")
        nurse.goto("/patients")
        nurse.wait_for_url("**/login?next=/patients")
        assert "Your session has ended" in nurse.inner_text("main")
    finally:
        nurse_context.close()
