"""SMTP_URL: the mailer's sender, credentials and errors, against a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from followup.inbox.alerts import MailError
from followup.inbox.mail import SmtpMailer, build_mailer
from followup.settings import Settings
from tests.inbox.conftest import SmtpSink, _free_port

USER, PASSWORD = "alerts@clinic.example", "p@ss word"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture
def auth_server() -> Iterator[tuple[int, SmtpSink]]:
    sink = SmtpSink()
    port = _free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port, sink
    finally:
        controller.stop()


def test_mailer_signs_in_with_the_url_credentials_and_sender(
    auth_server: tuple[int, SmtpSink],
) -> None:
    port, sink = auth_server
    mailer = SmtpMailer.from_url(
        f"smtp://alerts%40clinic.example:p%40ss%20word@127.0.0.1:{port}?from=oncall-bot@clinic.example"
    )
    mailer.send(to="nurse@clinic.example", subject="urgent patient reply waiting", body="1 urgent")
    [(to, message)] = sink.messages
    assert to == ["nurse@clinic.example"]
    assert message["From"] == "oncall-bot@clinic.example"
    assert message["Subject"] == "urgent patient reply waiting"


def test_mailer_with_wrong_credentials_says_so_and_may_retry(
    auth_server: tuple[int, SmtpSink],
) -> None:
    port, sink = auth_server
    mailer = SmtpMailer.from_url(f"smtp://alerts%40clinic.example:wrong@127.0.0.1:{port}")
    with pytest.raises(MailError, match="refused the SMTP_URL credentials") as excinfo:
        mailer.send(to="nurse@clinic.example", subject="s", body="b")
    assert not excinfo.value.permanent
    assert sink.messages == []


@pytest.mark.parametrize(
    ("url", "public", "scheme", "port", "sender"),
    [
        ("smtp://mail.clinic.example", None, "smtp", 25, "followup@localhost"),
        ("smtps://u:p@mail.clinic.example", None, "smtps", 465, "followup@localhost"),
        ("smtp+starttls://alerts%40x.org:p@mail:2525", None, "smtp+starttls", 2525, "alerts@x.org"),
        (
            "smtp://mail",
            "https://followup.clinic.example",
            "smtp",
            25,
            "followup@followup.clinic.example",
        ),
    ],
)
def test_mailer_reads_smtp_url(
    url: str, public: str | None, scheme: str, port: int, sender: str
) -> None:
    mailer = SmtpMailer.from_url(url, public_base_url=public)
    assert (mailer.scheme, mailer.port, mailer.sender) == (scheme, port, sender)
    assert "password=" not in repr(mailer)  # never printed


def test_no_mailer_without_alert_email() -> None:
    assert build_mailer(Settings(smtp_url="smtp://mail")) is None
    assert build_mailer(Settings(alert_email=("a@b.org",), smtp_url="smtp://mail")) is not None
