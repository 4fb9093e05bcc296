"""How fast texts may be handed to the provider: a fixed cap, and slowing down on 429.

TWILIO_MAX_PER_SECOND caps a sender that has no Messaging Service queue (a token bucket a
tenth of a second deep: never more than 10% over the rate in any second). A "too many
requests" answer pauses every hand-over for Retry-After (or THROTTLE_PAUSE) and halves the
rate; the rate then grows back by RECOVERY a second while the provider accepts, up to the
cap (or back to no limit). The dispatcher asks the pacer before each hand-over, so a
throttled text costs no retry and no backoff of its own.

Real (monotonic) time, not the business Clock: this is about the provider's load now.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

THROTTLE_PAUSE = 1.0  # seconds to pause on a 429 without Retry-After
MAX_PAUSE = 60.0  # never trust a Retry-After to stop sending for longer than this at once
MIN_RATE = 1.0  # texts per second: the slowest a 429 can push us
RECOVERY = 1.25  # rate multiplier per second without a 429
UNLIMITED_ABOVE = 2_000.0  # back to no limit past this (no cap configured)
_WINDOW = 1.0  # seconds over which the recent hand-over rate is measured
BURST_SECONDS = 0.1  # tokens saved up at most: this many seconds' worth


class Pacer:
    """A thread-safe token bucket whose rate a 429 cuts and time restores."""

    def __init__(
        self,
        max_per_second: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_second is not None and max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self.cap = max_per_second
        self._rate = max_per_second  # None: no limit
        self._monotonic = monotonic
        now = monotonic()
        self._tokens = self._burst()
        self._refilled = now
        self._paused_until = now
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        self.throttles = 0  # how many 429s slowed us down (for reports and metrics)

    @property
    def rate(self) -> float | None:
        """Hand-overs a second allowed now (None: no limit)."""
        with self._lock:
            self._refill(self._monotonic())
            return self._rate

    def take(self, wanted: int) -> int:
        """Reserve up to `wanted` hand-overs that may start now; return how many."""
        if wanted <= 0:
            return 0
        with self._lock:
            now = self._monotonic()
            self._refill(now)
            if now < self._paused_until:
                return 0
            granted = wanted if self._rate is None else min(wanted, int(self._tokens + 1e-9))
            if self._rate is not None:
                self._tokens -= granted
            for _ in range(granted):
                self._recent.append(now)
            self._trim(now)
            return granted

    def wait_time(self) -> float:
        """Seconds until at least one hand-over may start (0 if one may start now)."""
        with self._lock:
            now = self._monotonic()
            self._refill(now)
            wait = max(self._paused_until - now, 0.0)
            if self._rate is not None and self._tokens < 1:
                wait = max(wait, (1 - self._tokens) / self._rate)
            return wait

    def paused(self) -> bool:
        """Whether the provider's "too many requests" pause is still on: no call starts."""
        with self._lock:
            return self._monotonic() < self._paused_until

    def throttled(self, retry_after: float | None = None) -> float:
        """The provider said "too many requests": pause, halve the rate; return the pause.
        Halved once a pause: the other calls already under way when the first 429 came
        were sent at the old rate, and each halving again took the rate to its floor."""
        with self._lock:
            now = self._monotonic()
            self._refill(now)
            pause = min(max(retry_after or 0.0, THROTTLE_PAUSE), MAX_PAUSE)
            already = now < self._paused_until
            self._paused_until = max(self._paused_until, now + pause)
            if already:
                return pause
            self._trim(now)
            recent = len(self._recent) / _WINDOW
            current = self._rate if self._rate is not None else max(recent, MIN_RATE * 2)
            self._rate = max(MIN_RATE, current / 2)
            self._tokens = 1.0  # one probe as soon as the pause ends, then the new rate
            self.throttles += 1
            return pause

    # --- internals (lock held) ------------------------------------------------------------

    def _burst(self) -> float:
        # A tenth of a second's worth: at most 10% over the rate in any one second.
        return max(1.0, self._rate * BURST_SECONDS) if self._rate is not None else 0.0

    def _refill(self, now: float) -> None:
        """Add the tokens and the recovery earned since the last look (none while paused:
        a pause must not end in a burst)."""
        active = max(now - max(self._refilled, self._paused_until), 0.0)
        self._refilled = now
        if self._rate is None or active == 0:
            return
        if self.cap is None or self._rate < self.cap:
            self._rate *= RECOVERY**active
            if self.cap is not None:
                self._rate = min(self._rate, self.cap)
            elif self._rate >= UNLIMITED_ABOVE:
                self._rate = None
                return
        self._tokens = min(self._burst(), self._tokens + active * self._rate)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - _WINDOW:
            self._recent.popleft()
