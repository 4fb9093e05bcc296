"""POST /twilio/inbound: STOP, START, HELP, pain scores and warning signs, stored once each."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import CANCELLED, PENDING, SENT, InboundMessage
from followup.messaging.replies import classify_reply
from followup.messaging.tick import run_tick
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import PAIN_CHECK_AT, PHONE, post_signed, reply_form
from tests.messaging.helpers import dispatch, event_details, messages


def inbound_rows(session: so.Session) -> list[InboundMessage]:
    session.expire_all()
    return list(session.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)))


def patient(session: so.Session, result: EnrollmentResult) -> Patient:
    session.expire_all()
    found = session.get(Patient, result.patient.id)
    assert found is not None
    return found


def twiml_messages(body: str) -> list[str]:
    root = ET.fromstring(body)  # noqa: S314 - our own response
    assert root.tag == "Response"
    return [m.text or "" for m in root.iter("Message")]


# --- STOP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "STOP",
        "stop",
        "  Stop\n",
        "STOPALL",
        "unsubscribe",
        "CANCEL",
        "end",
        "QUIT",
        "Revoke",
        "OPTOUT",
    ],
)
def test_inbound_stop_keyword_opts_out_and_cancels_pending_texts(
    word: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, body = reply(word)
    assert status == 200
    assert twiml_messages(body) == []  # Twilio itself confirms the opt-out
    assert patient(session, enrolled).opted_out_at is not None
    texts = messages(session)
    assert texts["no-driving"].status == SENT
    assert {t.status for step, t in texts.items() if step != "no-driving"} == {CANCELLED}
    [row] = inbound_rows(session)
    assert (row.kind, row.needs_attention, row.patient_id) == ("stop", False, enrolled.patient.id)


@pytest.mark.parametrize("body", ["stop please", "don't stop", "STOP!", "S T O P"])
def test_inbound_stop_must_be_the_exact_keyword(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    assert reply(body)[0] == 200
    assert patient(session, enrolled).opted_out_at is None
    [row] = inbound_rows(session)
    assert (row.kind, row.needs_attention) == ("other", True)


def test_inbound_opt_out_type_from_twilio_is_honoured(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    # A Messaging Service with Advanced Opt-Out treats a custom word ("ARRET") as STOP.
    reply("ARRET", OptOutType="STOP")
    assert patient(session, enrolled).opted_out_at is not None
    reply("Reanudar", OptOutType="START")
    assert patient(session, enrolled).opted_out_at is None


# --- START --------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["START", "unstop", " Yes "])
def test_inbound_start_brings_back_the_texts_still_in_their_window(
    word: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    due_before = {step: t.due_at for step, t in messages(session).items()}
    reply("STOP")
    # Day 2, 02:00 UTC: the day-1 soreness text's window (until 20:00 local) has closed.
    clock.set(datetime(2026, 3, 8, 2, 0, tzinfo=UTC))
    status, body = reply(word)
    assert status == 200 and twiml_messages(body) == []
    assert patient(session, enrolled).opted_out_at is None
    texts = messages(session)
    assert texts["no-driving"].status == SENT  # never sent twice
    assert texts["soreness"].status == CANCELLED  # its time has passed: not sent late
    for step in ("blood-thinner-restart", "warning-signs", "pain-check"):
        assert texts[step].status == PENDING
        assert texts[step].due_at == due_before[step]
        assert event_details(session, texts[step].id, "replanned") == ["patient opted back in"]

    # The future texts go out at their times, each once.
    restart_at = datetime(2026, 3, 8, 18, 30, tzinfo=UTC)  # +48 h
    warning_at = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # day 3, 10:00 local (EDT)
    for instant in (restart_at, warning_at, PAIN_CHECK_AT):
        clock.set(instant)
        with session_factory() as other:
            run_tick(session=other, transport=twilio_transport, care=care, clock=clock, owner="w")
    texts = messages(session)
    for step in ("blood-thinner-restart", "warning-signs", "pain-check"):
        assert texts[step].status == SENT
    assert texts["soreness"].status == CANCELLED
    bodies = [f["Body"] for f in twilio_fake.creates()]
    assert len(bodies) == 4  # no-driving before STOP, then the three future texts
    assert not any("Soreness" in b for b in bodies)


def test_inbound_start_sends_an_open_window_text_now(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
    enrolled: EnrollmentResult,
) -> None:
    reply("STOP")
    clock.set(datetime(2026, 3, 7, 16, 0, tzinfo=UTC))  # day 1, 11:00 local: soreness is due
    reply("START")
    assert messages(session)["soreness"].status == PENDING
    dispatch(session, twilio_transport, care, clock.now())
    assert messages(session)["soreness"].status == SENT


def test_inbound_start_from_a_patient_who_never_stopped_changes_nothing(
    reply: Callable[..., tuple[int, str]], session: so.Session, enrolled: EnrollmentResult
) -> None:
    before = {step: (t.status, t.due_at) for step, t in messages(session).items()}
    reply("START")
    assert {step: (t.status, t.due_at) for step, t in messages(session).items()} == before


# --- HELP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["HELP", " help "])
def test_inbound_help_answers_with_the_clinic_name_and_phone(
    word: str,
    reply: Callable[..., tuple[int, str]],
    client: FlaskClient,
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    status, body = reply(word)
    assert status == 200
    [text] = twiml_messages(body)
    assert "Riverside Spine Center" in text
    assert "(202) 555-0100" in text
    assert patient(session, enrolled).opted_out_at is None
    [row] = inbound_rows(session)
    assert (row.kind, row.needs_attention) == ("help", False)


# --- pain scores and warning signs --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "score", "attention"),
    [("0", 0, False), ("3", 3, False), (" 6 ", 6, False), ("7", 7, True), ("10", 10, True)],
)
def test_inbound_number_after_the_pain_check_is_the_pain_score(
    body: str,
    score: int,
    attention: bool,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    assert reply(body)[0] == 200
    [row] = inbound_rows(session)
    assert (row.kind, row.pain_score, row.needs_attention) == ("pain", score, attention)
    assert row.patient_id == pain_checked.patient.id


@pytest.mark.parametrize("body", ["11", "-1", "3.5"])
def test_inbound_out_of_range_score_needs_attention(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    reply(body)
    [row] = inbound_rows(session)
    assert (row.kind, row.pain_score, row.needs_attention) == ("other", None, True)


def test_inbound_number_before_any_pain_check_is_not_a_score(
    reply: Callable[..., tuple[int, str]], session: so.Session, enrolled: EnrollmentResult
) -> None:
    reply("3")
    [row] = inbound_rows(session)
    assert (row.kind, row.pain_score, row.needs_attention) == ("other", None, True)


@pytest.mark.parametrize(
    "body",
    [
        "some BLEEDING where the needle went",
        "I have a fever",
        "my leg feels numb",
        "Weakness in my legs",
        "2 but feverish",
        # once taken as denials ("says not") or not understood: no alert
        "No I can't feel my legs",
        "the bleeding hasn't stopped",
        "lost control of my bowels",
        "temp 101",
    ],
)
def test_inbound_warning_words_need_attention(
    body: str,
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    reply(body)
    [row] = inbound_rows(session)
    assert (row.kind, row.triage, row.needs_attention) == ("symptom", "urgent", True)
    assert row.body == body


def test_inbound_short_answer_to_the_pain_check_is_an_urgent_score(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    pain_checked: EnrollmentResult,
) -> None:
    status, body = reply("It's a 9")
    [row] = inbound_rows(session)
    assert (row.kind, row.triage, row.pain_score, row.needs_attention) == (
        "pain",
        "urgent",
        9,
        True,
    )
    [answer] = twiml_messages(body)
    assert "call us now" in answer


def test_inbound_ordinary_message_needs_attention(
    reply: Callable[..., tuple[int, str]], session: so.Session, enrolled: EnrollmentResult
) -> None:
    reply("Thanks! Can I take a shower?")
    [row] = inbound_rows(session)
    assert (row.kind, row.needs_attention, row.patient_id) == ("other", True, enrolled.patient.id)


def test_classify_reply_keywords_need_no_nurse() -> None:
    assert classify_reply("Stop", opt_out_type=None, pain_check_sent=True).kind == "stop"
    assert classify_reply("5", opt_out_type=None, pain_check_sent=True).pain_score == 5
    assert classify_reply("5/10", opt_out_type=None, pain_check_sent=True).pain_score == 5
    assert classify_reply("anything", opt_out_type="help", pain_check_sent=False).kind == "help"


# --- storage ------------------------------------------------------------------------------


def test_inbound_from_an_unknown_sender_is_stored_and_flagged(
    reply: Callable[..., tuple[int, str]], session: so.Session, enrolled: EnrollmentResult
) -> None:
    assert reply("STOP", sender="+12025550999")[0] == 200
    [row] = inbound_rows(session)
    assert (row.patient_id, row.from_phone, row.needs_attention) == (None, "+12025550999", True)
    assert patient(session, enrolled).opted_out_at is None


def test_inbound_retried_webhook_is_stored_once(
    client: FlaskClient,
    twilio_runtime: Runtime,
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = reply_form("STOP")
    first = post_signed(client, "/twilio/inbound", form, token=token)
    cancelled = len(event_details(session, messages(session)["soreness"].id, "cancelled"))
    second = post_signed(client, "/twilio/inbound", form, token=token)
    assert first[0] == second[0] == 200
    [row] = inbound_rows(session)
    assert row.provider_sid == form["MessageSid"]
    assert cancelled == 1
    assert len(event_details(session, messages(session)["soreness"].id, "cancelled")) == 1


def test_inbound_retried_help_is_answered_again(
    client: FlaskClient, twilio_runtime: Runtime, session: so.Session, enrolled: EnrollmentResult
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = reply_form("HELP")
    first = post_signed(client, "/twilio/inbound", form, token=token)
    second = post_signed(client, "/twilio/inbound", form, token=token)
    assert twiml_messages(first[1]) == twiml_messages(second[1])
    assert len(inbound_rows(session)) == 1


@pytest.mark.parametrize("how", ["forged", "missing"])
def test_inbound_without_a_valid_signature_is_refused_and_stores_nothing(
    how: str,
    client: FlaskClient,
    twilio_runtime: Runtime,
    session: so.Session,
    enrolled: EnrollmentResult,
) -> None:
    form = reply_form("STOP")
    if how == "forged":
        token = twilio_runtime.settings.twilio_auth_token or ""
        status, _ = post_signed(client, "/twilio/inbound", form, token=token, forged=True)
    else:
        status = client.post("/twilio/inbound", data=form).status_code
    assert status == 403
    assert inbound_rows(session) == []
    assert patient(session, enrolled).opted_out_at is None


def test_inbound_logs_no_phone_number_or_body(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    enrolled: EnrollmentResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    reply("my leg feels numb")
    reply("STOP")
    assert "inbound" in caplog.text
    for secret in (PHONE, PHONE[2:], "numb"):
        assert secret not in caplog.text
