"""Enrollment, search, the patient page and its edits, through Flask's test client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask

from followup.audit.models import AuditEvent
from followup.clock import FakeClock
from followup.messaging.models import (
    CANCELLED,
    FAILED,
    PENDING,
    InboundMessage,
    Message,
)
from followup.patients.models import Patient, Procedure
from followup.patients.pages import search_patients
from followup.patients.validation import EnrollmentResult
from tests.web.conftest import NURSE, Browser

Enroll = Callable[..., EnrollmentResult]
FORM = {
    "first_name": "Ada",
    "last_name": "Moreno",
    "phone": "(202) 555-0143",
    "language": "en",
    "procedure": "kyphoplasty",
    "completed_at": "2026-03-06T13:30",
    "timezone": "America/New_York",
    "takes_blood_thinner": "yes",
    "blood_thinner": "Eliquis",
    "consent": "y",
}


def counts(session: so.Session) -> tuple[int, int, int, int]:
    session.expire_all()
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Procedure)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Message)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) or 0,
    )


def audit_actions(session: so.Session) -> list[str]:
    session.expire_all()
    return list(session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def nurse(signed_in: Callable[[str], Browser]) -> Browser:
    return signed_in(NURSE)


def test_the_enrollment_form_defaults_to_the_clinic_zone_and_shows_the_consent_words(
    nurse: Browser,
) -> None:
    page = nurse.get("/patients/new").get_data(as_text=True)
    assert '<option selected value="America/New_York">' in page
    assert "Riverside Spine Center will send you a few text messages" in page
    assert '<label for="consent">' in page


def test_preview_writes_nothing_and_enroll_saves_once(nurse: Browser, session: so.Session) -> None:
    before = counts(session)
    response = nurse.post("/patients/new", {**FORM, "action": "preview"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for step in ("no-driving", "soreness", "blood-thinner-restart", "warning-signs", "pain-check"):
        assert f'data-step="{step}"' in page
    assert "Sun 2026-03-08 14:30 EDT" in page
    assert counts(session) == before

    response = nurse.post("/patients/new", {**FORM, "action": "enroll"})
    assert response.status_code == 302
    patient = session.scalars(sa.select(Patient)).one()
    assert response.headers["Location"] == f"/patients/{patient.id}"
    assert patient.consent_recorded_by == NURSE
    assert counts(session)[:3] == (1, 1, 5)
    assert audit_actions(session)[-1] == "patient.enrolled"


def test_an_expired_step_is_flagged_in_the_preview(nurse: Browser, clock: FakeClock) -> None:
    clock.set(datetime(2026, 3, 7, 3, 0, tzinfo=UTC))  # 22:00 EST: the no-driving text is late
    nurse.sign_in(NURSE)  # hours later: the first session has ended (idle timeout)
    response = nurse.post("/patients/new", {**FORM, "action": "preview"})
    page = response.get_data(as_text=True)
    assert "1 of these texts has already expired and will not be sent" in page
    no_driving = page.split('data-step="no-driving"')[1].split("</li>")[0]
    assert "Will not be sent" in no_driving and "Fri 2026-03-06 21:00 EST" in no_driving


def test_bad_fields_are_shown_next_to_each_field_and_typed_values_kept(
    nurse: Browser, session: so.Session
) -> None:
    before = counts(session)
    form = {**FORM, "phone": "555-12", "completed_at": "2026-03-09T10:00"}
    del form["consent"]
    for action in ("preview", "enroll"):
        response = nurse.post("/patients/new", {**form, "action": action})
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        assert 'id="phone-error"' in page and "not a valid phone number" in page
        assert 'id="completed_at-error"' in page and "is in the future" in page
        assert 'id="consent-error"' in page
        assert 'value="Ada"' in page and 'value="555-12"' in page
        assert 'value="Eliquis"' in page
        assert counts(session) == before


def test_the_same_phone_and_completion_time_warns_instead_of_duplicating(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    enroll()
    before = counts(session)
    for action in ("preview", "enroll"):
        response = nurse.post("/patients/new", {**FORM, "action": action})
        assert response.status_code == 422
        assert "already enrolled with the same completion time" in response.get_data(as_text=True)
    assert counts(session) == before


def test_a_failure_mid_enrollment_leaves_nothing_half_written(
    app: Flask, nurse: Browser, session: so.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    import followup.patients.views as views

    real = views.enroll_patient

    def enroll_then_crash(**kwargs: Any) -> Any:
        real(**kwargs)  # patient, procedure and plan are flushed...
        raise RuntimeError("the disk is full")  # ...then something breaks

    monkeypatch.setattr(views, "enroll_patient", enroll_then_crash)
    before = counts(session)
    response = nurse.post("/patients/new", {**FORM, "action": "enroll"})
    assert response.status_code == 500
    assert "The change was not saved" in response.get_data(as_text=True)
    assert counts(session) == before


def test_search_by_name_or_last_four_digits_newest_first(
    nurse: Browser, enroll: Enroll, clock: FakeClock, session: so.Session
) -> None:
    from datetime import timedelta

    enroll(first_name="Ada", last_name="Moreno", phone="(202) 555-0143")
    clock.advance(timedelta(minutes=5))
    enroll(first_name="Ben", last_name="Okafor", phone="(202) 555-0177")
    clock.advance(timedelta(minutes=5))
    enroll(first_name="Adaeze", last_name="Moreno-Diaz", phone="(202) 555-0199")

    page = nurse.get("/patients").get_data(as_text=True)
    assert page.index("Moreno-Diaz, Adaeze") < page.index("Okafor, Ben") < page.index("Moreno, Ada")
    page = nurse.get("/patients?q=0177").get_data(as_text=True)
    assert "Okafor, Ben" in page and "Moreno" not in page.split("found for")[1]
    page = nurse.get("/patients?q=moreno").get_data(as_text=True)
    assert "Moreno, Ada" in page and "Moreno-Diaz, Adaeze" in page and "Okafor" not in page
    page = nurse.get("/patients?q=ada+moreno-d").get_data(as_text=True)
    assert "Moreno-Diaz, Adaeze" in page and "Moreno, Ada<" not in page

    first = search_patients(session=session, query="", page=1, per_page=2)
    second = search_patients(session=session, query="", page=2, per_page=2)
    assert (first.total, first.pages) == (3, 2)
    assert [r.name for r in first.rows] == ["Moreno-Diaz, Adaeze", "Okafor, Ben"]
    assert [r.name for r in second.rows] == ["Moreno, Ada"]
    assert search_patients(session=session, query="%", page=1).total == 0


def test_the_patient_page_explains_failures_and_shows_replies(
    nurse: Browser, enroll: Enroll, session: so.Session, clock: FakeClock
) -> None:
    result = enroll(blood_thinner="Eliquis")
    soreness = next(m for m in result.messages if m.step == "soreness")
    soreness = session.get(Message, soreness.id)
    assert soreness is not None
    soreness.status = FAILED
    soreness.error_code = "21211"
    soreness.error_message = "Invalid 'To' Phone Number"
    session.add(
        InboundMessage(
            patient_id=result.patient.id,
            from_phone="+12025550143",
            body="8",
            provider_sid="SMreply1",
            received_at=clock.now(),
            kind="pain",
            pain_score=8,
            needs_attention=True,
        )
    )
    session.commit()

    page = nurse.get(f"/patients/{result.patient.id}").get_data(as_text=True)
    assert "failed: invalid &#39;To&#39; phone number (Twilio error 21211)" in page
    assert "Reply from the patient" in page and "pain score 8 of 10" in page
    assert "needs a nurse&#39;s attention" in page
    assert "given Fri 2026-03-06 15:00 EST, recorded by test" in page


def test_an_unknown_patient_is_404(nurse: Browser) -> None:
    response = nurse.get("/patients/999")
    assert response.status_code == 404
    assert "There is no such record." in response.get_data(as_text=True)


def test_a_completion_preview_writes_nothing_and_confirm_replans(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll(blood_thinner="Eliquis")
    patient_id, procedure_id = result.patient.id, result.procedure.id
    url = f"/patients/{patient_id}/completion"
    before = counts(session)
    response = nurse.post(
        url,
        {
            "procedure_id": procedure_id,
            f"completion{procedure_id}-completed_at": "2026-03-06T11:00",
        },
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Sun 2026-03-08 12:00 EDT" in page and "Sun 2026-03-08 14:30 EDT" in page
    assert counts(session) == before

    response = nurse.post(
        url,
        {
            "procedure_id": procedure_id,
            f"completion{procedure_id}-completed_at": "2026-03-07T11:00",
        },
    )
    assert response.status_code == 422
    assert "is in the future" in response.get_data(as_text=True)

    response = nurse.post(
        url,
        {"procedure_id": procedure_id, "completed_at": "2026-03-06T11:00", "action": "confirm"},
    )
    assert response.status_code == 302
    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None
    assert procedure.completed_at == datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    assert audit_actions(session)[-1] == "procedure.completion_changed"


def test_a_procedure_of_another_patient_is_404(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    first = enroll()
    second = enroll(phone="(202) 555-0177")
    response = nurse.post(
        f"/patients/{first.patient.id}/cancel",
        {"procedure_id": second.procedure.id, f"cancel{second.procedure.id}-confirm": "y"},
    )
    assert response.status_code == 404
    session.expire_all()
    assert session.get(Procedure, second.procedure.id).status == "completed"  # type: ignore[union-attr]


def test_cancelling_a_procedure_needs_confirmation_and_cancels_pending_texts(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll()
    procedure_id = result.procedure.id
    url = f"/patients/{result.patient.id}/cancel"
    response = nurse.post(url, {"procedure_id": procedure_id})
    assert response.status_code == 422
    assert "tick the box" in response.get_data(as_text=True)
    response = nurse.post(url, {"procedure_id": procedure_id, f"cancel{procedure_id}-confirm": "y"})
    assert response.status_code == 302
    session.expire_all()
    statuses = set(session.scalars(sa.select(Message.status)))
    assert statuses == {CANCELLED}
    assert audit_actions(session)[-1] == "procedure.cancelled"
    page = nurse.get(f"/patients/{result.patient.id}").get_data(as_text=True)
    assert "cancelled: procedure cancelled" in page


def test_changing_phone_and_language_writes_audit_events_without_the_number(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll()
    base = f"/patients/{result.patient.id}"
    response = nurse.post(f"{base}/phone", {"phone-phone": "555"})
    assert response.status_code == 422
    assert 'id="phone-phone-error"' in response.get_data(as_text=True)
    assert nurse.post(f"{base}/phone", {"phone-phone": "+1 202 555 0188"}).status_code == 302
    assert nurse.post(f"{base}/language", {"language-language": "es"}).status_code == 302
    response = nurse.post(f"{base}/language", {"language-language": "es"})
    assert response.status_code == 422
    session.expire_all()
    patient = session.get(Patient, result.patient.id)
    assert patient is not None and (patient.phone, patient.language) == ("+12025550188", "es")
    events = session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.action for e in events[-2:]] == ["patient.phone_changed", "patient.language_changed"]
    assert all("0188" not in (e.detail or "") and e.actor == NURSE for e in events[-2:])


def test_an_opt_out_given_by_phone_cancels_pending_texts(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll()
    url = f"/patients/{result.patient.id}/opt-out"
    assert nurse.post(url, {}).status_code == 422
    assert nurse.post(url, {"optout-confirm": "y"}).status_code == 302
    session.expire_all()
    patient = session.get(Patient, result.patient.id)
    assert patient is not None and patient.opted_out_at is not None
    assert PENDING not in set(session.scalars(sa.select(Message.status)))
    assert audit_actions(session)[-1] == "patient.opted_out"
    page = nurse.get(f"/patients/{result.patient.id}").get_data(as_text=True)
    assert "opted out" in page and "Record the opt-out" not in page
    assert nurse.post(url, {"optout-confirm": "y"}).status_code == 422


def test_cancelling_twice_says_so_on_the_page(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll()
    procedure_id = result.procedure.id
    url = f"/patients/{result.patient.id}/cancel"
    data = {"procedure_id": procedure_id, f"cancel{procedure_id}-confirm": "y"}
    assert nurse.post(url, data).status_code == 302
    before = audit_actions(session)
    response = nurse.post(url, data)
    assert response.status_code == 422
    assert "procedure: is already cancelled" in response.get_data(as_text=True)
    assert audit_actions(session) == before


BOOKED_FORM = {
    **FORM,
    "when": "booked",
    "completed_at": "",
    "scheduled_at": "2026-11-01T01:30",  # happens twice: the clocks go back at 02:00
    "takes_blood_thinner": "no",
    "blood_thinner": "",
}


def test_an_ambiguous_booked_time_offers_both_offsets_then_takes_the_one_picked(
    nurse: Browser, session: so.Session
) -> None:
    response = nurse.post("/patients/new", {**BOOKED_FORM, "action": "preview"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "happens twice in America/New_York" in page
    assert 'value="-04:00"' in page and "EDT (UTC-04:00), the first time" in page
    assert 'value="-05:00"' in page and "EST (UTC-05:00), the second time" in page
    response = nurse.post(
        "/patients/new", {**BOOKED_FORM, "time_offset": "-05:00", "action": "preview"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    page = response.get_data(as_text=True)
    assert 'booked for <span id="procedure-time">Sun 2026-11-01 01:30 EST</span>' in page
    assert counts(session)[0] == 0


def test_the_blood_thinner_question_must_be_answered_and_none_is_not_a_name(
    nurse: Browser, session: so.Session
) -> None:
    unanswered = {k: v for k, v in FORM.items() if k != "takes_blood_thinner"}
    page = nurse.post("/patients/new", {**unanswered, "action": "preview"}).get_data(as_text=True)
    assert "must be answered: does the patient take a blood thinner, yes or no?" in page
    page = nurse.post(
        "/patients/new", {**FORM, "blood_thinner": "None.", "action": "enroll"}
    ).get_data(as_text=True)
    assert "&#39;None.&#39; means none: answer no to the blood-thinner question instead" in page
    assert counts(session)[0] == 0


def test_a_patient_in_another_zone_sees_the_clinic_time_beside_theirs(nurse: Browser) -> None:
    page = nurse.post(
        "/patients/new", {**FORM, "timezone": "America/Chicago", "action": "preview"}
    ).get_data(as_text=True)
    assert "Fri 2026-03-06 13:30 CST (14:30 EST at the clinic)" in page


def test_a_booked_procedure_is_rescheduled_from_its_page(
    nurse: Browser, enroll: Enroll, session: so.Session
) -> None:
    result = enroll(
        completed_at="",
        scheduled_at="2026-03-12T09:00",
        blood_thinner="warfarin",
        stop_blood_thinner_on="2026-03-09",
    )
    patient_id, procedure_id = result.patient.id, result.procedure.id
    page = nurse.get(f"/patients/{patient_id}").get_data(as_text=True)
    assert "Booked for <strong>Thu 2026-03-12 09:00 EDT</strong>" in page
    assert "Procedure finished" in page and "Reschedule" in page
    url = f"/patients/{patient_id}/reschedule"
    response = nurse.post(
        url,
        {
            "procedure_id": procedure_id,
            f"reschedule{procedure_id}-scheduled_at": "2026-03-19T09:00",
        },
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Confirm the new booked time" in page
    assert "Wed 2026-03-18 16:00 EDT" in page  # the day-before text, moved
    response = nurse.post(
        url,
        {
            "procedure_id": procedure_id,
            "scheduled_at": "2026-03-19T09:00-04:00",
            "stop_blood_thinner_on": "2026-03-16",
            "action": "confirm",
        },
    )
    assert response.status_code == 302
    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None
    assert procedure.scheduled_at == datetime(2026, 3, 19, 13, 0, tzinfo=UTC)
    assert procedure.stop_blood_thinner_on is not None
    assert procedure.stop_blood_thinner_on.isoformat() == "2026-03-16"
    assert audit_actions(session)[-1] == "procedure.rescheduled"
