"""Twilio's webhooks check a request's size and each field's length before storing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.messaging.models import InboundMessage
from followup.messaging.views import MAX_WEBHOOK_BYTES
from followup.runtime import Runtime
from tests.messaging.conftest import post_signed

SID = "SM" + "0" * 32


def stored(session: so.Session) -> int:
    session.expire_all()
    return session.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) or 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MessageSid", "SM" + "f" * 200),
        ("From", "+1" + "2" * 40),
        ("Body", "x" * 1601),
    ],
)
def test_an_over_long_field_is_refused_before_storage(
    client: FlaskClient, twilio_runtime: Runtime, session: so.Session, field: str, value: str
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = {"MessageSid": SID, "From": "+12025550143", "Body": "ok", field: value}
    status, _ = post_signed(client, "/twilio/inbound", form, token=token)
    assert status == 400
    assert stored(session) == 0
    # The same reply with fields in bounds is stored.
    form[field] = {"MessageSid": SID, "From": "+12025550143", "Body": "x" * 1600}[field]
    status, _ = post_signed(client, "/twilio/inbound", form, token=token)
    assert status == 200 and stored(session) == 1


def test_an_over_long_status_sid_is_refused(client: FlaskClient, twilio_runtime: Runtime) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = {"MessageSid": "SM" + "a" * 100, "MessageStatus": "delivered"}
    assert post_signed(client, "/twilio/status", form, token=token)[0] == 400


def test_a_400_kb_signed_body_is_refused_unread(
    client: FlaskClient, twilio_runtime: Runtime, session: so.Session
) -> None:
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = {"MessageSid": SID, "From": "+12025550143", "Body": "x" * 400_000}
    status, _ = post_signed(client, "/twilio/inbound", form, token=token)
    assert status == 413
    assert stored(session) == 0
    assert MAX_WEBHOOK_BYTES < 400_000
