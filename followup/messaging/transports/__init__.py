"""SMS transports, chosen by the SMS_TRANSPORT setting."""

from __future__ import annotations

from typing import TextIO

from followup.errors import ConfigurationError
from followup.messaging.transports.base import SmsTransport
from followup.settings import Settings


def build_transport(settings: Settings, *, stream: TextIO | None = None) -> SmsTransport:
    """Build the transport the settings name."""
    if settings.sms_transport == "console":
        from followup.messaging.transports.console import ConsoleTransport

        return ConsoleTransport(stream=stream, file_path=settings.sms_console_file)
    if settings.sms_transport == "twilio":
        try:
            from followup.messaging.transports.twilio import (  # type: ignore[import-not-found,unused-ignore]
                TwilioTransport,
            )
        except ImportError as exc:
            raise ConfigurationError("the Twilio transport is not available in this build") from exc
        transport: SmsTransport = TwilioTransport.from_settings(settings)
        return transport
    raise ConfigurationError(f"unknown SMS_TRANSPORT {settings.sms_transport!r}")
