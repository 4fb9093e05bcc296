"""A transport for dispatcher tests: records what it is asked to send, fails on demand.

The real transports (console, Twilio against tests/fakes/twilio_server.py) have tests of
their own; this one lets a test script outcomes one call at a time.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from followup.care import gsm
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError


@dataclass
class ScriptedTransport:
    name: str = "scripted"
    sent: list[OutgoingSms] = field(default_factory=list)
    # Each call pops the next outcome: None = accept, an exception instance = raise it.
    outcomes: list[BaseException | None] = field(default_factory=list)
    # Texts the "provider" holds, for find_sent (reconciliation); None = cannot be asked.
    provider_has: list[tuple[str, str, str]] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # The dispatcher calls a transport from several threads at once.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._lock:
            outcome = self.outcomes.pop(0) if self.outcomes else None
            if outcome is not None:
                raise outcome
            self.sent.append(sms)
            sid = f"SM{next(self._ids):032d}"
            if self.provider_has is not None:
                self.provider_has.append((sms.to, sms.body, sid))
        return SendResult(
            provider_sid=sid, provider_status="queued", segments=gsm.segment_count(sms.body)
        )

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        if self.provider_has is None:
            raise NotImplementedError
        for have_to, have_body, sid in self.provider_has:
            if have_to == to and have_body == body and sid not in exclude:
                return SendResult(provider_sid=sid, provider_status="sent")
        return None

    def steps_sent(self) -> list[str]:
        return [sms.step for sms in self.sent]


class TooManyRequests(ScriptedTransport):
    """Twilio refusing every list request as too many (429, Retry-After 45 s)."""

    def __init__(self) -> None:
        super().__init__(provider_has=[])
        self.questions: list[str] = []  # appended from the reaper's look-up threads

    def find_sent(self, **kwargs: Any) -> SendResult | None:
        self.questions.append(kwargs["to"])
        raise TransientSendError("20429", "Too Many Requests", retry_after=45, throttled=True)
