"""Fixtures for the Twilio tests: the fake Twilio, a real TwilioTransport pointed at it,
a runtime and a Flask test client using them, webhook signing, and signed replies from an
enrolled patient."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from followup.app import create_app
from followup.care.protocol import CareContext
from followup.clock import FakeClock, SystemClock
from followup.messaging.models import SENT, InboundMessage
from followup.messaging.transports.twilio import TwilioTransport
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import dispatch, messages

PUBLIC_BASE_URL = "https://followup.example.org"
FROM_NUMBER = "+12025550199"
PHONE = "+12025550143"  # the enrolled patient's number
# The pain check goes out on day 7 at 10:00 in New York (14:00 UTC, after the DST change).
PAIN_CHECK_AT = datetime(2026, 3, 13, 14, 0, tzinfo=UTC)


@pytest.fixture
def twilio_fake(clock: FakeClock) -> Iterator[FakeTwilio]:
    """A fake Twilio on 127.0.0.1 (a free port), timed by the test's clock."""
    with FakeTwilio(now=clock.now) as fake:
        yield fake


@pytest.fixture
def twilio_settings(settings: Settings, database_url: str, twilio_fake: FakeTwilio) -> Settings:
    return replace(
        settings,
        database_url=database_url,
        sms_transport="twilio",
        twilio_account_sid=twilio_fake.account_sid,
        twilio_auth_token=twilio_fake.auth_token,
        twilio_from_number=FROM_NUMBER,
        twilio_api_base_url=twilio_fake.base_url,
        twilio_timeout_seconds=2.0,
        public_base_url=PUBLIC_BASE_URL,
    )


@pytest.fixture
def twilio_transport(twilio_settings: Settings) -> Iterator[TwilioTransport]:
    transport = TwilioTransport.from_settings(twilio_settings)
    yield transport
    transport.close()


@pytest.fixture
def twilio_runtime(
    twilio_settings: Settings,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    clock: FakeClock,
    care: CareContext,
    twilio_transport: TwilioTransport,
) -> Runtime:
    return Runtime(
        settings=twilio_settings,
        clock=clock,
        engine=engine,
        session_factory=session_factory,
        care=care,
        transport=twilio_transport,
        owner="test-worker",
    )


@pytest.fixture
def client(twilio_runtime: Runtime) -> FlaskClient:
    app = create_app(twilio_runtime.settings, runtime=twilio_runtime)
    app.testing = True
    return app.test_client()


def signature(token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature for a form POST to `url`, computed as Twilio does."""
    return str(RequestValidator(token).compute_signature(url, dict(params)))


def post_signed(
    client: FlaskClient,
    path: str,
    params: Mapping[str, str],
    *,
    token: str,
    url: str | None = None,
    forged: bool = False,
) -> tuple[int, str]:
    """POST a webhook signed for PUBLIC_BASE_URL + path (or `url`); `forged` signs with a
    wrong token. Returns the status code and the body."""
    signed_url = url or PUBLIC_BASE_URL + path
    sig = signature(("not-" + token) if forged else token, signed_url, params)
    response = client.post(path, data=dict(params), headers={"X-Twilio-Signature": sig})
    return response.status_code, response.get_data(as_text=True)


# --- replies: a patient who has been texted, and signed replies from them ------------------


def reply_form(body: str, *, sender: str = PHONE, **extra: str) -> dict[str, str]:
    """The form Twilio posts to a number's incoming-message webhook."""
    return {
        "AccountSid": "AC" + "f" * 32,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": sender,
        "MessageSid": "SM" + secrets.token_hex(16),
        "NumMedia": "0",
        "SmsSid": "",
        "To": "+12025550199",
        **extra,
    }


@pytest.fixture
def reply(client: FlaskClient, twilio_runtime: Runtime) -> Callable[..., tuple[int, str]]:
    token = twilio_runtime.settings.twilio_auth_token or ""

    def _reply(body: str, **extra: str) -> tuple[int, str]:
        return post_signed(client, "/twilio/inbound", reply_form(body, **extra), token=token)

    return _reply


@dataclass(frozen=True)
class Triaged:
    """A reply as stored (its triage, reason, pain score) and the texts answered to it."""

    row: InboundMessage
    texts: list[str]


@pytest.fixture
def triaged(reply: Callable[..., tuple[int, str]], session: so.Session) -> Callable[[str], Triaged]:
    """Send one reply through the signed webhook; the stored reply and its answer."""

    def _triaged(body: str) -> Triaged:
        status, answer = reply(body)
        assert status == 200
        session.expire_all()
        [row] = session.scalars(sa.select(InboundMessage)).all()
        root = ET.fromstring(answer) if answer else None  # noqa: S314 - our own response
        return Triaged(
            row, [m.text or "" for m in root.iter("Message")] if root is not None else []
        )

    return _triaged


@pytest.fixture
def enrolled(
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> EnrollmentResult:
    """A patient with a blood thinner whose first text has gone out."""
    result = enroll(blood_thinner="warfarin")
    dispatch(session, twilio_transport, care, clock.now())
    return result


@pytest.fixture
def pain_checked(
    enrolled: EnrollmentResult,
    session: so.Session,
    twilio_transport: TwilioTransport,
    care: CareContext,
    clock: FakeClock,
) -> EnrollmentResult:
    clock.set(PAIN_CHECK_AT)
    dispatch(session, twilio_transport, care, clock.now())
    assert messages(session)["pain-check"].status == SENT
    return enrolled


@pytest.fixture
def other_session(session_factory: so.sessionmaker[so.Session]) -> Iterator[so.Session]:
    """A second process's session (a nurse's request)."""
    with session_factory() as other:
        yield other


@pytest.fixture
def real_fake(twilio_fake: FakeTwilio) -> FakeTwilio:
    """The fake Twilio on the real clock (its creation times are real)."""
    twilio_fake.now = SystemClock().now
    return twilio_fake
