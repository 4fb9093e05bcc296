"""An alert e-mail the mail server took (the whole message, up to the final ".") but never
answered is not sent again: it may have gone, as an alert SMS whose request left for Twilio
without an answer is never resent.

A real SMTP server (aiosmtpd) keeps the message, then stalls past the mailer's timeout
before its "250" (a content scanner at end-of-data), or hangs up instead of answering.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from aiosmtpd.controller import Controller
from flask.testing import FlaskClient

from followup.clock import FakeClock
from followup.inbox.alerts import AlertSettings, run_alerts
from followup.inbox.mail import SmtpMailer
from followup.inbox.models import StaffAlert
from followup.messaging.models import InboundMessage
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.inbox.conftest import ALERT_EMAIL, _free_port
from tests.messaging.conftest import post_signed, reply_form

Enroll = Callable[..., EnrollmentResult]
MAILER_TIMEOUT = 0.5  # seconds: the mailer's wait for each answer (SMTP_TIMEOUT_SECONDS: 10)


@dataclass
class AcceptsThenFalls:
    """Keeps every message at end-of-data; the first one is then not answered: the server
    stalls until released (`stall`) or hangs up (`drop`)."""

    how: str
    messages: list[EmailMessage] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        if len(self.messages) == 1:
            if self.how == "drop":
                server.transport.close()
            else:
                # Past the client's timeout; released by the test once the client gave up.
                for _ in range(400):
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.025)
        return "250 Message accepted for delivery"


@pytest.fixture(params=["stall", "drop"])
def falling_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, AcceptsThenFalls]]:
    handler = AcceptsThenFalls(how=request.param)
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler
    finally:
        handler.release.set()
        controller.stop()


@pytest.fixture
def urgent_reply(
    client: FlaskClient, twilio_runtime: Runtime, enroll: Enroll, session: so.Session
) -> int:
    """Ada Moreno texts that her leg is numb, through the signed webhook; the reply's id."""
    enroll(first_name="Ada", last_name="Moreno")
    token = twilio_runtime.settings.twilio_auth_token or ""
    status, _ = post_signed(client, "/twilio/inbound", reply_form("my leg is numb"), token=token)
    assert status == 200
    return int(session.scalars(sa.select(InboundMessage.id)).one())


def test_an_alert_email_the_server_took_but_did_not_answer_is_not_sent_again(
    urgent_reply: int,
    twilio_runtime: Runtime,
    falling_server: tuple[str, AcceptsThenFalls],
    session: so.Session,
    clock: FakeClock,
) -> None:
    url, server = falling_server
    mailer = replace(SmtpMailer.from_url(url), timeout=MAILER_TIMEOUT)
    settings = replace(AlertSettings.from_settings(twilio_runtime.settings), oncall_phone=None)

    def run() -> None:
        run_alerts(
            session=session, settings=settings, sms=None, mailer=mailer, now=clock.now(),
            owner="worker-1",
        )  # fmt: skip

    run()
    server.release.set()  # the client has given up; the server may answer now (nobody reads)
    assert len(server.messages) == 1  # the server has the e-mail: the nurse will get it
    session.expire_all()
    [(status, error)] = session.execute(sa.select(StaffAlert.status, StaffAlert.error)).all()

    # The alerts job runs every 15 s; a retry would come a minute later.
    for _ in range(10):
        clock.advance(timedelta(minutes=1))
        run()
    assert [m["To"] for m in server.messages] == [ALERT_EMAIL], (
        f"the on-call mailbox got {len(server.messages)} copies of one alert e-mail: after the "
        f"server took the message without answering it was recorded {status!r} ({error}) "
        "and sent again"
    )
    session.expire_all()
    assert session.scalars(sa.select(StaffAlert.status)).one() != "retry"
