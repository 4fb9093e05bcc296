"""Texts a worker did not hand over after all: its last look at the clock found quiet
hours begun, the window closing, the lease lost, the claim gone stale or a 429 pause.

Each goes back to the queue (deferred to the end of quiet hours, requeued, or held
until the pause ends) or expires with its reason, its hand-over mark and attempt taken
back; one an earlier request of which may be at the provider is left for the reaper.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from followup.messaging.events import UNDO_HANDOVER
from followup.messaging.models import EXPIRED, PENDING, SENDING
from followup.messaging.retries import HANDOVER_MARGIN

if TYPE_CHECKING:
    from followup.messaging.handover import Answer
    from followup.messaging.outcomes import Outcomes


def record_withheld(
    outcomes: Outcomes, by_kind: dict[str, list[Answer]], events: list[dict[str, Any]]
) -> None:
    """Texts a worker did not send after all: the clock had moved on past a limit."""
    at = {a.item.id: a.at for answers in by_kind.values() for a in answers}
    released = {"lease_owner": None, "lease_expires_at": None, **UNDO_HANDOVER}
    quiet = by_kind.get("withheld-quiet", [])
    closing = by_kind.get("withheld-expired", [])
    windows = outcomes.current_windows(quiet + closing)
    late_ids = {
        a.item.id
        for a in quiet
        if a.quiet_end is None or a.quiet_end >= windows[a.item.id] - HANDOVER_MARGIN
    }
    # Withheld on the window it was handed; a correction may have re-timed it since.
    reopened: list[dict[str, Any]] = [
        {"id": a.item.id, "updated_at": a.at}
        for a in closing
        if windows[a.item.id] > a.at + HANDOVER_MARGIN
    ]
    reopened_ids = {r["id"] for r in reopened}
    expired: list[dict[str, Any]] = [
        {"id": a.item.id, "updated_at": a.at, "_why": "window closes before it could be sent"}
        for a in closing
        if a.item.id not in reopened_ids
    ] + [
        {"id": a.item.id, "updated_at": a.at, "_why": "quiet hours last past its expiry"}
        for a in quiet
        if a.item.id in late_ids
    ]
    deferred: list[dict[str, Any]] = [
        {"id": a.item.id, "updated_at": a.at, "not_before": a.quiet_end}
        for a in quiet
        if a.item.id not in late_ids
    ]
    lease: list[dict[str, Any]] = [
        {"id": a.item.id, "updated_at": a.at}
        for kind in ("withheld-lease", "withheld-stale")
        for a in by_kind.get(kind, [])
    ]
    # Held back by a 429 that came while they waited for a worker: back to the queue
    # until the pause ends (as `give_back_ready` hands back the texts not yet guarded).
    pause = timedelta(seconds=outcomes.d.pacer.wait_time())
    throttled: list[dict[str, Any]] = [
        {"id": a.item.id, "updated_at": a.at, "not_before": a.at + pause}
        for a in by_kind.get("withheld-throttled", [])
    ]
    # Not sent by this claim, but an earlier request may be at the provider: asked
    # about once a lease has run, whether it was to go again or to close.
    asked = [
        {
            "id": r["id"],
            "updated_at": r["updated_at"],
            "handed_at": outcomes.d.lease_at(r["updated_at"]),  # the earlier mark is kept
            "lease_expires_at": outcomes.d.lease_at(r["updated_at"]) + outcomes.d.lease,
        }
        for r in outcomes.earlier_request_pending(reopened, deferred, lease, throttled, expired)
    ]
    outcomes.settle(
        asked,
        events,
        values={"attempts": UNDO_HANDOVER["attempts"]},
        kind="outcome-unknown",
        status=SENDING,
        detail=lambda r: (
            "not sent; an earlier request may be at the provider: asked "
            f"after {r['lease_expires_at'].isoformat()}"
        ),
        counter="unknown",
        at=at,
    )
    outcomes.settle(
        expired,
        events,
        values={"status": EXPIRED, **released},
        kind="expired",
        status=EXPIRED,
        detail=lambda r: r["_why"],
        counter="expired",
        at=at,
    )
    outcomes.settle(
        deferred,
        events,
        values={"status": PENDING, **released},
        kind="deferred",
        status=PENDING,
        detail=lambda r: "quiet hours",
        counter="deferred",
        at=at,
    )
    outcomes.settle(
        reopened,
        events,
        values={"status": PENDING, "not_before": None, **released},
        kind="requeued",
        status=PENDING,
        detail=lambda r: "its window was re-timed before its call; not sent, goes again",
        counter="returned",
        at=at,
    )
    outcomes.settle(
        lease,
        events,
        values={"status": PENDING, "not_before": None, **released},
        kind="requeued",
        status=PENDING,
        detail=lambda r: "not handed over in time after its checks; not sent",
        counter="returned",
        at=at,
    )
    outcomes.settle(
        throttled,
        events,
        values={"status": PENDING, **released},
        kind="throttled",
        status=PENDING,
        detail=lambda r: "sending paused by the provider; not sent",
        counter="throttled",
        at=at,
    )
