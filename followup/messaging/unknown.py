"""Answers that leave a text's outcome unknown: the request may have reached the provider
(a timeout, a 5xx, a dropped connection, an exception the transport did not expect).

Such a text stays `sending`, marked handed over at the request's instant, so that once
its lease has run out the reaper asks the provider instead of sending it again. When the
answer comes after the lease moved on (the dispatcher stalled; the reaper asked the
provider too early, found nothing and requeued the text), the text is taken back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.events import MESSAGES, event_row, settle_leased, write_by_id
from followup.messaging.models import CLOSED_UNSENT, SENDING
from followup.messaging.reports import DispatchReport

if TYPE_CHECKING:
    from followup.messaging.handover import Answer

log = logging.getLogger("followup.messaging.dispatch")  # one logger for the whole pass


def record_raised(
    session: so.Session,
    *,
    owner: str,
    lease: timedelta,
    now: datetime,
    answers: list[Answer],
    events: list[dict[str, Any]],
    report: DispatchReport,
    lease_at: Callable[[datetime], datetime] | None = None,
) -> None:
    """Texts whose transport call raised what no handler knew: they may or may not have
    gone out. Each stays `sending` under its lease (no longer renewed), marked handed over
    at the request's instant: a text the reaper requeued while this request was under way,
    and this dispatcher then claimed again, has a new claim not handed over. `lease_at`
    moves an instant of `now`'s clock to the lease clock (`Dispatcher.lease_at`)."""
    shift = lease_at or (lambda instant: instant)
    ours = settle_leased(
        session,
        owner=owner,
        values={"lease_owner": owner},
        rows=[{"id": a.item.id, "handed_at": shift(a.at)} for a in answers],
    )
    for a in answers:
        log.error("message %s: transport raised %s; left for the reaper", a.item.id, a.unknown)
        if a.item.id in ours:
            detail = f"transport raised {a.unknown}"
            events.append(event_row(a.item.id, a.answered_at, "outcome-unknown", SENDING, detail))
            report.unknown += 1
    take_back(
        session,
        owner=owner,
        lease_until=shift(now) + lease,
        rows=[
            {
                "id": a.item.id,
                "handed_at": shift(a.at),
                "lease_expires_at": shift(a.answered_at) + lease,
                "updated_at": a.answered_at,
                "_raised": a.unknown,
            }
            for a in answers
            if a.item.id not in ours
        ],
        events=events,
        at={a.item.id: a.answered_at for a in answers},
        detail=lambda r: f"transport raised {r['_raised']}",
        report=report,
    )


def take_back(
    session: so.Session,
    *,
    owner: str,
    lease_until: datetime,
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    at: dict[int, datetime],
    detail: Callable[[dict[str, Any]], str],
    report: DispatchReport,
) -> None:
    """Maybe-sent answers whose lease had moved on: the reaper asked the provider while
    the request was still under way, found nothing and requeued the text. Unless it was
    handed over again, recorded or closed since, the text goes back to `sending` under
    `owner`'s lease (not renewed), marked handed over at the request's instant, so that
    the reaper asks the provider again once that lease has run out instead of sending it
    a second time. Each row has the text's "id", "handed_at" and "lease_expires_at"; the
    lease is pushed to `lease_until` at least, so that the provider has time to list what
    it accepted before it is asked again."""
    for row in rows:
        values = {k: v for k, v in row.items() if not k.startswith("_")}
        values["lease_expires_at"] = max(values["lease_expires_at"], lease_until)
        taken = write_by_id(
            session, [{**values, "status": SENDING, "lease_owner": owner}], guard="requeued"
        )
        if taken:
            note = "taken back, the provider is asked after " + (
                values["lease_expires_at"].isoformat()
            )
        else:
            status = session.scalar(sa.select(MESSAGES.c.status).where(MESSAGES.c.id == row["id"]))
            note = f"left {status}: handed over again or recorded since"
            # Handed over again under another claim: it stays that claim's, but the reaper
            # asks the provider from this earlier request on if that one's outcome is
            # unknown too.
            earlier = {"id": row["id"], "handed_at": values["handed_at"]}
            if status == SENDING and write_by_id(session, [earlier], guard="earlier"):
                note += "; the provider is asked from this request on"
            # A copy closed since stays closed; the reaper asks the provider about it once
            # the lease has run out, and records the text sent if the provider has it.
            closed = {
                "id": row["id"],
                "lease_owner": owner,
                "lease_expires_at": values["lease_expires_at"],
                "handed_at": values["handed_at"],
            }
            if status in CLOSED_UNSENT and write_by_id(session, [closed], guard="closed"):
                note = (
                    f"left {status}; it may have reached the patient: never sent again; "
                    f"the provider is asked after {values['lease_expires_at'].isoformat()}"
                )
        events.append(
            event_row(
                row["id"],
                at[row["id"]],
                "outcome-unknown",
                SENDING if taken else None,
                f"{detail(row)}; its lease had moved on: {note}",
            )
        )
        log.warning("message %s: outcome unknown after its lease moved on: %s", row["id"], note)
        report.unknown += 1
