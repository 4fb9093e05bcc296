"""The SMS transport protocol: one small interface, several implementations."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingSms:
    """One text to hand to the provider."""

    message_id: int
    step: str
    to: str  # E.164
    body: str
    now: datetime  # the instant it is handed over (the Clock, read just before the call)
    due_at: datetime | None = None  # when the text was due: lateness is now - due_at


@dataclass(frozen=True)
class SendResult:
    """The provider took the text."""

    provider_sid: str
    provider_status: str = "accepted"
    segments: int | None = None
    # The provider's error code, when a text looked up later has already failed there.
    error_code: int | None = None


class SendError(Exception):
    """The provider did not take the text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientSendError(SendError):
    """Worth retrying later: rate limits, queue full, 5xx, timeouts."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        maybe_sent: bool = False,
        throttled: bool = False,
    ) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after
        # The request may have reached the provider: reconcile before any retry.
        self.maybe_sent = maybe_sent
        # "Too many requests": the provider refused it unseen; slow down, do not back off.
        self.throttled = throttled


class PermanentSendError(SendError):
    """Retrying cannot help: invalid number, landline, unreachable handset."""

    def __init__(self, code: str, message: str, *, opted_out: bool = False) -> None:
        super().__init__(code, message)
        # The recipient has told the carrier STOP: no text may go to them.
        self.opted_out = opted_out


class CannotTell(LookupError):
    """The provider answered, but its answer cannot say whether it has the text, and asking
    again will not change that (more texts to the number since the hand-over than a scan
    reads: they only accumulate). The text is held for a person, never resent on it."""


class SmsTransport(Protocol):
    """Implementations are called from several threads at once (the dispatcher's pool)."""

    name: str

    def send(self, sms: OutgoingSms) -> SendResult:
        """Hand one text to the provider; raise TransientSendError or PermanentSendError."""
        ...

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        """Find a text the provider already has (to, body, created since), other than the
        SIDs in `exclude`; None if none.

        Raise NotImplementedError when the provider cannot be asked.
        """
        ...


def mask_phone(phone: str | None) -> str:
    """Mask a phone number for logs: +1******0123."""
    if not phone:
        return "-"
    digits = phone[1:] if phone.startswith("+") else phone
    if len(digits) <= 4:
        return "*" * len(digits)
    country = digits[:1] if phone.startswith("+") else ""
    hidden = len(digits) - len(country) - 4
    return ("+" if phone.startswith("+") else "") + country + "*" * hidden + digits[-4:]
