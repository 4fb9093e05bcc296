"""A nurse, in Chromium: sees an urgent reply's words and the patient's name at the top of
/attention, can call from it, handles it with a note, and finds the note on the patient's
page; settles a text the provider cannot tell was sent. Every page is checked at a phone's
width with axe-core."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.inbox.test_held import held_by_the_reaper
from tests.messaging.helpers import event_kinds
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


def test_a_nurse_settles_a_held_text_as_sent_from_the_queue(
    page: Any,
    check_page: Callable[..., None],  # noqa: F811 - the fixture
    staff: dict[str, int],
    session: so.Session,
    care: CareContext,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    sign_in(page, NURSE)
    page.goto("/attention")
    check_page(page, "attention-held-text")
    item = page.locator(f"#item-unknown-{text.id}")
    assert "the provider cannot tell whether it was sent" in item.locator("h2").inner_text()
    assert item.get_by_role("link", name="Ada Moreno").is_visible()
    assert "No driving today" in item.inner_text()
    assert "open until Fri 2026-03-06 21:00 EST" in item.inner_text()
    assert item.get_by_label("Send it again").is_enabled()

    # A decision is required: the browser does not send the form without one.
    item.get_by_label("What was done").fill("Twilio's console: delivered at 15:01")
    assert item.locator("form").evaluate("form => form.checkValidity()") is False
    item.get_by_label("It was sent").check()
    assert item.locator("form").evaluate("form => form.checkValidity()") is True
    item.get_by_role("button", name="Settle").click()
    page.wait_for_url("**/attention")
    assert f"Marked handled: unknown {text.id} (it was sent)" in page.locator(".flash").inner_text()
    assert "Nothing needs attention." in page.locator("ul.inbox").inner_text()
    session.expire_all()
    settled = session.get_one(Message, text.id)
    assert (settled.status, settled.sent_at) == ("sent", text.handed_at)
    assert event_kinds(session, text.id)[-1] == "settled"

    page.goto(f"/patients/{ada.patient.id}")
    note = page.locator("ol.patient-timeline li.note")
    assert "Twilio's console: delivered at 15:01" in note.inner_text()
    assert "no-driving sent" in note.inner_text()
    assert "recorded as sent by the care team" in page.locator("ol.patient-timeline").inner_text()
