"""The needs-attention queue, the header's counts, the dashboard's preview and the patients
list's flags, through the Flask test client."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.replies import InboundResult, record_inbound
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.web.conftest import ADMIN, NURSE, Browser

Enroll = Callable[..., EnrollmentResult]
_SID = iter(range(1, 10_000))


def text_in(
    session: so.Session, runtime: Runtime, body: str, phone: str = "+12025550143"
) -> InboundResult:
    """A reply arriving through the same service as the webhook."""
    result = record_inbound(
        session=session,
        provider_sid=f"SMweb{next(_SID):010d}",
        from_phone=phone,
        body=body,
        opt_out_type=None,
        care=runtime.care,
        clinic_hours=runtime.settings.clinic_hours,
        clinic_zone=runtime.settings.default_timezone,
        now=runtime.clock.now(),
    )
    session.commit()
    return result


def item_blocks(page: str) -> list[str]:
    return re.findall(r'<li class="item[^"]*" id="item-.*?</li>', page, re.S)


def test_a_nurse_sees_everything_needed_to_call_with_the_words_escaped(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    ada = enroll(first_name="Ada", last_name="Moreno", language="es")
    text_in(session, runtime, "¿Puedo ducharme?")
    clock.advance(timedelta(minutes=5))
    text_in(session, runtime, "<script>alert(1)</script> my leg is numb")
    text_in(session, runtime, "hello, this is her son", phone="+12025550999")
    clock.advance(timedelta(minutes=40))
    nurse = signed_in(NURSE)
    response = nurse.get("/attention")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    blocks = item_blocks(page)
    assert len(blocks) == 3
    urgent = blocks[0]
    assert 'class="badge urgent">Urgent' in urgent
    assert "new numbness or tingling" in urgent
    assert "&lt;script&gt;alert(1)&lt;/script&gt; my leg is numb" in urgent
    assert f'<a href="/patients/{ada.patient.id}">Ada Moreno</a>' in urgent
    assert '<a href="tel:+12025550143">+1 202-555-0143</a>' in urgent
    assert "Spanish" in urgent
    assert "40 min" in urgent
    assert "urgent: call the clinic now, or the emergency number" in urgent
    assert "none sent" in urgent
    assert "¿Puedo ducharme?" in blocks[1] and "45 min" in blocks[1]
    stranger = blocks[2]
    assert "Unknown sender" in stranger and '<a href="tel:+12025550999">' in stranger
    assert "hello, this is her son" in stranger
    # The nurse can open the patient's whole history (not an admin-only page).
    assert f'href="/patients/{ada.patient.id}#timeline-title"' in urgent
    assert "/log/" not in page
    history = nurse.get(f"/patients/{ada.patient.id}")
    assert history.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; my leg is numb" in history.get_data(as_text=True)


def test_handling_needs_a_note_that_shows_on_the_patient_page_and_in_the_audit(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
) -> None:
    ada = enroll(first_name="Ada", last_name="Moreno")
    reply = text_in(session, runtime, "I have a fever").inbound
    nurse = signed_in(NURSE)
    empty = nurse.post(f"/attention/reply/{reply.id}", {"note": "  "}, form_page="/attention")
    assert empty.status_code == 302
    assert "Say what was done" in nurse.get("/attention").get_data(as_text=True)
    done = nurse.post(
        f"/attention/reply/{reply.id}",
        {"note": "Called: 38.9, sent to urgent care"},
        form_page="/attention",
    )
    assert done.status_code == 302
    page = nurse.get("/attention").get_data(as_text=True)
    assert "Nothing needs attention." in page and f"Marked handled: reply {reply.id}" in page
    again = nurse.post(f"/attention/reply/{reply.id}", {"note": "again"}, form_page="/attention")
    assert again.status_code == 302
    assert f"already handled by {NURSE}" in nurse.get("/attention").get_data(as_text=True)
    assert (
        nurse.post("/attention/reply/999", {"note": "x"}, form_page="/attention").status_code == 404
    )

    patient_page = nurse.get(f"/patients/{ada.patient.id}").get_data(as_text=True)
    assert "Handled by the care team" in patient_page
    assert f"by {NURSE}" in patient_page and "Called: 38.9, sent to urgent care" in patient_page
    assert "triage: urgent (fever or chills)" in patient_page
    assert "answered automatically: Riverside Spine Center: Please call us now" in patient_page
    audit = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "attention.handled")
    ).one()
    assert (audit.actor, audit.record_type, audit.record_id) == (NURSE, "inbound_message", reply.id)
    assert audit.detail == f"reply {reply.id} handled: Called: 38.9, sent to urgent care"
    assert "Called: 38.9, sent to urgent care" in signed_in(ADMIN).get("/audit").get_data(
        as_text=True
    )


def test_the_header_shows_open_and_urgent_counts_on_every_page(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
) -> None:
    ada = enroll()
    text_in(session, runtime, "my leg is numb")
    text_in(session, runtime, "what time is it?")
    text_in(session, runtime, "thanks!")  # closing: not counted
    nurse = signed_in(NURSE)
    for path in ("/patients", f"/patients/{ada.patient.id}", "/patients/new", "/attention"):
        page = nurse.get(path).get_data(as_text=True)
        assert '<span class="count">2 open</span>' in page, path
        assert '<span class="count urgent">1 urgent</span>' in page, path
    admin_page = signed_in(ADMIN).get("/log").get_data(as_text=True)
    assert '<span class="count">2 open</span>' in admin_page


def test_the_dashboard_lists_every_urgent_item_first(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    enroll(first_name="Ada", last_name="Moreno")
    for i in range(15):
        text_in(session, runtime, f"question number {i}?")
    clock.advance(timedelta(hours=1))
    for score in range(12):
        text_in(session, runtime, f"my pain is {7 + score % 4}")
    page = signed_in(ADMIN).get("/").get_data(as_text=True)
    preview = page[page.index('id="queue-heading"') :]
    entries = re.findall(r"<li>.*?</li>", preview, re.S)
    assert len(entries) == 12 + 10
    assert all("Urgent" in e for e in entries[:12])
    assert not any("Urgent" in e for e in entries[12:])
    assert "All 27 open items" in preview
    assert "27 open, 12 urgent" in page


def test_the_patients_list_flags_and_filters_unreachable_opted_out_and_open(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    lena = enroll(first_name="Lena", last_name="Landline")
    enroll(first_name="Fay", last_name="Fine", phone="(202) 555-0166")
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == lena.patient.id, Message.step == "no-driving")
        .values(
            status="failed", error_code="30006", to_phone="+12025550143", updated_at=clock.now()
        )
    )
    session.commit()
    nurse = signed_in(NURSE)
    everyone = nurse.get("/patients").get_data(as_text=True)
    assert "cannot receive texts" in everyone and "1 open item" in everyone
    only = nurse.get("/patients?show=unreachable").get_data(as_text=True)
    assert "Landline, Lena" in only and "Fine, Fay" not in only
    assert '<option value="unreachable" selected>' in only
    assert "Fine, Fay" not in nurse.get("/patients?show=open").get_data(as_text=True)
    assert "No patients" in nurse.get("/patients?show=opted-out").get_data(as_text=True)
    assert "Fine, Fay" in nurse.get("/patients?show=bogus").get_data(as_text=True)
    attention = nurse.get("/attention").get_data(as_text=True)
    assert "cannot receive texts: the number is a landline" in attention
    assert "Call the patient; ask for a mobile number" in attention


def test_the_cli_lists_and_handles_the_same_items_in_the_same_order(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    runtime: Runtime,
    enroll: Enroll,
    clock: FakeClock,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from followup.cli import main

    lena = enroll(first_name="Lena", last_name="Landline", phone="(202) 555-0166")
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == lena.patient.id, Message.step == "no-driving")
        .values(
            status="failed", error_code="21614", to_phone="+12025550166", updated_at=clock.now()
        )
    )
    session.commit()
    clock.advance(timedelta(minutes=1))
    enroll(first_name="Ada", last_name="Moreno")
    text_in(session, runtime, "can I shower?")
    text_in(session, runtime, "who is this", phone="+12025550999")
    clock.advance(timedelta(minutes=1))
    text_in(session, runtime, "the site is red and swollen")
    page = signed_in(NURSE).get("/attention").get_data(as_text=True)
    web_order = [f"{kind}:{number}" for kind, number in re.findall(r'id="item-(\w+)-(\d+)"', page)]

    monkeypatch.setenv("DATABASE_URL", database_url)
    now = clock.now().isoformat()
    main(["--now", now, "attention"])
    out = capsys.readouterr().out
    cli_order = [
        line.split()[0]
        for line in out.splitlines()
        if re.match(r"^(reply|text|unreachable):", line)
    ]
    assert cli_order == web_order and len(cli_order) == 4
    assert out.splitlines()[0] == "4 open, 1 urgent"
    assert "URGENT redness at the needle site; swelling at the needle site" in out
    assert "    wrote: 'the site is red and swollen'" in out
    assert "    Ada Moreno (patient 2) | +12025550143 | English" in out
    assert "    unknown sender | +12025550999 | -" in out
    assert "cannot receive texts: the number is not a mobile phone (Twilio error 21614)" in out
    assert "    alerts: none sent" in out

    main(["--now", now, "attention", "--handle", f"unreachable:{lena.patient.id}",
          "--note", "Called: gave a mobile number"])  # fmt: skip
    assert capsys.readouterr().out.strip() == f"unreachable {lena.patient.id} handled"
    with pytest.raises(SystemExit):
        main(["attention", "--handle", "reply:x", "--note", "n"])
    assert capsys.readouterr().err.strip() == (
        "error: --handle: must look like reply:12, text:5, unreachable:3 or unknown:7"
    )
    nurse_page = signed_in(NURSE).get(f"/patients/{lena.patient.id}").get_data(as_text=True)
    assert "Called: gave a mobile number" in nurse_page and "by cli" in nurse_page


def test_a_critical_text_that_changed_since_the_page_was_read_is_not_marked_handled(
    signed_in: Callable[[str], Browser],
    session: so.Session,
    enroll: Enroll,
    clock: FakeClock,
) -> None:
    # The nurse reads "blood-thinner-restart expired" and starts writing her note. Meanwhile
    # the text changes (brought back by START, then failed: a new problem she has not
    # seen). Her "handled" is for what she read: it must not cover the failure.
    restart = enroll(blood_thinner="Eliquis").messages[2]
    session.execute(
        sa.update(Message)
        .where(Message.id == restart.id)
        .values(status="expired", updated_at=clock.now())
    )
    session.commit()
    nurse = signed_in(NURSE)
    [block] = item_blocks(nurse.get("/attention").get_data(as_text=True))
    assert "blood-thinner-restart expired" in block
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))
    hidden.pop("csrf_token", None)
    clock.advance(timedelta(minutes=5))
    session.execute(
        sa.update(Message)
        .where(Message.id == restart.id)
        .values(status="failed", error_code="30003", updated_at=clock.now())
    )
    session.commit()
    response = nurse.post(
        f"/attention/text/{restart.id}",
        {**hidden, "note": "Called: she knows when to restart"},
        form_page="/attention",
    )
    assert response.status_code == 302
    page = nurse.get("/attention").get_data(as_text=True)
    assert "Not marked" in page and "changed since" in page
    [block] = item_blocks(page)
    assert "blood-thinner-restart failed" in block
