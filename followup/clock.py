"""Clock: the one place the service reads the time. Business code takes `now` instead."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that stands still until told to move: tests and `followup --now`."""

    def __init__(self, start: datetime) -> None:
        self._now = require_utc(start, "start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, instant: datetime) -> None:
        """Jump to `instant`."""
        with self._lock:
            self._now = require_utc(instant, "instant")

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by `delta` and return the new instant."""
        with self._lock:
            self._now = self._now + delta
            return self._now


def require_utc(value: datetime, name: str) -> datetime:
    """Return `value` in UTC; refuse a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)
