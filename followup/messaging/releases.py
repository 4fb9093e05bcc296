"""Claimed texts settled before their hand-over: cancelled (the patient opted out, the
procedure was cancelled), expired (the window closes first), deferred (quiet hours) or back
to the queue (changed since the read, the dispatcher stopping, the provider pausing).

Every write is guarded on this dispatcher's lease and on the text not yet handed over
(`settle_leased(unhanded=True)`): a text whose request may be at the provider is never
settled here. The pass (turns.py) collects the events and commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.events import MESSAGES, chunks, event_row, settle_leased, status_is
from followup.messaging.models import CANCELLED, EXPIRED, PENDING, SENDING
from followup.messaging.outbox import PATIENT_OPTED_OUT
from followup.messaging.reports import DispatchReport
from followup.patients.models import Patient

if TYPE_CHECKING:
    from followup.messaging.dispatch import Dispatcher


class Releases:
    """One pass's settling of claimed texts before their hand-over."""

    def __init__(self, dispatcher: Dispatcher, session: so.Session, report: DispatchReport) -> None:
        self.d = dispatcher
        self.session = session
        self.report = report

    def release(
        self, rows: list[dict[str, Any]], now: datetime, *, status: str, **values: Any
    ) -> set[int]:
        """Settle claimed texts before their hand-over: never one already handed over."""
        return settle_leased(
            self.session,
            owner=self.d.owner,
            values={
                "status": status,
                "lease_owner": None,
                "lease_expires_at": None,
                "updated_at": now,
                **values,
            },
            rows=rows,
            unhanded=True,
        )

    def cancel(
        self, reasons: dict[str, list[dict[str, Any]]], now: datetime, events: list[dict[str, Any]]
    ) -> set[int]:
        """Cancel claimed texts, by the reason read (`reason_not_to_send`); those read opted
        out only if they still are (`cancel_opted_out`)."""
        reasons = dict(reasons)
        opted_out = reasons.pop(PATIENT_OPTED_OUT, [])
        done: set[int] = set()
        for reason, rows in reasons.items():
            for i in self.release(rows, now, status=CANCELLED):
                events.append(event_row(i, now, "cancelled", CANCELLED, reason))
                self.report.cancelled += 1
                done.add(i)
        return done | self.cancel_opted_out(opted_out, now, events)

    def cancel_opted_out(
        self, rows: list[dict[str, Any]], now: datetime, events: list[dict[str, Any]]
    ) -> set[int]:
        """Cancel claimed texts whose patient was read opted out, if they still are: a START
        committed since the read passed these texts over (they were not cancelled yet), so
        cancelling them now would keep them from the patient for good. Those whose patient
        opted back in go back to the queue. The patient's row is read under a share lock
        (PostgreSQL; SQLite: the UPDATE's write lock), so a START either sees them cancelled
        or comes first."""
        if not rows:
            return set()
        table, patients = MESSAGES.c, cast(sa.Table, Patient.__table__).c
        still_opted_out = sa.exists(
            sa.select(patients.id)
            .where(patients.id == table.patient_id, patients.opted_out_at.is_not(None))
            .with_for_update(read=True)
        )
        ids = [row["id"] for row in rows]
        written: set[int] = set()
        for chunk in chunks(ids):
            written.update(
                self.session.scalars(
                    sa.update(MESSAGES)
                    .where(
                        table.id.in_(chunk),
                        status_is(SENDING),
                        table.lease_owner == self.d.owner,
                        table.handed_at.is_(None),
                        still_opted_out,
                    )
                    .values(status=CANCELLED, lease_owner=None, lease_expires_at=None,
                            updated_at=now)
                    .returning(table.id)
                )
            )  # fmt: skip
        for i in written:
            events.append(event_row(i, now, "cancelled", CANCELLED, PATIENT_OPTED_OUT))
            self.report.cancelled += 1
        back = [{"id": i} for i in ids if i not in written]
        return written | self.requeue(back, now, events, detail="patient opted back in")

    def expire(
        self,
        rows: list[dict[str, Any]],
        now: datetime,
        events: list[dict[str, Any]],
        *,
        default: str,
    ) -> set[int]:
        details = {row["id"]: row.get("detail", default) for row in rows}
        written = self.release([{"id": row["id"]} for row in rows], now, status=EXPIRED)
        for i in written:
            events.append(event_row(i, now, "expired", EXPIRED, details[i]))
            self.report.expired += 1
        return written

    def defer(
        self, rows: list[dict[str, Any]], now: datetime, events: list[dict[str, Any]]
    ) -> set[int]:
        written = self.release(rows, now, status=PENDING)
        for i in written:
            events.append(event_row(i, now, "deferred", PENDING, "quiet hours"))
            self.report.deferred += 1
        return written

    def requeue(
        self,
        rows: list[dict[str, Any]],
        now: datetime,
        events: list[dict[str, Any]],
        *,
        detail: str,
    ) -> set[int]:
        """Back to the queue, where the next read settles them."""
        written = self.release(rows, now, status=PENDING)
        for i in written:
            events.append(event_row(i, now, "requeued", PENDING, detail))
            self.report.returned += 1
        return written
