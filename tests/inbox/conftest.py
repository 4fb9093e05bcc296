"""Fixtures for the queue and alerts: a real SMTP server (aiosmtpd) on 127.0.0.1, settings
that alert on-call staff through it and through the fake Twilio."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from aiosmtpd.controller import Controller
from flask.testing import FlaskClient

from followup.inbox.models import StaffAlert
from followup.messaging.models import InboundMessage
from followup.runtime import Runtime
from followup.settings import Settings
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import (  # noqa: F401 - fixtures for the tests here
    PUBLIC_BASE_URL,
    client,
    post_signed,
    reply_form,
    twilio_fake,
    twilio_runtime,
    twilio_settings,
    twilio_transport,
)

ONCALL = "+12025550111"
ESCALATION = "+12025550122"
ALERT_EMAIL = "oncall@clinic.example"
REFUSED_EMAIL = "nobody@clinic.example"


@dataclass
class SmtpSink:
    """What the SMTP server received; addresses in `refuse` are answered 550."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    url: str
    sink: SmtpSink

    def bodies(self) -> list[str]:
        """Each e-mail's text, transfer encoding undone."""
        found = []
        for _, message in self.sink.messages:
            payload = message.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append(payload.decode(message.get_content_charset() or "utf-8"))
        return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""
    sink = SmtpSink(refuse={REFUSED_EMAIL})
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(url=f"smtp://127.0.0.1:{port}", sink=sink)
    finally:
        controller.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp_server: SmtpServer) -> Settings:
    """The clinic's settings with on-call, escalation and e-mail alerts configured."""
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        clinic_name="Riverside Spine Center",
        clinic_phone="(202) 555-0100",
        oncall_phone=ONCALL,
        escalation_phone=ESCALATION,
        alert_email=(ALERT_EMAIL,),
        smtp_url=smtp_server.url,
        escalate_after_minutes=15,
    )


ALERT = f"1 urgent reply waiting: {PUBLIC_BASE_URL}/attention"


@pytest.fixture
def urgent_reply(
    client: FlaskClient,  # noqa: F811 - the fixture imported above
    twilio_runtime: Runtime,  # noqa: F811
    enroll: Any,
    session: so.Session,
) -> int:
    """Ada Moreno texts that her leg is numb, through the signed webhook; the reply's id."""
    enroll(first_name="Ada", last_name="Moreno")
    token = twilio_runtime.settings.twilio_auth_token or ""
    status, _ = post_signed(client, "/twilio/inbound", reply_form("my leg is numb"), token=token)
    assert status == 200
    return int(session.scalars(sa.select(InboundMessage.id)).one())


def alert_rows(session: so.Session) -> list[tuple[int, str, str, str]]:
    """(round, channel, recipient, status) of every alert, oldest first."""
    session.expire_all()
    return [
        (a.round, a.channel, a.recipient, a.status)
        for a in session.scalars(sa.select(StaffAlert).order_by(StaffAlert.id))
    ]


def sms_to(twilio_fake: FakeTwilio, number: str) -> list[str]:  # noqa: F811
    """The bodies of the texts the fake Twilio was asked to send to `number`."""
    return [f["Body"] for f in twilio_fake.creates() if f["To"] == number]
