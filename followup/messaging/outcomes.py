"""Recording what the provider answered for each text handed over, guarded on the lease.

A dispatcher pass (dispatch.py) hands texts to worker threads; their answers come back
here in groups, each outcome written by one guarded UPDATE per kind (sent, failed,
retried, throttled, unknown, expired, deferred, returned) with its event. Sent and failed
are written here; transient refusals are transient.py's, texts a worker withheld at the
last moment withheld.py's, answers that leave the outcome unknown unknown.py's; when to
try again is retries.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import in_ids, is_postgresql
from followup.messaging.events import (
    ERROR_TEXT,
    MESSAGES,
    add_events,
    event_row,
    settle_leased,
    write_by_id,
)
from followup.messaging.handover import Answer
from followup.messaging.models import (
    FAILED,
    SENT,
)
from followup.messaging.reports import DispatchReport
from followup.messaging.status import apply_held_status_reports, record_permanent_failure
from followup.messaging.text_state import maybe_at_provider
from followup.messaging.transient import record_transient
from followup.messaging.transports.base import (
    PermanentSendError,
    TransientSendError,
)
from followup.messaging.unknown import record_raised
from followup.messaging.withheld import record_withheld

if TYPE_CHECKING:
    from followup.messaging.dispatch import Dispatcher

log = logging.getLogger("followup.messaging.dispatch")  # one logger for the whole pass


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
        record_transient(self, by_kind.pop("transient", []), events)
        self.record_unknown(by_kind.pop("unknown", []), events)
        record_withheld(self, by_kind, events)
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
