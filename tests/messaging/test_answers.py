"""Signed replies through POST /twilio/inbound get the answer their triage calls for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.care.timing import parse_clinic_hours
from followup.clock import FakeClock
from followup.messaging.models import CANCELLED, SENT
from followup.messaging.replies import record_inbound
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.messaging.conftest import PHONE, post_signed, reply_form
from tests.messaging.helpers import messages
from tests.messaging.test_inbound import inbound_rows, patient, twiml_messages

Reply = Callable[..., tuple[int, str]]
CLINIC_PHONE = "(202) 555-0100"


def answer(reply: Reply, body: str, **extra: str) -> list[str]:
    status, xml = reply(body, **extra)
    assert status == 200
    return twiml_messages(xml)


@pytest.fixture
def spanish(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_runtime: Runtime,
    clock: FakeClock,
) -> EnrollmentResult:
    """A Spanish-speaking patient whose first text has gone out."""
    from tests.messaging.helpers import dispatch

    result = enroll(language="es")
    dispatch(session, twilio_runtime.transport, twilio_runtime.care, clock.now())
    return result


# --- urgent -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["my leg is numb", "I can't feel my legs", "bleeding a lot"])
def test_urgent_reply_is_told_to_call_now_every_time(
    body: str, reply: Reply, session: so.Session, enrolled: EnrollmentResult
) -> None:
    for _ in range(3):
        [text] = answer(reply, body)
        assert text.startswith("Riverside Spine Center: Please call us now at (202) 555-0100")
        assert "If it is an emergency, call 911 now" in text
    rows = inbound_rows(session)
    assert [(r.triage, r.answer_kind, r.needs_attention) for r in rows] == [
        ("urgent", "urgent", True)
    ] * 3
    assert rows[0].answers_message_id == messages(session)["no-driving"].id


def test_pain_score_of_10_after_the_pain_check_is_urgent_and_answered(
    reply: Reply, session: so.Session, pain_checked: EnrollmentResult
) -> None:
    [text] = answer(reply, "10")
    assert "Please call us now at (202) 555-0100" in text
    [row] = inbound_rows(session)
    assert (row.kind, row.pain_score, row.triage) == ("pain", 10, "urgent")
    assert row.triage_reason == "pain score 10 of 10"
    assert row.answers_message_id == messages(session)["pain-check"].id


def test_spanish_patient_with_fever_is_answered_in_spanish(
    reply: Reply, session: so.Session, spanish: EnrollmentResult
) -> None:
    [text] = answer(reply, "tengo fiebre")
    assert text.startswith("Riverside Spine Center: Llámenos ahora al (202) 555-0100")
    assert "llame al 911 ahora" in text
    [row] = inbound_rows(session)
    assert (row.triage, row.triage_reason) == ("urgent", "fever or chills")


def test_unknown_sender_with_a_warning_sign_is_answered_and_queued_with_the_number(
    reply: Reply, session: so.Session, enrolled: EnrollmentResult
) -> None:
    [text] = answer(reply, "tengo fiebre", sender="+12025550999")
    assert "Llámenos ahora" in text  # Spanish words, no patient: answered in Spanish
    [row] = inbound_rows(session)
    assert (row.patient_id, row.from_phone, row.needs_attention) == (None, "+12025550999", True)


# --- needs reading ------------------------------------------------------------------------


def test_question_is_told_when_a_nurse_reads_it_at_most_once_in_12_hours(
    reply: Reply, session: so.Session, clock: FakeClock, enrolled: EnrollmentResult
) -> None:
    # Friday 15:00 in New York: the clinic is open.
    [text] = answer(reply, "Can I take a shower?")
    assert text == (
        "Riverside Spine Center: Thank you. A nurse will read your message today. Nurses read "
        "messages Monday to Friday, 8:00 AM to 5:00 PM. If it is urgent, call (202) 555-0100; "
        "in an emergency call 911."
    )
    clock.advance(timedelta(hours=3))  # Friday 18:00: closed; still within 12 hours
    assert answer(reply, "Also, can I drive on Monday?") == []
    # An urgent reply is answered whatever the limit.
    assert "Please call us now" in answer(reply, "and now I have a fever")[0]
    clock.advance(timedelta(hours=9, minutes=1))  # Saturday 03:01: 12 hours have passed
    [later] = answer(reply, "hello?")
    assert "when the clinic opens, on Monday at 8:00 AM" in later
    kinds = [(r.triage, r.answer_kind) for r in inbound_rows(session)]
    assert kinds == [
        ("reading", "reading"),
        ("reading", None),
        ("urgent", "urgent"),
        ("reading", "reading"),
    ]
    assert all(r.needs_attention for r in inbound_rows(session))


def test_reading_answer_in_spanish_names_the_hours_and_the_zone_when_it_differs(
    client: FlaskClient,
    twilio_runtime: Runtime,
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
) -> None:
    enroll(language="es", timezone="America/Chicago")
    token = twilio_runtime.settings.twilio_auth_token or ""
    _, xml = post_signed(client, "/twilio/inbound", reply_form("¿Puedo bañarme?"), token=token)
    [text] = twiml_messages(xml)
    assert "Una enfermera leerá su mensaje hoy" in text
    assert "de lunes a viernes, de 8:00 a. m. a 5:00 p. m. (EST)" in text


# --- pain below 7, closing ----------------------------------------------------------------


def test_low_pain_score_is_thanked_and_not_queued(
    reply: Reply, session: so.Session, pain_checked: EnrollmentResult
) -> None:
    [text] = answer(reply, "3")
    assert "we recorded your pain score of 3 of 10" in text
    assert "call (202) 555-0100" in text and "call 911" in text
    [row] = inbound_rows(session)
    assert (row.triage, row.needs_attention, row.answer_kind) == ("recorded", False, "pain")


@pytest.mark.parametrize("body", ["thanks!", "OK", "gracias", "\N{THUMBS UP SIGN}"])
def test_closing_reply_is_recorded_not_queued_not_answered(
    body: str, reply: Reply, session: so.Session, enrolled: EnrollmentResult
) -> None:
    assert answer(reply, body) == []
    [row] = inbound_rows(session)
    assert (row.kind, row.triage, row.needs_attention, row.answer_body) == (
        "closing",
        "closing",
        False,
        None,
    )


# --- keywords -----------------------------------------------------------------------------


def test_help_gives_the_emergency_number_of_the_settings_with_correct_spanish(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Callable[..., EnrollmentResult],
) -> None:
    enroll(language="es")
    result = record_inbound(
        session=session,
        provider_sid="SMhelp1",
        from_phone=PHONE,
        body="AYUDA",
        opt_out_type=None,
        care=replace(care, emergency_number="112"),
        clinic_hours=parse_clinic_hours("Mon-Fri 08:00-17:00"),
        clinic_zone="America/New_York",
        now=clock.now(),
    )
    assert result.reply == (
        "Riverside Spine Center: mensajes de cuidados después de su procedimiento. "
        "¿Preguntas? Llame al (202) 555-0100. En una emergencia llame al 112. Responda STOP "
        "para no recibir más."
    )
    assert "911" not in (result.reply or "")


def test_help_in_english_names_the_emergency_number(
    reply: Reply, enrolled: EnrollmentResult
) -> None:
    [text] = answer(reply, "HELP")
    assert "In an emergency call 911." in text and "Questions? Call (202) 555-0100" in text


@pytest.mark.parametrize("word", ["PARAR", "alto", "Cancelar"])
def test_spanish_stop_words_opt_out_and_are_confirmed(
    word: str, reply: Reply, session: so.Session, spanish: EnrollmentResult
) -> None:
    [text] = answer(reply, word)
    assert text == (
        "Riverside Spine Center: No recibirá más mensajes de seguimiento. Para volver a "
        "recibirlos, responda START. En una emergencia llame al 911."
    )
    assert patient(session, spanish).opted_out_at is not None
    texts = messages(session)
    assert texts["no-driving"].status == SENT
    assert {t.status for step, t in texts.items() if step != "no-driving"} == {CANCELLED}
    [row] = inbound_rows(session)
    assert (row.kind, row.triage, row.needs_attention) == ("stop", "keyword", False)


def test_spanish_stop_word_that_twilio_handled_is_not_confirmed_twice(
    reply: Reply, session: so.Session, spanish: EnrollmentResult
) -> None:
    # Advanced Opt-Out with PARAR as a custom word: Twilio sends its own confirmation.
    assert answer(reply, "PARAR", OptOutType="STOP") == []
    assert patient(session, spanish).opted_out_at is not None


def test_english_stop_is_left_to_the_carrier(reply: Reply, enrolled: EnrollmentResult) -> None:
    assert answer(reply, "STOP") == []


def test_a_retried_urgent_reply_is_answered_the_same_and_stored_once(
    client: FlaskClient, twilio_runtime: Runtime, session: so.Session, enrolled: EnrollmentResult
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = reply_form("my leg is numb")
    first = post_signed(client, "/twilio/inbound", form, token=token)
    second = post_signed(client, "/twilio/inbound", form, token=token)
    assert twiml_messages(first[1]) == twiml_messages(second[1]) != []
    assert len(inbound_rows(session)) == 1


def test_answers_and_triage_leave_no_phone_or_words_in_the_logs(
    reply: Reply, enrolled: EnrollmentResult, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for body in ("my leg is numb", "Can I shower?", "PARAR", "gracias"):
        reply(body)
    assert "triage=urgent" in caplog.text
    for secret in (PHONE, PHONE[2:], "numb", "shower", "gracias", "Moreno"):
        assert secret not in caplog.text


def test_every_reply_kind_on_the_clock_of_the_reply(
    reply: Reply, session: so.Session, clock: FakeClock, enrolled: EnrollmentResult
) -> None:
    clock.set(datetime(2026, 3, 7, 2, 0, tzinfo=UTC))  # Friday 21:00 local: closed
    [text] = answer(reply, "what should I expect tomorrow?")
    assert "when the clinic opens, on Monday at 8:00 AM" in text
    [row] = inbound_rows(session)
    assert row.received_at == datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


def test_reading_answer_says_the_clinics_opening_on_the_patients_own_day_and_clock(
    client: FlaskClient,
    twilio_runtime: Runtime,
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    clock: FakeClock,
) -> None:
    """A patient in Honolulu texts on Monday at 8 PM there: Tuesday 01:00 in New York, where
    the clinic opens at 8:00. They were told "when the clinic opens, today at 8:00 AM": on
    their Monday evening, an opening that had passed. It is tomorrow at 3:00 AM their time."""
    enroll(timezone="Pacific/Honolulu", completed_at="2026-03-06T08:00")
    clock.set(datetime(2026, 11, 17, 6, 0, tzinfo=UTC))  # Mon 20:00 HST, Tue 01:00 EST
    token = twilio_runtime.settings.twilio_auth_token or ""
    _, xml = post_signed(client, "/twilio/inbound", reply_form("Can I shower?"), token=token)
    [text] = twiml_messages(xml)
    assert (
        "A nurse will read your message when the clinic opens, tomorrow at 3:00 AM (your time)."
        in text
    )
    assert "Monday to Friday, 8:00 AM to 5:00 PM (EST)" in text
