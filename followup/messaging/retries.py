"""When a text may be tried: the margin every hand-over keeps before a limit (the text's
expiry, the start of quiet hours), and when to try again after a transient failure
(exponential backoff with jitter, until the window closes)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from followup.care.protocol import CareContext
from followup.care.timing import local_instant, quiet_period_end

# Never hand a text over closer than this to its expiry or to the start of quiet hours:
# the request must reach the provider before either, not merely leave before it.
HANDOVER_MARGIN = timedelta(seconds=2)
RETRY_BACKOFF = timedelta(seconds=30)  # first retry delay; doubles each attempt
RETRY_BACKOFF_MAX = timedelta(minutes=15)  # the longest wait between two attempts
MIN_RETRY = timedelta(seconds=5)  # the shortest wait before a last try squeezed before expiry


def retry_delay(
    attempts: int, *, rng: random.Random, retry_after: float | None = None
) -> timedelta:
    """Exponential backoff with jitter (half to full), never shorter than Retry-After."""
    doublings = min(max(attempts - 1, 0), 16)
    base = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * (1 << doublings))
    delay = base * (0.5 + rng.random() / 2)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def next_try(
    *,
    attempts: int,
    expires_at: datetime,
    now: datetime,
    rng: random.Random,
    retry_after: float | None = None,
) -> datetime | None:
    """When to try a text again after a transient failure; None if no try fits its window.

    A backoff that would end past the window is cut short to a last try just before it
    closes (never sooner than Retry-After or MIN_RETRY): retries go on until the window
    closes, whatever the outage.
    """
    retry_at = now + retry_delay(attempts, rng=rng, retry_after=retry_after)
    last_chance = expires_at - HANDOVER_MARGIN * 2
    if retry_at <= last_chance:
        return retry_at
    earliest = now + max(MIN_RETRY, timedelta(seconds=retry_after or 0))
    return last_chance if earliest <= last_chance else None


def retry_time(
    *,
    attempts: int,
    expires_at: datetime,
    now: datetime,
    rng: random.Random,
    tz: ZoneInfo | None = None,
    care: CareContext | None = None,
    retry_after: float | None = None,
) -> datetime | None:
    """`next_try` within the time the text can still be handed over: before its expiry,
    and, given the patient's zone and the care context, before quiet hours that outlast it
    (`last_moment`)."""
    if tz is not None and care is not None:
        expires_at = last_moment(expires_at=expires_at, now=now, tz=tz, care=care)
    return next_try(
        attempts=attempts, expires_at=expires_at, now=now, rng=rng, retry_after=retry_after
    )


def last_moment(
    *, expires_at: datetime, now: datetime, tz: ZoneInfo, care: CareContext
) -> datetime:
    """Until when a text can still be handed over, from `now`: its expiry, or the start of
    the first quiet hours that last past it (a try inside them would only expire it).

    A retry's backoff is cut short to a last try before this, not before the expiry alone:
    a text expiring at 05:00, refused until 20:58, had its retry put at 21:08 and expired
    unsent, when a try at 20:59 still fitted.
    """
    quiet = care.quiet_hours
    if quiet.start == quiet.end:
        return expires_at
    moment = now
    for _ in range(64):  # a night per turn: far more than any window spans
        if moment >= expires_at:
            break
        end = quiet_period_end(moment, tz, quiet)
        if end is not None:
            if end >= expires_at - HANDOVER_MARGIN:
                return moment  # the window closes inside these quiet hours
            moment = end
            continue
        local = moment.astimezone(tz)
        start = local_instant(local.date(), quiet.start, tz)
        if start <= moment:
            start = local_instant(local.date() + timedelta(days=1), quiet.start, tz)
        moment = start
    return expires_at


def quiet_end_near(instant: datetime, tz: ZoneInfo, care: CareContext) -> datetime | None:
    """The end of quiet hours if `instant`, or HANDOVER_MARGIN after it, falls in them."""
    return quiet_period_end(instant, tz, care.quiet_hours) or quiet_period_end(
        instant + HANDOVER_MARGIN, tz, care.quiet_hours
    )
