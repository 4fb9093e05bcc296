"""POST /twilio/status: signed, forward-only, every report kept; and the status poller."""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import (
    CANCELLED,
    DELIVERED,
    FAILED,
    SENT,
    UNDELIVERED,
    Message,
    MessageEvent,
)
from followup.messaging.status import record_status_callback
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from followup.sendlog.service import LogFilter, iter_log, write_csv
from jobs import tasks
from jobs.scheduler import JOBS
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import PUBLIC_BASE_URL, post_signed
from tests.messaging.helpers import dispatch, event_details, messages

PHONE = "+12025550143"


@pytest.fixture
def sent(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> Message:
    """The patient's first text, sent through the fake Twilio (status `sent`, with a SID)."""
    enroll(blood_thinner="warfarin")
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT and text.provider_sid
    return text


def callback(sid: str, status: str, error_code: int | None = None) -> dict[str, str]:
    """The form Twilio posts to a StatusCallback."""
    form = {
        "AccountSid": "AC" + "f" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+12025550199",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": PHONE,
    }
    if error_code is not None:
        form["ErrorCode"] = str(error_code)
    return form


def csv_status(session: so.Session) -> dict[str, str]:
    out = io.StringIO()
    write_csv(iter_log(session=session, log_filter=LogFilter()), out)
    rows = [line.split(",") for line in out.getvalue().splitlines()]
    header = rows[0]
    return {r[header.index("step")]: r[header.index("status")] for r in rows[1:]}


def callback_events(session: so.Session, message_id: int) -> list[str]:
    return event_details(session, message_id, "status-callback")


# --- the signature ------------------------------------------------------------------------


def test_status_callback_signed_delivered_marks_the_text_delivered(
    client: FlaskClient, session: so.Session, sent: Message, twilio_runtime: Runtime
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    status, _ = post_signed(
        client, "/twilio/status", callback(sent.provider_sid or "", "delivered"), token=token
    )
    assert status == 200
    text = messages(session)["no-driving"]
    assert text.status == DELIVERED
    assert text.delivered_at == twilio_runtime.clock.now()
    assert csv_status(session)["no-driving"] == DELIVERED
    assert callback_events(session, text.id) == ["provider status delivered"]


@pytest.mark.parametrize("how", ["forged", "missing", "other-url", "tampered"])
def test_status_callback_without_a_valid_signature_is_refused_and_changes_nothing(
    how: str,
    client: FlaskClient,
    session: so.Session,
    sent: Message,
    twilio_runtime: Runtime,
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = callback(sent.provider_sid or "", "delivered")
    before = session.scalar(sa.select(sa.func.count()).select_from(MessageEvent))
    if how == "missing":
        status = client.post("/twilio/status", data=form).status_code
    elif how == "forged":
        status, _ = post_signed(client, "/twilio/status", form, token=token, forged=True)
    elif how == "other-url":
        # Signed for the URL this process sees behind the proxy, not the public one.
        status, _ = post_signed(
            client, "/twilio/status", form, token=token, url="http://localhost/twilio/status"
        )
    else:
        from tests.messaging.conftest import signature

        sig = signature(token, PUBLIC_BASE_URL + "/twilio/status", form)
        tampered = {**form, "MessageStatus": "failed", "ErrorCode": "30006"}
        status = client.post(
            "/twilio/status", data=tampered, headers={"X-Twilio-Signature": sig}
        ).status_code
    assert status == 403
    text = messages(session)["no-driving"]
    assert text.status == SENT
    assert csv_status(session)["no-driving"] == SENT
    assert session.scalar(sa.select(sa.func.count()).select_from(MessageEvent)) == before


def test_status_callback_is_refused_when_public_base_url_is_not_set(
    session: so.Session, sent: Message, twilio_runtime: Runtime
) -> None:
    from dataclasses import replace

    from followup.app import create_app

    runtime = replace(
        twilio_runtime, settings=replace(twilio_runtime.settings, public_base_url=None)
    )
    client = create_app(runtime.settings, runtime=runtime).test_client()
    token = runtime.settings.twilio_auth_token or ""
    status, _ = post_signed(
        client, "/twilio/status", callback(sent.provider_sid or "", "delivered"), token=token
    )
    assert status == 403
    assert messages(session)["no-driving"].status == SENT


def test_status_callback_for_an_unknown_sid_is_logged_and_answered_200(
    client: FlaskClient,
    session: so.Session,
    sent: Message,
    twilio_runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    token = twilio_runtime.settings.twilio_auth_token or ""
    unknown = "SM" + "0" * 32
    status, _ = post_signed(client, "/twilio/status", callback(unknown, "delivered"), token=token)
    assert status == 200
    assert unknown in caplog.text
    assert PHONE not in caplog.text and PHONE[2:] not in caplog.text
    assert messages(session)["no-driving"].status == SENT


# --- forward only -------------------------------------------------------------------------


def test_status_callback_late_sent_after_delivered_is_ignored_but_kept(
    client: FlaskClient, session: so.Session, sent: Message, twilio_runtime: Runtime
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    sid = sent.provider_sid or ""
    for status in ("delivered", "sent", "delivered", "queued"):
        assert post_signed(client, "/twilio/status", callback(sid, status), token=token)[0] == 200
    text = messages(session)["no-driving"]
    assert text.status == DELIVERED
    assert callback_events(session, text.id) == [
        "provider status delivered",
        "provider status sent; kept delivered",
        "provider status delivered; kept delivered",
        "provider status queued; kept delivered",
    ]


def test_status_callback_failure_records_its_error_code(
    client: FlaskClient, session: so.Session, sent: Message, twilio_runtime: Runtime
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = callback(sent.provider_sid or "", "undelivered", 30006)
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 200
    text = messages(session)["no-driving"]
    assert (text.status, text.error_code) == (UNDELIVERED, "30006")
    assert text.error_message == "landline or unreachable carrier"
    assert callback_events(session, text.id) == ["provider status undelivered; error 30006"]


def test_status_callback_21610_opts_the_patient_out(
    client: FlaskClient, session: so.Session, sent: Message, twilio_runtime: Runtime
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = callback(sent.provider_sid or "", "failed", 21610)
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 200
    texts = messages(session)
    assert texts["no-driving"].status == FAILED
    assert {t.status for step, t in texts.items() if step != "no-driving"} == {CANCELLED}
    patient = session.get(Patient, sent.patient_id)
    assert patient is not None and patient.opted_out_at is not None


LIFECYCLES = [
    ([("queued", None), ("sending", None), ("sent", None), ("delivered", None)], DELIVERED),
    ([("queued", None), ("sending", None), ("sent", None), ("undelivered", 30005)], UNDELIVERED),
    ([("queued", None), ("sending", None), ("failed", 30006)], FAILED),
    # A handset's receipt, then the carrier's failure: it was not delivered after all (and
    # the dashboard must not count it both delivered and failed).
    ([("sent", None), ("delivered", None), ("undelivered", 30003)], UNDELIVERED),
]


def test_status_callbacks_in_any_order_end_in_the_right_final_status(
    session: so.Session, sent: Message, clock: FakeClock
) -> None:
    sid = sent.provider_sid or ""
    tried = 0
    for lifecycle, final in LIFECYCLES:
        # Every order, with one callback delivered twice (Twilio retries).
        for order in itertools.permutations(lifecycle):
            for reports in (order, (*order, order[0])):
                session.execute(
                    sa.update(Message)
                    .where(Message.id == sent.id)
                    .values(status=SENT, delivered_at=None, error_code=None, error_message=None)
                )
                session.commit()
                for status, code in reports:
                    record_status_callback(
                        session=session,
                        provider_sid=sid,
                        status=status,
                        error_code=code,
                        now=clock.now(),
                    )
                    session.commit()
                text = messages(session)["no-driving"]
                assert text.status == final, reports
                assert (text.delivered_at is not None) == (final == DELIVERED)
                tried += 1
    assert tried == 2 * (24 + 24 + 6 + 6)


# --- the poller ---------------------------------------------------------------------------


def test_status_poller_is_a_scheduled_job() -> None:
    assert ("poll-statuses", tasks.poll_statuses) in [(name, job) for name, job, _ in JOBS]


def test_status_poller_asks_twilio_about_texts_stuck_in_sent(
    session: so.Session,
    sent: Message,
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    clock: FakeClock,
) -> None:
    assert twilio_runtime.settings.status_poll_after_minutes == 30
    twilio_fake.set_status(sent.provider_sid or "", "delivered")  # its callback was lost

    clock.advance(timedelta(minutes=29))
    assert tasks.poll_statuses(twilio_runtime).checked == 0
    assert not [r for r in twilio_fake.requests if r.path.endswith(f"{sent.provider_sid}.json")]

    clock.advance(timedelta(minutes=2))
    report = tasks.poll_statuses(twilio_runtime)
    assert (report.checked, report.changed) == (1, 1)
    text = messages(session)["no-driving"]
    assert text.status == DELIVERED
    assert event_details(session, text.id, "status-polled") == ["provider status delivered"]


def test_status_poller_waits_again_when_twilio_still_says_sent(
    session: so.Session,
    sent: Message,
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    clock: FakeClock,
) -> None:
    sid = sent.provider_sid or ""
    twilio_fake.set_status(sid, "sent")
    clock.advance(timedelta(minutes=31))
    assert tasks.poll_statuses(twilio_runtime).checked == 1
    clock.advance(timedelta(minutes=5))
    assert tasks.poll_statuses(twilio_runtime).checked == 0  # not asked again so soon
    twilio_fake.set_status(sid, "undelivered", error_code=30005)
    clock.advance(timedelta(minutes=30))
    assert tasks.poll_statuses(twilio_runtime).changed == 1
    text = messages(session)["no-driving"]
    assert (text.status, text.error_code) == (UNDELIVERED, "30005")


def test_status_poller_does_nothing_for_the_console_transport(
    runtime: Runtime, sent: Message, clock: FakeClock
) -> None:
    clock.advance(timedelta(hours=1))
    assert tasks.poll_statuses(runtime).checked == 0  # the scripted transport cannot be asked
