"""Recording what the provider answered for each text handed over, guarded on the lease.

A dispatcher pass (dispatch.py) hands texts to worker threads; their answers come back
here in groups, each outcome written by one guarded UPDATE per kind (sent, failed,
retried, throttled, unknown, expired, deferred, returned) with its event; answers that
leave the outcome unknown are unknown.py's; when to try again is retries.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import in_ids, is_postgresql
from followup.messaging.claims import parked_owner
from followup.messaging.events import (
    MESSAGES,
    add_events,
    event_row,
    settle_leased,
    write_by_id,
)
from followup.messaging.handover import Answer
from followup.messaging.models import (
    EXPIRED,
    FAILED,
    PENDING,
    SENDING,
    SENT,
)
from followup.messaging.replan import maybe_at_provider
from followup.messaging.reports import DispatchReport
from followup.messaging.retries import HANDOVER_MARGIN, retry_time
from followup.messaging.status import apply_held_status_reports, record_permanent_failure
from followup.messaging.transports.base import (
    PermanentSendError,
    TransientSendError,
)
from followup.messaging.unknown import record_raised, take_back

if TYPE_CHECKING:
    from followup.messaging.dispatch import Dispatcher

log = logging.getLogger("followup.messaging.dispatch")  # one logger for the whole pass

ERROR_TEXT = 500

# A text not sent after all: its hand-over mark and attempt are taken back.
UNDO_HANDOVER: dict[str, Any] = {
    "handed_at": None,
    "attempts": MESSAGES.c.attempts - 1,
}


class Outcomes:
    """Writes a pass's answers for `dispatcher`, in `session`, counting them in `report`."""

    def __init__(self, dispatcher: Dispatcher, session: so.Session, report: DispatchReport) -> None:
        self.d = dispatcher
        self.session = session
        self.report = report

    def record(self, answers: list[Answer]) -> None:
        """Write a group of answers, each outcome guarded on our lease (the caller commits)."""
        if not answers:
            return
        events: list[dict[str, Any]] = []
        by_kind: dict[str, list[Answer]] = {}
        for answer in answers:
            by_kind.setdefault(self.kind_of(answer), []).append(answer)
        sent = by_kind.pop("sent", [])
        self.record_sent(sent, events)
        self.record_permanent(by_kind.pop("failed", []), events)
        self.record_transient(by_kind.pop("transient", []), events)
        self.record_unknown(by_kind.pop("unknown", []), events)
        self.record_withheld(by_kind, events)
        add_events(self.session, events)
        if sent:
            # Delivery reports that came before this commit (Twilio may call back first).
            apply_held_status_reports(
                session=self.session,
                now=self.d.clock.now(),
                sids=[a.result.provider_sid for a in sent if a.result is not None],
                care=self.d.care,
            )

    @staticmethod
    def kind_of(answer: Answer) -> str:
        if answer.result is not None:
            return "sent"
        if isinstance(answer.error, PermanentSendError):
            return "failed"
        if isinstance(answer.error, TransientSendError):
            return "transient"
        if answer.unknown is not None:
            return "unknown"
        return f"withheld-{answer.withheld}"

    def handed(self, answer: Answer) -> datetime:
        """When the answer's request was handed over, on the lease clock: the reaper asks
        the provider for copies created since then (less RECONCILE_SLACK), on the time
        the provider and every process share. (For a pinned clock, standing still, that
        is this host's time as the answer is recorded: a call's length later, within the
        slack.)"""
        return self.d.lease_at(answer.at)

    def record_sent(self, answers: list[Answer], events: list[dict[str, Any]]) -> None:
        if not answers:
            return
        rows = []
        for a in answers:
            assert a.result is not None  # noqa: S101 - kind_of sorted it here
            rows.append(
                {
                    "id": a.item.id,
                    "provider_sid": a.result.provider_sid,
                    "segments": a.result.segments,
                    "sent_at": a.at,
                    "updated_at": a.answered_at,
                }
            )
        shared = {
            "status": SENT,
            "lease_owner": None,
            "lease_expires_at": None,
            "error_code": None,
            "error_message": None,
        }
        ours = settle_leased(self.session, owner=self.d.owner, values=shared, rows=rows)
        for row, a in zip(rows, answers, strict=True):
            assert a.result is not None  # noqa: S101
            detail = f"sid {a.result.provider_sid} ({a.result.provider_status})"
            if a.item.id not in ours:
                # The provider has the text although our lease moved on: record it anyway
                # (unless someone already did), so a requeued copy is not sent again.
                written = write_by_id(self.session, [{**row, **shared}], guard="unsent")
                detail += "; lease had moved on" if written else "; already recorded"
                log.warning("message %s: answered after its lease moved on", a.item.id)
            events.append(event_row(a.item.id, a.at, "sent", SENT, detail))
            self.report.sent += 1

    def record_permanent(self, answers: list[Answer], events: list[dict[str, Any]]) -> None:
        if not answers:
            return
        rows = [
            {
                "id": a.item.id,
                "error_code": a.error.code if a.error else None,
                "error_message": (a.error.message if a.error else "")[:ERROR_TEXT],
                "updated_at": a.answered_at,
            }
            for a in answers
        ]
        ours = settle_leased(
            self.session,
            owner=self.d.owner,
            values={"status": FAILED, "lease_owner": None, "lease_expires_at": None},
            rows=rows,
        )
        for a in answers:
            assert a.error is not None  # noqa: S101
            self.report.failed += 1
            log.warning("message %s failed permanently code=%s", a.item.id, a.error.code)
            if a.item.id not in ours:
                events.append(
                    event_row(
                        a.item.id,
                        a.answered_at,
                        "failed",
                        None,
                        f"error {a.error.code}; lease had moved on",
                    )
                )
                continue
            events.append(
                event_row(a.item.id, a.answered_at, "failed", FAILED, f"error {a.error.code}")
            )
            self.report.cancelled += record_permanent_failure(
                session=self.session,
                message_id=a.item.id,
                patient_id=a.item.patient_id,
                error_code=a.error.code,
                now=a.answered_at,
            )

    def settle(
        self,
        rows: list[dict[str, Any]],
        events: list[dict[str, Any]],
        *,
        values: dict[str, Any],
        kind: str,
        status: str,
        detail: Callable[[dict[str, Any]], str],
        counter: str,
        at: dict[int, datetime],
        lost_unless_written: bool = True,
    ) -> set[int]:
        """Write one kind of outcome for a group (guarded on our lease), with its events;
        return the ids written. A text whose lease moved on is counted `lost` (not sent by
        us), unless the caller settles those itself (`lost_unless_written=False`)."""
        written = settle_leased(
            self.session,
            owner=self.d.owner,
            values=values,
            rows=[{k: v for k, v in row.items() if not k.startswith("_")} for row in rows],
        )
        for row in rows:
            if row["id"] in written:
                events.append(event_row(row["id"], at[row["id"]], kind, status, detail(row)))
                setattr(self.report, counter, getattr(self.report, counter) + 1)
            elif lost_unless_written:
                # Another kind of event: pages and re-planning read `expired`, `requeued`...
                why = f"answered ({kind}: {detail(row)}) after its lease moved on; not written"
                events.append(event_row(row["id"], at[row["id"]], "lost", None, why))
                self.report.lost += 1
                log.warning("message %s: answered after its lease moved on; not written", row["id"])
        return written

    def current_windows(self, answers: list[Answer]) -> dict[int, datetime]:
        """Each answered text's window as it is now, not as it was at its hand-over: a
        nurse's correction re-times a text whose request is under way (its outcome is
        unknown until the answer), and the retry follows the new window. Locked on
        PostgreSQL (re-planning locks them too), so no re-timing lands after this read."""
        if not answers:
            return {}
        table = MESSAGES.c
        which = in_ids(self.session, table.id, [a.item.id for a in answers])
        query: Any
        if is_postgresql(self.session):
            # locked in id order, as re-planning locks them
            query = sa.select(table.id, table.expires_at).where(which).order_by(table.id)
            query = query.with_for_update()
        else:
            # SQLite: read under the database's write lock (a no-op write takes it, as
            # re-planning does), else a correction could commit between read and write.
            query = (
                sa.update(MESSAGES)
                .where(which)
                .values(expires_at=table.expires_at)
                .returning(table.id, table.expires_at)
            )
        windows = {row.id: row.expires_at for row in self.session.execute(query)}
        return {a.item.id: windows.get(a.item.id, a.item.expires_at) for a in answers}

    def earlier_request_pending(self, *groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take out of `groups` (rows about to be requeued or closed) and return those an
        earlier request of which may be at the provider (taken back while this claim was
        under way: an unknown outcome no reaper's answer has settled; `handed_at` marks
        it). Requeued, such a text would go a second time; closed, the copy the patient
        may have would never be recorded: the caller leaves it `sending` for the reaper to
        ask from that request on, as an unknown outcome (the CASE in `settle_leased`
        keeps the earlier `handed_at`)."""
        earlier = maybe_at_provider(self.session, [r["id"] for rows in groups for r in rows])
        taken: list[dict[str, Any]] = []
        for rows in groups:
            taken += [r for r in rows if r["id"] in earlier]
            rows[:] = [r for r in rows if r["id"] not in earlier]
        return taken

    def record_transient(self, answers: list[Answer], events: list[dict[str, Any]]) -> None:
        windows = self.current_windows(answers)
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
                pause = max(self.d.pacer.wait_time(), exc.retry_after or 0.0, 0.1)
                resume = a.answered_at + timedelta(seconds=pause)
                if resume < windows[a.item.id] - HANDOVER_MARGIN:
                    throttled.append({**row, "not_before": resume})
                    continue
            retry_at = retry_time(
                attempts=a.item.attempts,
                expires_at=windows[a.item.id],
                now=a.answered_at,
                tz=a.item.tz,
                care=self.d.care,
                rng=self.d.rng,
                retry_after=exc.retry_after,
            )
            if exc.maybe_sent:
                # It may have reached the provider: it stays `sending` (no longer renewed)
                # until the reaper has asked the provider, after `retry_at`.
                # Marked handed over at the request's instant: the reaper must ask, even
                # when this claim is a newer one (requeued mid-request, claimed again).
                ask = retry_at or windows[a.item.id]
                unknown.append(
                    {**row, "lease_expires_at": self.d.lease_at(ask), "handed_at": self.handed(a)}
                )
            elif retry_at is None:
                expired.append(row)
            else:
                retry.append({**row, "not_before": retry_at})
        # Refused unseen, but an earlier request may be at the provider: asked about at
        # the time the retry would have gone (or the window's end).
        requests = {a.item.id: a for a in answers}
        for r in self.earlier_request_pending(retry, throttled, expired):
            a = requests[r["id"]]
            ask = r.pop("not_before", None) or windows[a.item.id]
            unknown.append(
                {**r, "lease_expires_at": self.d.lease_at(ask), "handed_at": self.handed(a)}
            )
        at = {a.item.id: a.answered_at for a in answers}
        released = {"lease_owner": None, "lease_expires_at": None}
        self.settle(
            retry,
            events,
            values={"status": PENDING, **released},
            kind="retry",
            status=PENDING,
            detail=lambda r: f"error {r['error_code']}; retry at {r['not_before'].isoformat()}",
            counter="retried",
            at=at,
        )
        self.settle(
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
        ours = self.settle(
            unknown,
            events,
            values={"lease_owner": parked_owner(self.d.owner)},
            kind="outcome-unknown",
            status=SENDING,
            detail=asked_after,
            counter="unknown",
            at=at,
            lost_unless_written=False,  # take_back settles (and counts) the others
        )
        take_back(
            self.session,
            owner=self.d.owner,
            lease_until=self.d.lease_at(self.d.clock.now()) + self.d.lease,
            rows=[r for r in unknown if r["id"] not in ours],
            events=events,
            at=at,
            detail=lambda r: f"error {r['error_code']}",
            report=self.report,
        )
        self.settle(
            expired,
            events,
            values={"status": EXPIRED, **released},
            kind="expired",
            status=EXPIRED,
            detail=lambda r: f"error {r['error_code']}; no retry fits before its expiry",
            counter="expired",
            at=at,
        )

    def record_unknown(self, answers: list[Answer], events: list[dict[str, Any]]) -> None:
        record_raised(
            self.session,
            owner=self.d.owner,
            lease=self.d.lease,
            now=self.d.clock.now(),
            answers=answers,
            events=events,
            report=self.report,
            lease_at=self.d.lease_at,
        )

    def record_withheld(
        self, by_kind: dict[str, list[Answer]], events: list[dict[str, Any]]
    ) -> None:
        """Texts a worker did not send after all: the clock had moved on past a limit."""
        at = {a.item.id: a.at for answers in by_kind.values() for a in answers}
        released = {"lease_owner": None, "lease_expires_at": None, **UNDO_HANDOVER}
        quiet = by_kind.get("withheld-quiet", [])
        closing = by_kind.get("withheld-expired", [])
        windows = self.current_windows(quiet + closing)
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
        pause = timedelta(seconds=self.d.pacer.wait_time())
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
                "handed_at": self.d.lease_at(r["updated_at"]),  # the earlier mark is kept
                "lease_expires_at": self.d.lease_at(r["updated_at"]) + self.d.lease,
            }
            for r in self.earlier_request_pending(reopened, deferred, lease, throttled, expired)
        ]
        self.settle(
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
        self.settle(
            expired,
            events,
            values={"status": EXPIRED, **released},
            kind="expired",
            status=EXPIRED,
            detail=lambda r: r["_why"],
            counter="expired",
            at=at,
        )
        self.settle(
            deferred,
            events,
            values={"status": PENDING, **released},
            kind="deferred",
            status=PENDING,
            detail=lambda r: "quiet hours",
            counter="deferred",
            at=at,
        )
        self.settle(
            reopened,
            events,
            values={"status": PENDING, "not_before": None, **released},
            kind="requeued",
            status=PENDING,
            detail=lambda r: "its window was re-timed before its call; not sent, goes again",
            counter="returned",
            at=at,
        )
        self.settle(
            lease,
            events,
            values={"status": PENDING, "not_before": None, **released},
            kind="requeued",
            status=PENDING,
            detail=lambda r: "not handed over in time after its checks; not sent",
            counter="returned",
            at=at,
        )
        self.settle(
            throttled,
            events,
            values={"status": PENDING, **released},
            kind="throttled",
            status=PENDING,
            detail=lambda r: "sending paused by the provider; not sent",
            counter="throttled",
            at=at,
        )
