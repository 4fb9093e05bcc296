"""Reaping closed copies: texts cancelled or expired (a STOP, a cancellation, re-planning)
while a request of theirs may be at the provider. `take_back` (unknown.py) marks such a
copy with a lease owner and a time to ask; once that time has come the reaper asks the
provider, through the partial index ix_messages_closed_unsettled:

- found: the text is recorded `sent` with its SID after all, with the provider's status
  and error code past that;
- not found: it stays closed ("not at provider"), unless its patient's opt-out cancelled
  it and they have texted START since: START's rule then applies to it (opt_in.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.db import is_postgresql
from followup.messaging.events import (
    FOUND_AT_PROVIDER,
    MESSAGES,
    NOT_AT_PROVIDER,
    add_events,
    event_row,
)
from followup.messaging.lookup import (
    REAP_PART,
    RECONCILE_SLACK,
    FirstLook,
    apply_found_status,
    ask_again_at,
    find_unrecorded,
    first_looks,
    group_by,
    guarded,
    slow_down,
)
from followup.messaging.models import (
    CANCELLED,
    CLOSED_UNSETTLED,
    PENDING,
    SENT,
    Message,
)
from followup.messaging.opt_in import (
    BACK,
    REPLAN,
    STAYS,
    cancelled_by_opt_out,
    reopen_found_missing,
)
from followup.messaging.replan import replan_procedure
from followup.messaging.reports import ReapReport
from followup.messaging.transports.base import CannotTell, SmsTransport
from followup.patients.models import Patient, Procedure

log = logging.getLogger("followup.messaging.reconcile")  # one logger for the reaper


def reap_closed(
    *,
    session: so.Session,
    transport: SmsTransport,
    now: datetime,
    owner: str,
    lease: timedelta,
    batch: int,
    report: ReapReport,
    care: CareContext | None,
    instant: Callable[[], datetime] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> None:
    """Ask the provider about every marked closed copy whose time to ask had come at `now`.

    Asked side by side (`first_looks`), as the texts left `sending` are: a cancelled clinic
    day or a STOP storm can close a hundred copies whose requests may be at the provider,
    and one question after another at list latency (about 0.5 s) would outlast the lease
    each batch is taken under; asked REAP_PART at a time, the rest of the batch's lease
    renewed after each part. A 429 ends the pass's questions: the rest wait, under this
    reaper's lease, for the Retry-After. `instant` (the clock) stamps each batch's lease
    and each copy's answer when they happen; without it, `now`. Once `stopping()` (the
    process is told to stop), the pass ends after the part under way, the rest held only
    until now: the next reaper asks about them."""

    def at() -> datetime:
        return max(now, instant()) if instant is not None else now

    def stop() -> bool:
        return stopping is not None and stopping()

    while (
        not stop()
        and (
            taken := _take_closed(session, now=now, at=at(), owner=owner, lease=lease, batch=batch)
        )
        is not None
    ):
        while taken:
            part, taken = taken[:REAP_PART], taken[REAP_PART:]
            looks = first_looks(transport, part)
            for i, row in enumerate(part):
                if stop():  # settling one may ask again: what is left goes back stale
                    taken = part[i:] + taken
                    break
                _ask_about_closed(
                    session=session, transport=transport, row=row, first=looks[row.id],
                    now=at(), owner=owner, lease=lease, report=report, care=care,
                )  # fmt: skip
            throttled = slow_down(looks.values())
            if throttled is not None:
                # Too many questions (429): the rest of the batch is asked about after the
                # Retry-After, by a later pass, and this pass asks nothing more.
                put_off = _hold(
                    session, taken, owner=owner, until=at() + timedelta(seconds=throttled)
                )
                report.put_off += len(put_off)
                log.warning(
                    "reaper throttled by the provider: %d closed copies asked later", len(put_off)
                )
                return
            if stop():
                _hold(session, taken, owner=owner, until=at())
                return
            # Those not asked about yet: a whole lease again from now (as reap_stale does).
            taken = _hold(session, taken, owner=owner, until=at() + lease)


def _hold(session: so.Session, rows: list[Any], *, owner: str, until: datetime) -> list[Any]:
    """Keep the closed copies this reaper holds, still closed as read, under its lease
    until `until` (committed); return those still held."""
    held: set[int] = set()
    for status, group in group_by(rows, lambda r: r.status).items():
        held |= guarded(
            session,
            [{"id": r.id} for r in group],
            _closed_under(status, owner),
            {"lease_expires_at": until},
        )
    session.commit()
    return [row for row in rows if row.id in held]


def _take_closed(
    session: so.Session, *, now: datetime, at: datetime, owner: str, lease: timedelta, batch: int
) -> list[Any] | None:
    """Lock a batch of closed copies whose time to ask had come at `now`, and take their
    lease, for a whole lease from `at` (the clock's instant now); None when none is left.
    The query repeats the partial index's condition, so it reads only those rows."""
    table = MESSAGES.c
    postgres = is_postgresql(session)
    # The index's own condition, word for word, so that both databases read only the index
    # (SQLite proves a partial index usable only from the same terms, and without
    # statistics would rather read every closed text by status: told which index to use).
    query = (
        sa.text(
            "SELECT id, status, lease_owner, handed_at, to_phone, body FROM messages"  # noqa: S608 - constants; values bound
            + _through_the_index(postgres)
            + f" WHERE {CLOSED_UNSETTLED} AND provider_sid IS NULL AND lease_expires_at <= :now"
            + " ORDER BY lease_expires_at LIMIT :batch"
            + (" FOR UPDATE SKIP LOCKED" if postgres else "")
        )
        .bindparams(sa.bindparam("now", now, type_=table.lease_expires_at.type), batch=batch)
        .columns(table.id, table.status, table.lease_owner, table.handed_at, table.to_phone,
                 table.body)
    )  # fmt: skip
    rows = list(session.execute(query).all())
    if not rows:
        session.commit()
        return None
    taken: list[Any] = []
    for (status, old_owner), group in group_by(rows, lambda r: (r.status, r.lease_owner)).items():
        guard = sa.and_(_closed_under(status, old_owner), table.lease_expires_at <= now)
        mine = guarded(
            session,
            [{"id": r.id} for r in group],
            guard,
            {"lease_owner": owner, "lease_expires_at": at + lease},
        )
        taken += [r for r in group if r.id in mine]
    session.commit()
    return taken


def _through_the_index(postgres: bool) -> str:
    return "" if postgres else " INDEXED BY ix_messages_closed_unsettled"


def count_overdue(session: so.Session, *, now: datetime) -> int:
    """Marked closed copies whose time to ask the provider has passed (the stuck-texts
    gauge), read from the partial index alone as `_take_closed` reads them."""
    query = sa.text(
        "SELECT count(*) FROM messages"  # noqa: S608 - constants; values bound
        + _through_the_index(is_postgresql(session))
        + f" WHERE {CLOSED_UNSETTLED} AND lease_expires_at < :now"
    ).bindparams(sa.bindparam("now", now, type_=MESSAGES.c.lease_expires_at.type))
    return int(session.scalar(query) or 0)


def _closed_under(status: str, owner: str) -> sa.ColumnElement[bool]:
    """Still closed as read, under `owner`'s lease, and no SID recorded meanwhile."""
    table = MESSAGES.c
    return sa.and_(table.status == status, table.lease_owner == owner, table.provider_sid.is_(None))


def _ask_about_closed(
    *,
    session: so.Session,
    transport: SmsTransport,
    row: Any,
    first: FirstLook,
    now: datetime,
    owner: str,
    lease: timedelta,
    report: ReapReport,
    care: CareContext | None,
) -> None:
    """Record what the provider says of one closed copy this reaper holds (`first`, asked
    beside the batch's others; asked further if that text is another's)."""
    released = {"lease_owner": None, "lease_expires_at": None}
    mine = _closed_under(row.status, owner)
    since = row.handed_at - RECONCILE_SLACK
    try:
        found = find_unrecorded(session, transport, row, since, first=first, asked=True)
    except (NotImplementedError, CannotTell) as exc:
        # As for a text left sending: asked again, it would be asked forever.
        why = "cannot be asked" if isinstance(exc, NotImplementedError) else "cannot tell"
        if guarded(session, [{"id": row.id}], mine, released):
            detail = f"the provider {why}; stays {row.status}: it may have reached the patient"
            add_events(session, [event_row(row.id, now, "checked", row.status, detail)])
            report.held += 1
    except Exception as exc:  # noqa: BLE001 - ask again later, less and less often
        guarded(
            session,
            [{"id": row.id}],
            mine,
            {"lease_expires_at": ask_again_at(now, row.handed_at, exc)},
        )
        report.errors += 1
        log.warning(
            "message %s: asking about a closed copy failed (%s)", row.id, type(exc).__name__
        )
    else:
        if found is None:
            # START came while this copy waited to be asked, and passed it over (it might
            # have been at the provider): it is not, so START's rule applies to it now.
            # Whether the patient opted back in is read only under the locks (PostgreSQL:
            # the patient's row; SQLite: the write lock the guarded UPDATE takes): read
            # before them, a START committing meanwhile would leave the copy closed for
            # good, START having passed it over (`reopen_found_missing` checks it all).
            asked = care if care is not None and row.status == CANCELLED else None
            if asked is not None:
                _lock_patient_and_procedure(session, row.id)
            if guarded(session, [{"id": row.id}], mine, released):
                _settle_found_missing(session, row, now=now, care=asked, report=report)
        else:
            values = {
                **released,
                "status": SENT,
                "provider_sid": found.provider_sid,
                "segments": found.segments,
                "sent_at": row.handed_at,
                "updated_at": now,
            }
            try:
                with session.begin_nested():  # a SID another text recorded meanwhile
                    ours = guarded(session, [{"id": row.id}], mine, values)
            except sa.exc.IntegrityError:
                ours = set()
                guarded(session, [{"id": row.id}], mine, {"lease_expires_at": now + lease})
                report.errors += 1
            if ours:
                detail = f"{FOUND_AT_PROVIDER} though {row.status}: sid {found.provider_sid}"
                add_events(session, [event_row(row.id, now, "reconciled", SENT, detail)])
                report.reconciled += 1
                log.warning("message %s: a closed copy was found at the provider", row.id)
                # A 21610 for a copy its patient's opt-out closed comes from that STOP: a
                # START since stands.
                # Closed, it stays closed: a failure that passes (30001) is not retried.
                apply_found_status(
                    session, row.id, found, now, opt_out=not _opted_back_in(session, row),
                    retry=False,
                )  # fmt: skip
    session.commit()


def _opted_back_in(session: so.Session, row: Any) -> bool:
    """A copy cancelled by its patient's opt-out, who has opted back in since (a 21610 on
    it comes from that opt-out)."""
    if row.status != CANCELLED:
        return False
    return bool(
        session.scalar(
            sa.select(sa.literal(True))
            .select_from(Message)
            .join(Patient, Patient.id == Message.patient_id)
            .where(
                Message.id == row.id,
                Patient.opted_out_at.is_(None),
                Patient.sms_consent_at.is_not(None),
                cancelled_by_opt_out(),
            )
        )
    )


def _lock_patient_and_procedure(session: so.Session, message_id: int) -> None:
    """On PostgreSQL, lock the text's patient, then its procedure, before the text: START's
    order (and a nurse's edit's: the procedure before its texts), never the opposite. On
    SQLite the guarded UPDATE that follows takes the write lock before anything is read.

    FOR NO KEY UPDATE, as the UPDATE of a START or a STOP takes: it waits for those, but
    not for the key-share lock a foreign key takes. A nurse finishing the procedure holds
    it and inserts the texts after it, whose foreign key locks the patient's row: a FOR
    UPDATE here (held while waiting for the procedure) would deadlock with her."""
    if not is_postgresql(session):
        return
    patient_id, procedure_id = session.execute(
        sa.select(Message.patient_id, Message.procedure_id).where(Message.id == message_id)
    ).one()
    session.execute(
        sa.select(Patient.id).where(Patient.id == patient_id).with_for_update(key_share=True)
    )
    session.execute(
        sa.select(Procedure.id).where(Procedure.id == procedure_id).with_for_update(key_share=True)
    )


def _settle_found_missing(
    session: so.Session, row: Any, *, now: datetime, care: CareContext | None, report: ReapReport
) -> None:
    """Record that the provider does not have a closed copy (released by the caller). With
    `care` (a cancelled copy, its patient and procedure locked), START's rule for it if its
    patient's opt-out cancelled it and they have opted back in (`reopen_found_missing`), at
    the times START plans, re-planning its procedure if the intro must move."""
    fate, procedure, patient = (
        reopen_found_missing(session=session, message_id=row.id, care=care, now=now)
        if care is not None
        else (STAYS, None, None)
    )
    if fate == BACK:
        detail = f"{NOT_AT_PROVIDER}; the patient opted back in: send again"
        add_events(session, [event_row(row.id, now, "requeued", PENDING, detail)])
        report.requeued += 1
        return
    detail = f"{NOT_AT_PROVIDER}; stays {row.status}"
    add_events(session, [event_row(row.id, now, "checked", row.status, detail)])
    if fate == REPLAN and care is not None and procedure is not None and patient is not None:
        replan_procedure(session=session, procedure=procedure, patient=patient, care=care, now=now)
