"""A nurse, in Chromium: sees an urgent reply's words and the patient's name at the top of
/attention, can call from it, handles it with a note, and finds the note on the patient's
page. Every page is checked at a phone's width with axe-core."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.web.conftest import NURSE
from tests.web.test_browser import check_page, sign_in  # noqa: F401 - fixture
from tests.web.test_inbox_views import text_in

Enroll = Callable[..., EnrollmentResult]


def test_a_nurse_handles_an_urgent_reply_from_the_top_of_the_queue(
    page: Any,
    check_page: Callable[..., None],  # noqa: F811 - the fixture
    staff: dict[str, int],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    bo = enroll(first_name="Bo", last_name="Lindqvist", phone="(202) 555-0177")
    text_in(session, runtime, "Can I take a shower tonight?", phone=bo.patient.phone)
    clock.advance(timedelta(minutes=30))
    ada = enroll(first_name="Ada", last_name="Moreno", language="es")
    text_in(session, runtime, "No siento las piernas desde esta mañana")
    clock.advance(timedelta(minutes=7))

    sign_in(page, NURSE)
    header = page.get_by_role("link", name="Needs attention")
    assert "2 open" in header.inner_text() and "1 urgent" in header.inner_text()
    header.click()
    page.wait_for_url("**/attention")
    check_page(page, "attention-urgent-first")

    first = page.locator("ul.inbox > li").first
    assert "Urgent" in first.locator("h2").inner_text()
    assert "cannot feel or move the legs" in first.locator("h2").inner_text()
    assert first.locator("blockquote").inner_text() == "No siento las piernas desde esta mañana"
    assert first.get_by_role("link", name="Ada Moreno").is_visible()
    call = first.get_by_role("link", name="+1 202-555-0143")
    assert call.get_attribute("href") == "tel:+12025550143"
    assert "Spanish" in first.inner_text() and "7 min" in first.inner_text()
    assert "Lindqvist" in page.locator("ul.inbox > li").nth(1).inner_text()

    first.get_by_label("What was done").fill("Called her: sent to the ER by ambulance")
    first.get_by_role("button", name="Mark handled").click()
    page.wait_for_url("**/attention")
    assert "Marked handled" in page.locator(".flash").inner_text()
    assert page.locator("ul.inbox > li").count() == 1
    assert "1 open" in page.get_by_role("link", name="Needs attention").inner_text()

    page.goto(f"/patients/{ada.patient.id}")
    check_page(page, "patient-page-handled-note")
    timeline = page.locator("ol.patient-timeline")
    note = timeline.locator("li.note")
    assert "Called her: sent to the ER by ambulance" in note.inner_text()
    assert f"by {NURSE}" in note.inner_text()
    assert "Handled by the care team" in note.inner_text()
