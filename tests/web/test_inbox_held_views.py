"""A held text (the provider cannot tell whether it was sent) on /attention: what a nurse
sees, and settling it through the form (CSRF, sign-in, refusals, a race with a late
answer), through the Flask test client."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.patients.validation import EnrollmentResult
from tests.inbox.test_held import held_by_the_reaper, snapshot
from tests.messaging.helpers import at, event_kinds
from tests.web.conftest import ADMIN, NURSE, Browser
from tests.web.test_inbox_views import item_blocks

Enroll = Callable[..., EnrollmentResult]


def flash(browser: Browser) -> str:
    page = browser.get("/attention").get_data(as_text=True)
    found = re.search(r'<div class="flash"[^>]*>\s*<p>(.*?)</p>', page, re.S)
    assert found, "no message on the page"
    return html.unescape(" ".join(found.group(1).split()))


def test_a_nurse_sees_a_held_text_and_sends_it_again(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    ada, text = held_by_the_reaper(session, care, clock, enroll)
    nurse = signed_in(NURSE)
    page = nurse.get("/attention").get_data(as_text=True)
    [block] = item_blocks(page)
    assert f'id="item-unknown-{text.id}"' in block
    assert "no-driving: outcome unknown, the provider cannot tell whether it was sent" in block
    assert f'<a href="/patients/{ada.patient.id}">Ada Moreno</a>' in block
    assert '<a href="tel:+12025550143">+1 202-555-0143</a>' in block
    assert "<dt>Text</dt><dd>No driving today</dd>" in block
    assert "<dt>Handed to Twilio</dt><dd>Fri 2026-03-06 15:00 EST</dd>" in block
    assert "open until Fri 2026-03-06 21:00 EST" in block
    for value, words in (("sent", "It was sent"), ("resend", "Send it again"),
                         ("cancel", "Do not send")):  # fmt: skip
        assert f'name="decision" value="{value}" required>' in block
        assert f'<label for="decision-{text.id}-{value}">{words}</label>' in block
    assert "Cannot be sent again" not in block and "/log/" not in block
    assert f'href="/log/{text.id}"' in signed_in(ADMIN).get("/attention").get_data(as_text=True)
    assert '<span class="count">1 open</span>' in page
    timeline = nurse.get(f"/patients/{ada.patient.id}").get_data(as_text=True)
    assert "outcome unknown: the SMS provider cannot tell whether it was sent" in timeline
    assert "being handed to the SMS provider" not in timeline

    done = nurse.post(
        f"/attention/unknown/{text.id}",
        {"decision": "resend", "note": "Called: she never got it"},
        form_page="/attention",
    )
    assert done.status_code == 302
    assert flash(nurse) == f"Marked handled: unknown {text.id} (send it again)."
    assert "Nothing needs attention." in nurse.get("/attention").get_data(as_text=True)
    session.expire_all()
    assert session.get_one(Message, text.id).status == "pending"
    audit = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "attention.handled")
    ).one()
    assert (audit.actor, audit.record_type, audit.record_id) == (NURSE, "message", text.id)
    assert audit.detail == f"unknown {text.id} settled (send it again): Called: she never got it"


def test_a_closed_window_offers_no_resend_and_refuses_one_writing_nothing(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    _, text = held_by_the_reaper(session, care, clock, enroll)
    clock.set(at("2026-03-06T21:30"))
    nurse = signed_in(NURSE)
    [block] = item_blocks(nurse.get("/attention").get_data(as_text=True))
    assert "closed Fri 2026-03-06 21:00 EST" in block
    assert "Cannot be sent again: its window has closed." in block
    assert 'value="resend" required disabled' in block
    before = snapshot(session, text.id)
    # A form sent anyway (an old tab, a crafted POST) is refused by the service.
    refused = nurse.post(
        f"/attention/unknown/{text.id}", {"decision": "resend", "note": "x"}, form_page="/attention"
    )
    assert refused.status_code == 302
    assert flash(nurse) == (
        'Not marked: decision cannot be "send it again": its window closed at '
        'Fri 2026-03-06 21:00 EST; choose "it was sent" or "do not send".'
    )
    assert snapshot(session, text.id) == before
    missing = nurse.post(f"/attention/unknown/{text.id}", {"note": "x"}, form_page="/attention")
    assert missing.status_code == 302
    assert flash(nurse).startswith("Not marked: decision is required")
    assert snapshot(session, text.id) == before
    done = nurse.post(
        f"/attention/unknown/{text.id}",
        {"decision": "cancel", "note": "Her son drove her home"},
        form_page="/attention",
    )
    assert done.status_code == 302
    session.expire_all()
    assert session.get_one(Message, text.id).status == "cancelled"


def test_a_text_settled_between_page_and_post_is_left_as_it_is(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    _, text = held_by_the_reaper(session, care, clock, enroll)
    nurse = signed_in(NURSE)
    token_page = "/attention"  # the page the nurse has open; the POST takes its token
    assert f'id="item-unknown-{text.id}"' in nurse.get(token_page).get_data(as_text=True)
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(status="delivered", provider_sid="SMlate", sent_at=text.handed_at)
    )
    session.commit()
    before = snapshot(session, text.id)
    response = nurse.post(
        f"/attention/unknown/{text.id}", {"decision": "resend", "note": "x"}, form_page=token_page
    )
    assert response.status_code == 302
    assert flash(nurse) == "Not marked: item was already settled: the text is delivered now."
    assert snapshot(session, text.id) == before


def test_settling_needs_sign_in(
    browser: Browser,
    staff: dict[str, int],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    _, text = held_by_the_reaper(session, care, clock, enroll)
    before = snapshot(session, text.id)
    anonymous = browser.post(  # with the sign-in page's token: the sign-in gate answers
        f"/attention/unknown/{text.id}", {"decision": "sent", "note": "x"}, form_page="/login"
    )
    assert anonymous.status_code == 401
    assert snapshot(session, text.id) == before


def test_settling_needs_the_csrf_token_and_a_held_text(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    _, text = held_by_the_reaper(session, care, clock, enroll)
    before = snapshot(session, text.id)
    forged = signed_in(NURSE).client.post(
        f"/attention/unknown/{text.id}", data={"decision": "sent", "note": "x"}
    )
    assert forged.status_code == 400
    assert snapshot(session, text.id) == before
    admin = signed_in(ADMIN)
    unknown = admin.post("/attention/unknown/999", {"decision": "sent", "note": "x"},
                         form_page="/attention")  # fmt: skip
    assert unknown.status_code == 404
    wrong = admin.post(f"/attention/reply/{text.id}", {"decision": "sent", "note": "x"},
                       form_page="/attention")  # fmt: skip
    assert wrong.status_code == 302
    assert flash(admin) == "Not marked: decision applies only to unknown items."
    assert snapshot(session, text.id) == before
    done = admin.post(
        f"/attention/unknown/{text.id}",
        {"decision": "sent", "note": "Twilio's console: delivered 15:01"},
        form_page="/attention",
    )
    assert done.status_code == 302
    assert flash(admin) == f"Marked handled: unknown {text.id} (it was sent)."
    session.expire_all()
    settled = session.get_one(Message, text.id)
    assert (settled.status, settled.sent_at) == ("sent", text.handed_at)
    assert event_kinds(session, text.id)[-1] == "settled"
    assert clock.now() < at("2026-03-06T21:00") - timedelta(hours=1)
