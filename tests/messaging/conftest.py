"""Fixtures for the Twilio tests: the fake Twilio, a real TwilioTransport pointed at it,
a runtime and a Flask test client using them, and webhook signing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from followup.app import create_app
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.transports.twilio import TwilioTransport
from followup.runtime import Runtime
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio

PUBLIC_BASE_URL = "https://followup.example.org"
FROM_NUMBER = "+12025550199"


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
