"""Delivery reports that do not simply move a text forward: a failure that passes (30001)
retries the text, and reports held for a SID are applied whatever else is held."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import EXPIRED, PENDING, SENT, HeldStatusReport, Message
from followup.messaging.reconcile import reap_stale
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import post_signed
from tests.messaging.helpers import dispatch, messages

PHONE = "+12025550143"


def _status(
    client: FlaskClient, runtime: Runtime, sid: str, status: str, code: int | None = None
) -> int:
    form = {
        "AccountSid": "AC" + "f" * 32,
        "MessageSid": sid,
        "MessageStatus": status,
        "To": PHONE,
        **({"ErrorCode": str(code)} if code is not None else {}),
    }
    token = runtime.settings.twilio_auth_token or ""
    return post_signed(client, "/twilio/status", form, token=token)[0]


# --- 1. a "failed" report with a transient error code (30001, queue overflow) ---------------


def test_a_failed_report_with_queue_overflow_30001_is_retried_like_the_error_table_says(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_fake: FakeTwilio,
    twilio_transport: TwilioTransport,
    twilio_runtime: Runtime,
    client: FlaskClient,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # errors.py: "A code that reaches us when a text is created (an API error) or later in
    # a status callback (ErrorCode) means the same thing either way"; README: 30001 (queue
    # full) is "retried with exponential backoff and jitter ... until the text's window
    # closes". 30001 is a delivery error Twilio reports asynchronously: Twilio dropped the
    # text from its queue, the patient never got it. The no-driving text's window is open
    # for hours yet.
    enroll()
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.status == SENT and text.provider_sid
    creates_before = len(twilio_fake.creates())

    first_sid = text.provider_sid
    clock.advance(timedelta(seconds=20))
    assert _status(client, twilio_runtime, first_sid, "failed", 30001) == 200
    text = messages(session)["no-driving"]
    assert (text.status, text.provider_sid, text.error_code) == (PENDING, None, "30001")

    # Not before its backoff (15-30 s after a first attempt).
    dispatch(session, twilio_transport, care, clock.now())
    assert len(twilio_fake.creates()) == creates_before

    # Past any backoff (at most 15 minutes), well inside the window (quiet hours start at
    # 21:00 local; it is 15:20 in New York).
    clock.advance(timedelta(minutes=20))
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert len(twilio_fake.creates()) == creates_before + 1, (
        f"not retried: {text.status}, {text.error_code} {text.error_message}"
    )
    assert text.status == SENT and text.provider_sid not in (None, first_sid)

    # Twilio calling back again about the failed copy changes nothing: that SID is no
    # longer the text's.
    assert _status(client, twilio_runtime, first_sid, "failed", 30001) == 200
    assert _status(client, twilio_runtime, first_sid, "sent") == 200
    again = messages(session)["no-driving"]
    assert (again.status, again.provider_sid) == (SENT, text.provider_sid)
    assert len(twilio_fake.creates()) == creates_before + 1


def test_a_failure_that_passes_reported_when_no_try_fits_the_window_expires_the_text(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_transport: TwilioTransport,
    twilio_runtime: Runtime,
    client: FlaskClient,
    care: CareContext,
    clock: FakeClock,
) -> None:
    # Seconds before the window closes, a retry cannot go out in it: the patient got
    # nothing, and the text expires with the provider's reason, as the same refusal at the
    # create expires it (a critical one reaches the nurses: expired is one of its problems).
    enroll()
    dispatch(session, twilio_transport, care, clock.now())
    text = messages(session)["no-driving"]
    assert text.provider_sid is not None
    clock.set(text.expires_at - timedelta(seconds=3))
    assert _status(client, twilio_runtime, text.provider_sid, "failed", 30001) == 200
    text = messages(session)["no-driving"]
    assert (text.status, text.error_code, text.provider_sid) == (EXPIRED, "30001", None)
    assert "no retry fits" in (text.error_message or "")


# --- 2. held reports: a matched one is applied behind any number of unmatched ones --------


def test_a_held_report_whose_text_is_recorded_is_applied_behind_500_unmatched_ones(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_transport: TwilioTransport,
    twilio_runtime: Runtime,
    client: FlaskClient,
    clock: FakeClock,
) -> None:
    # 500 reports no text of ours will ever take (a Messaging Service's own Status Callback
    # set to /twilio/status, as the README allows, for another sender's texts; first copies
    # of texts sent again): each is kept a day.
    enroll()
    for i in range(500):
        session.add(
            HeldStatusReport(
                provider_sid=f"SMother{i:028d}", status="delivered", received_at=clock.now()
            )
        )
    session.commit()
    clock.advance(timedelta(minutes=1))
    # A text whose SID was recorded after its failure was reported (the README's case: a
    # report that came while the SID was being committed, left for the reaper).
    text = messages(session)["no-driving"]
    sid = "SM" + "a" * 32
    assert _status(client, twilio_runtime, sid, "undelivered", 30003) == 200
    session.execute(
        sa.update(Message)
        .where(Message.id == text.id)
        .values(status=SENT, provider_sid=sid, sent_at=clock.now(), to_phone=PHONE)
    )
    session.commit()

    clock.advance(timedelta(seconds=20))
    report = reap_stale(session=session, transport=twilio_transport, now=clock.now())

    assert report.early_reports_applied == 1
    text = messages(session)["no-driving"]
    assert (text.status, text.error_code) == ("undelivered", "30003")
