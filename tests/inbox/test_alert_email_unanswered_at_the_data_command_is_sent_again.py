"""An alert e-mail whose DATA command got no answer (the server stalled past the mailer's
timeout before its "354 go ahead", or hung up on the command) never reached the server:
the message text was never sent. It must be retried a minute later, as any e-mail the
server did not take.

84b7115 marks "the server may have it" as soon as `data()` is entered, i.e. before the
DATA command itself is answered: such an alert is recorded `unknown` ("may have gone:
not resent") and never sent again. The on-call mailbox never hears of the urgent reply
(a numb leg after a kyphoplasty).

A real SMTP server (aiosmtpd) whose first DATA command stalls (a milter or an overloaded
server at the DATA stage) or is hung up on; later ones are served normally.
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
from aiosmtpd.smtp import SMTP
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
class FallsAtData:
    """Keeps every message it gets whole; the first DATA command is not answered: the
    server stalls until released (`stall`) or hangs up (`drop`) before its 354."""

    how: str
    messages: list[EmailMessage] = field(default_factory=list)
    data_commands: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


class _Smtp(SMTP):
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command name
        handler: FallsAtData = self.event_handler
        handler.data_commands += 1
        if handler.data_commands == 1:
            if handler.how == "drop":
                assert self.transport is not None
                self.transport.close()
                return
            for _ in range(400):  # past the client's timeout; released by the test
                if handler.release.is_set():
                    break
                await asyncio.sleep(0.025)
            return  # the client has hung up: nobody reads an answer now
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _Smtp(self.handler, **self.SMTP_kwargs)


@pytest.fixture(params=["stall", "drop"])
def falling_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, FallsAtData]]:
    handler = FallsAtData(how=request.param)
    port = _free_port()
    controller = _Controller(handler, hostname="127.0.0.1", port=port)
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


def test_an_alert_email_whose_data_command_got_no_answer_is_sent_again(
    urgent_reply: int,
    twilio_runtime: Runtime,
    falling_server: tuple[str, FallsAtData],
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
    server.release.set()
    assert server.data_commands == 1 and server.messages == []  # the text never went
    session.expire_all()
    [(status, error)] = session.execute(sa.select(StaffAlert.status, StaffAlert.error)).all()

    # The alerts job runs every 15 s; a retry comes a minute later.
    for _ in range(10):
        clock.advance(timedelta(minutes=1))
        run()
    assert [m["To"] for m in server.messages] == [ALERT_EMAIL], (
        f"the on-call mailbox never got the alert: the server never had the e-mail (no "
        f"answer to the DATA command, the text was never sent) but it was recorded "
        f"{status!r} ({error}) and never sent again"
    )
