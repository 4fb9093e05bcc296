"""E-mail for staff alerts: the standard library's smtplib, configured by SMTP_URL.

smtp://host:25 (plain), smtp+starttls://user:password@host:587 (STARTTLS, the usual
submission port) or smtps://user:password@host:465 (TLS from the start). The sender is
the URL's ?from= address, else the user name when it is an address, else
followup@<the host of PUBLIC_BASE_URL>, else followup@localhost.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from followup.inbox.alerts import MailError
from followup.settings import Settings

SMTP_TIMEOUT_SECONDS = 10.0
_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class SmtpMailer:
    """Send one plain-text e-mail per call through one SMTP server."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "followup@localhost"
    timeout: float = SMTP_TIMEOUT_SECONDS

    @classmethod
    def from_url(cls, url: str, *, public_base_url: str | None = None) -> SmtpMailer:
        """Read SMTP_URL (already checked by the settings)."""
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        sender = (query.get("from") or [""])[0]
        if not sender and username and "@" in username:
            sender = username
        if not sender:
            host = urlsplit(public_base_url).hostname if public_base_url else None
            sender = f"followup@{host or 'localhost'}"
        return cls(
            scheme=parts.scheme,
            host=parts.hostname or "localhost",
            port=parts.port or _PORTS.get(parts.scheme, 25),
            username=username,
            password=password,
            sender=sender,
        )

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Send one e-mail; raise MailError (permanent for a 5xx refusal)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(body)
        # How far the e-mail got: "data" once its text is on its way (the server may then
        # take it whatever happens to its answer), "taken" once the server said so.
        progress: set[str] = set()
        try:
            if self.scheme == "smtps":
                context = ssl.create_default_context()
                with smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                ) as server:
                    self._deliver(server, message, progress)
            else:
                with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as server:
                    if self.scheme == "smtp+starttls":
                        server.starttls(context=ssl.create_default_context())
                    self._deliver(server, message, progress)
        except (smtplib.SMTPException, OSError) as exc:
            if "taken" in progress:
                return  # only the goodbye (QUIT) failed: the server has the e-mail
            if "data" in progress and not isinstance(exc, smtplib.SMTPResponseException):
                # No answer to the end of the e-mail (a timeout, a hang-up): the server may
                # have taken it, and a resend would alert the mailbox twice.
                raise MailError(
                    f"no answer from the mail server after the e-mail ({type(exc).__name__})",
                    permanent=False,
                    maybe_sent=True,
                ) from exc
            raise self._refused(exc) from exc

    @staticmethod
    def _refused(exc: smtplib.SMTPException | OSError) -> MailError:
        """The MailError for a failure before the server could have the e-mail."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            return MailError(
                f"the mail server refused the address (SMTP {codes[0] if codes else '?'})",
                permanent=all(code >= 500 for code in codes),
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return MailError(
                f"the mail server refused the e-mail (SMTP {exc.smtp_code})",
                permanent=exc.smtp_code >= 500,
            )
        return MailError(f"could not reach the mail server ({type(exc).__name__})", permanent=False)

    def _deliver(self, server: smtplib.SMTP, message: EmailMessage, progress: set[str]) -> None:
        if self.username:
            try:
                server.login(self.username, self.password or "")
            except smtplib.SMTPException as exc:
                # Some servers answer 535, others hang up after a wrong password.
                code = getattr(exc, "smtp_code", None)
                raise MailError(
                    "the mail server refused the SMTP_URL credentials"
                    + (f" (SMTP {code})" if code else ""),
                    permanent=False,
                ) from exc
        send = server.send

        def send_marked(payload: Any) -> None:
            # Commands go as text; the e-mail itself, after the server's "354 go ahead", as
            # bytes: from then on the server may have it, whatever becomes of its answer.
            if isinstance(payload, bytes | bytearray):
                progress.add("data")
            send(payload)

        server.send = send_marked  # type: ignore[method-assign, assignment]
        server.send_message(message)
        progress.add("taken")


def build_mailer(settings: Settings) -> SmtpMailer | None:
    """The mailer for ALERT_EMAIL, or None when no address is set."""
    if not settings.alert_email or not settings.smtp_url:
        return None
    return SmtpMailer.from_url(settings.smtp_url, public_base_url=settings.public_base_url)
