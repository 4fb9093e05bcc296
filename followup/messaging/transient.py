"""Transient refusals of a hand-over (a 5xx, a timeout before the request went, a 429).

Refused unseen, a text goes back to the queue for a retry after a capped backoff
(retries.py), or after the pause a 429 asked for without spending an attempt; one that
may have reached the provider stays `sending` for the reaper to ask about (parked under
a reaper's name, unknown.py); one no retry fits before its window closes expires.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from followup.messaging.claims import parked_owner
from followup.messaging.events import ERROR_TEXT, UNDO_HANDOVER
from followup.messaging.models import EXPIRED, PENDING, SENDING
from followup.messaging.retries import HANDOVER_MARGIN, retry_time
from followup.messaging.transports.base import TransientSendError
from followup.messaging.unknown import take_back

if TYPE_CHECKING:
    from followup.messaging.handover import Answer
    from followup.messaging.outcomes import Outcomes

log = logging.getLogger("followup.messaging.dispatch")  # one logger for the whole pass


def record_transient(
    outcomes: Outcomes, answers: list[Answer], events: list[dict[str, Any]]
) -> None:
    """Transient refusals: retried after a backoff, slowed down by a 429, left for the
    reaper when the request may have reached the provider, or expired when no retry fits."""
    windows = outcomes.current_windows(answers)
    retry: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    throttled: list[dict[str, Any]] = []
    expired: list[dict[str, Any]] = []
    for a in answers:
        exc = a.error
        assert isinstance(exc, TransientSendError)  # noqa: S101 - kind_of sorted it here
        row = {
            "id": a.item.id,
            "error_code": exc.code,
            "error_message": exc.message[:ERROR_TEXT],
            "updated_at": a.answered_at,
        }
        log.warning(
            "message %s transient error code=%s attempt=%s",
            a.item.id,
            exc.code,
            a.item.attempts,
        )
        if exc.throttled and not exc.maybe_sent:
            # Refused unseen: the pacer slows every hand-over down; this text goes back
            # to the queue after the pause without counting an attempt or a backoff.
            pause = max(outcomes.d.pacer.wait_time(), exc.retry_after or 0.0, 0.1)
            resume = a.answered_at + timedelta(seconds=pause)
            if resume < windows[a.item.id] - HANDOVER_MARGIN:
                throttled.append({**row, "not_before": resume})
                continue
        retry_at = retry_time(
            attempts=a.item.attempts,
            expires_at=windows[a.item.id],
            now=a.answered_at,
            tz=a.item.tz,
            care=outcomes.d.care,
            rng=outcomes.d.rng,
            retry_after=exc.retry_after,
        )
        if exc.maybe_sent:
            # It may have reached the provider: it stays `sending` (no longer renewed)
            # until the reaper has asked the provider, after `retry_at`.
            # Marked handed over at the request's instant: the reaper must ask, even
            # when this claim is a newer one (requeued mid-request, claimed again).
            ask = retry_at or windows[a.item.id]
            unknown.append(
                {
                    **row,
                    "lease_expires_at": outcomes.d.lease_at(ask),
                    "handed_at": outcomes.handed(a),
                }
            )
        elif retry_at is None:
            expired.append(row)
        else:
            retry.append({**row, "not_before": retry_at})
    # Refused unseen, but an earlier request may be at the provider: asked about at
    # the time the retry would have gone (or the window's end).
    requests = {a.item.id: a for a in answers}
    for r in outcomes.earlier_request_pending(retry, throttled, expired):
        a = requests[r["id"]]
        ask = r.pop("not_before", None) or windows[a.item.id]
        unknown.append(
            {**r, "lease_expires_at": outcomes.d.lease_at(ask), "handed_at": outcomes.handed(a)}
        )
    at = {a.item.id: a.answered_at for a in answers}
    released = {"lease_owner": None, "lease_expires_at": None}
    outcomes.settle(
        retry,
        events,
        values={"status": PENDING, **released},
        kind="retry",
        status=PENDING,
        detail=lambda r: f"error {r['error_code']}; retry at {r['not_before'].isoformat()}",
        counter="retried",
        at=at,
    )
    outcomes.settle(
        throttled,
        events,
        values={"status": PENDING, **released, **UNDO_HANDOVER},
        kind="throttled",
        status=PENDING,
        detail=lambda r: f"error {r['error_code']}; sending slowed down",
        counter="throttled",
        at=at,
    )

    def asked_after(r: dict[str, Any]) -> str:
        return (
            f"error {r['error_code']}; the provider is asked after "
            f"{r['lease_expires_at'].isoformat()}"
        )

    # Under a reaper's name from now on: nothing of it is under way any more, and a
    # dispatcher's lease held to `retry_at` (up to 15 minutes, or a longer Retry-After)
    # kept every other dispatcher from the patient's other texts all that time.
    ours = outcomes.settle(
        unknown,
        events,
        values={"lease_owner": parked_owner(outcomes.d.owner)},
        kind="outcome-unknown",
        status=SENDING,
        detail=asked_after,
        counter="unknown",
        at=at,
        lost_unless_written=False,  # take_back settles (and counts) the others
    )
    take_back(
        outcomes.session,
        owner=outcomes.d.owner,
        lease_until=outcomes.d.lease_at(outcomes.d.clock.now()) + outcomes.d.lease,
        rows=[r for r in unknown if r["id"] not in ours],
        events=events,
        at=at,
        detail=lambda r: f"error {r['error_code']}",
        report=outcomes.report,
    )
    outcomes.settle(
        expired,
        events,
        values={"status": EXPIRED, **released},
        kind="expired",
        status=EXPIRED,
        detail=lambda r: f"error {r['error_code']}; no retry fits before its expiry",
        counter="expired",
        at=at,
    )
