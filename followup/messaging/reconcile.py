"""Reaping: settle texts left in `sending` after their lease ran out, never sending twice.

A text is in `sending` past its lease only when its dispatcher died (or stalled beyond its
heartbeat), or when the provider's answer left its outcome unknown. The reaper:

1. locks a batch of such texts (`FOR UPDATE SKIP LOCKED` on PostgreSQL: two reapers never
   settle the same text; SQLite runs one writer at a time);
2. requeues (or expires) at once those never handed to the transport (`handed_at` NULL);
3. takes the lease of the others for itself, in the same guarded UPDATE, and commits, so
   the dead dispatcher's late writes (guarded on its own lease) can no longer land;
4. asks the provider about each, outside any transaction, and records what it says:
   found, `sent` with the provider's SID; not found, sent again (or expired).

It also asks about copies closed (cancelled, expired) while a request of theirs may have
reached the provider (closed_copies.py).

Every UPDATE is guarded on status `sending` and the lease owner it read. A pass repeats
until no stale text is left: it settles all of them, not one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import Clock
from followup.db import is_postgresql
from followup.messaging.claims import LEASE, REAPER_SUFFIX, reaper_owner, renew_statement
from followup.messaging.closed_copies import reap_closed
from followup.messaging.events import (
    FOUND_AT_PROVIDER,
    MESSAGES,
    NOT_AT_PROVIDER,
    add_events,
    event_row,
    settle_leased,
    status_is,
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
    EXPIRED,
    PENDING,
    SENDING,
    SENT,
    Message,
)
from followup.messaging.reports import ReapReport
from followup.messaging.retries import HANDOVER_MARGIN
from followup.messaging.status import (
    apply_held_status_reports,
)
from followup.messaging.transports.base import CannotTell, SmsTransport

log = logging.getLogger(__name__)

REAP_BATCH = 500


def reap_stale(
    *,
    session: so.Session,
    transport: SmsTransport,
    now: datetime,
    owner: str = reaper_owner("reaper"),
    lease: timedelta = LEASE,
    batch: int = REAP_BATCH,
    care: CareContext | None = None,
    clock: Clock | None = None,
    parked_only: bool = False,
    stopping: Callable[[], bool] | None = None,
) -> ReapReport:
    """Settle every text left in `sending` after its lease ran out, without sending twice.

    `owner` names this reaper on the leases it takes while asking the provider (it must
    differ from any dispatcher's). Where the transport cannot be asked, a text that may
    have reached it is held for a person to settle (never resent on a guess). Then
    applies delivery reports held for SIDs now recorded (`apply_held_status_reports`).
    `care` (the protocols) lets a closed copy found missing at the provider, whose patient
    opted back in while it waited to be asked, follow START's rule; without it, it stays
    closed (START, if it comes later, brings it back). With `clock`, each text is settled
    at the clock's instant when it is (a pass asks the provider about many: its events'
    times are when each was settled, not when the pass began); `now` is the pass's start.
    `parked_only`: only texts parked for a reaper whose retry time has come (an answer left
    their outcome unknown), none of a crashed dispatcher's and no closed copies: the
    dispatcher loop's prompt pass at a retry time (jobs.dispatcher), which must not wait
    behind the texts a crashed worker left. Once `stopping()` (the process is told to
    stop), the pass ends after the part under way: the rest of its batch goes back stale
    at once, for the next reaper (a worker asking a slow provider about a dead worker's
    texts outlived systemd's stop timeout and was killed mid-pass); within a part, no text
    is settled once told to stop (settling one may ask the provider again).
    """

    def instant() -> datetime:
        return max(now, clock.now()) if clock is not None else now

    report = ReapReport()
    throttled: float | None = None  # seconds: the provider asked to slow down (429)
    while throttled is None:
        # Only texts stale when the pass began: one it puts off (asked again later) or
        # that goes stale meanwhile waits for the next pass, so a pass always ends, however
        # long the provider takes to answer. Each batch is taken under a whole lease from
        # the instant it is taken: counted from the pass's start, a batch taken after a
        # slow one would be stale again at once, and another reaper would take it and ask
        # about it while this one does.
        taken = _take_batch(
            session=session, now=now, at=instant(), owner=owner, lease=lease, batch=batch,
            report=report, parked_only=parked_only,
        )  # fmt: skip
        if taken is None:
            break
        while taken:
            part, taken = taken[:REAP_PART], taken[REAP_PART:]
            looks = first_looks(transport, part)
            for i, row in enumerate(part):
                if stopping is not None and stopping():
                    # A text's settling may ask again, one text after another (a failed
                    # copy looked past): told to stop, what is left goes back stale.
                    taken = part[i:] + taken
                    break
                _reconcile(
                    session=session,
                    transport=transport,
                    row=row,
                    first=looks[row.id],
                    now=instant(),
                    owner=owner,
                    lease=lease,
                    report=report,
                    care=care,
                )
            throttled = slow_down(looks.values())
            if throttled is not None:
                break
            if stopping is not None and stopping() and taken:
                _put_off(session, taken, owner=owner, until=instant())
                session.commit()
                taken = []
                break
            # The batch's texts not asked about yet: a whole lease again from now. A batch
            # of 500 at a slow provider's list latency outlasts one lease, and another
            # reaper would take its tail and ask about it again meanwhile.
            taken = _renew(session, taken, owner=owner, until=instant() + lease)
        if throttled is not None:
            # The provider asked us to slow down (429): the rest of the batch is asked about
            # after its Retry-After, by a later pass, and this pass asks nothing more.
            _put_off(session, taken, owner=owner, until=instant() + timedelta(seconds=throttled))
            report.put_off += len(taken)
            log.warning("reaper throttled by the provider: %d texts asked later", len(taken))
            session.commit()
        if stopping is not None and stopping():
            break
    if throttled is None and not parked_only:
        # Copies closed while at the provider: asked about next pass too.
        reap_closed(
            session=session, transport=transport, now=instant(), owner=owner, lease=lease,
            batch=batch, report=report, care=care, instant=instant, stopping=stopping,
        )  # fmt: skip
    # Delivery reports that came before their text was recorded (the dispatcher applies
    # those of its own answers at once; this catches the rest, e.g. texts reconciled here).
    applied, dropped = apply_held_status_reports(session=session, now=instant(), care=care)
    session.commit()
    report.early_reports_applied += applied
    report.early_reports_dropped += dropped
    return report


def _put_off(session: so.Session, rows: list[Any], *, owner: str, until: datetime) -> None:
    """Keep texts this reaper holds under its lease until `until`, not asked about yet:
    stale again then, a later pass (this reaper's or another's) takes and asks them."""
    settle_leased(
        session,
        owner=owner,
        values={"lease_expires_at": until},
        rows=[{"id": row.id} for row in rows],
    )


def _renew(session: so.Session, rows: list[Any], *, owner: str, until: datetime) -> list[Any]:
    """Extend this reaper's lease on `rows` to `until` (the dispatcher's heartbeat statement,
    committed); return those still ours."""
    if not rows:
        return []
    params = {"p_owner": owner, "v_lease": until, "p_ids": [row.id for row in rows]}
    kept = set(session.scalars(renew_statement(), params))
    session.commit()
    return [row for row in rows if row.id in kept]


def _take_batch(
    *,
    session: so.Session,
    now: datetime,
    at: datetime,
    owner: str,
    lease: timedelta,
    batch: int,
    report: ReapReport,
    parked_only: bool = False,
) -> list[Any] | None:
    """Lock a batch of texts stale at `now` (the pass's start); requeue those never handed
    over; take the rest's lease, for a whole lease from `at` (the clock's instant now).

    Returns the texts now leased to this reaper (to ask the provider about), or None when
    no stale text is left.
    """
    query = (
        sa.select(
            Message.id,
            Message.lease_owner,
            Message.handed_at,
            Message.expires_at,
            Message.to_phone,
            Message.body,
        )
        .where(Message.status == SENDING, Message.lease_expires_at <= now)
        .order_by(Message.lease_expires_at)
        .limit(batch)
    )
    if parked_only:
        query = query.where(Message.lease_owner.like(f"%{REAPER_SUFFIX}"))
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    stale = session.execute(query).all()
    if not stale:
        session.commit()
        return None
    report.stale += len(stale)
    events: list[dict[str, Any]] = []
    taken: list[Any] = []
    for old_owner, rows in group_by(list(stale), lambda r: r.lease_owner).items():
        never = [r for r in rows if r.handed_at is None]
        too_late = [{"id": r.id} for r in never if r.expires_at <= at + HANDOVER_MARGIN]
        again = [{"id": r.id} for r in never if r.expires_at > at + HANDOVER_MARGIN]
        released = {"lease_owner": None, "lease_expires_at": None, "updated_at": at}
        guard = _stale_guard(old_owner, now)
        for i in guarded(session, too_late, guard, {"status": EXPIRED, **released}):
            events.append(event_row(i, at, "expired", EXPIRED, "never handed over; window closed"))
            report.expired += 1
        for i in guarded(
            session, again, guard, {"status": PENDING, "not_before": None, **released}
        ):
            events.append(event_row(i, at, "requeued", PENDING, "never handed over; send again"))
            report.requeued += 1
        handed = [r for r in rows if r.handed_at is not None]
        mine = guarded(
            session,
            [{"id": r.id} for r in handed],
            guard,
            {"lease_owner": owner, "lease_expires_at": at + lease},
        )
        taken += [r for r in handed if r.id in mine]
    add_events(session, events)
    session.commit()  # the row locks go; our lease keeps the taken texts ours
    return taken


def _stale_guard(old_owner: str | None, now: datetime) -> sa.ColumnElement[bool]:
    """Still `sending`, still under the lease we read, and that lease still run out."""
    table = MESSAGES.c
    owner_is = table.lease_owner.is_(None) if old_owner is None else table.lease_owner == old_owner
    return sa.and_(status_is(SENDING), owner_is, table.lease_expires_at <= now)


def _reconcile(
    *,
    session: so.Session,
    transport: SmsTransport,
    row: Any,
    first: FirstLook,
    now: datetime,
    owner: str,
    lease: timedelta,
    report: ReapReport,
    care: CareContext | None = None,
) -> None:
    """Settle one text this reaper holds from what the provider answered (`first`, asked
    beside the batch's others; asked further if that text is another's)."""
    since = row.handed_at - RECONCILE_SLACK
    released = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    try:
        found = find_unrecorded(session, transport, row, since, first=first, asked=True)
    except (NotImplementedError, CannotTell) as exc:
        # The transport cannot be asked, or its answer can never tell (a number more texts
        # went to since the hand-over than a scan reads): asked again, it would be asked
        # forever out of sight. Held for a person, never resent on a guess.
        why = "" if isinstance(exc, NotImplementedError) else " (the provider cannot tell)"
        if settle_leased(
            session,
            owner=owner,
            values={
                **released,
                "error_message": f"outcome unknown after lease expiry{why}; held, not resent",
            },
            rows=[{"id": row.id}],
        ):
            detail = f"lease expired; outcome unknown{why}"
            add_events(session, [event_row(row.id, now, "held", SENDING, detail)])
            report.held += 1
        log.warning("message %s held: lease expired and the transport cannot tell", row.id)
    except Exception as exc:  # noqa: BLE001 - ask again later, less and less often
        _ask_again_later(session, row, now=now, owner=owner, report=report, exc=exc)
    else:
        if found is not None:
            values = {
                **released,
                "status": SENT,
                "provider_sid": found.provider_sid,
                "segments": found.segments,
                "sent_at": row.handed_at,
            }
            try:
                with session.begin_nested():  # a SID another reaper recorded meanwhile
                    ours = settle_leased(session, owner=owner, values=values, rows=[{"id": row.id}])
            except sa.exc.IntegrityError as exc:
                _ask_again_later(session, row, now=now, owner=owner, report=report, exc=exc)
                ours = set()
            if ours:
                add_events(
                    session,
                    [
                        event_row(
                            row.id,
                            now,
                            "reconciled",
                            SENT,
                            f"{FOUND_AT_PROVIDER}: sid {found.provider_sid}",
                        )
                    ],
                )
                report.reconciled += 1
                apply_found_status(session, row.id, found, now, care=care)
        else:
            _settle_missing(session, row, now=now, owner=owner, report=report)
    session.commit()


def _settle_missing(
    session: so.Session, row: Any, *, now: datetime, owner: str, report: ReapReport
) -> None:
    """The provider does not have a text this reaper holds: expired if its window closes
    by the hand-over margin, else back in the queue. Its window is read in the UPDATE that
    settles it, not taken from the batch's read: a nurse's edit may have re-timed it (a
    text whose outcome is unknown keeps its status and takes the new times) while the
    provider was being asked."""
    table = MESSAGES.c
    closed = table.expires_at <= now + HANDOVER_MARGIN
    ours = (table.id == row.id, status_is(SENDING), table.lease_owner == owner)
    settled = session.execute(
        sa.update(MESSAGES)
        # Not if an earlier request was marked meanwhile (a late answer's take_back): the
        # provider was asked from a later one only.
        .where(*ours, table.handed_at >= row.handed_at)
        .values(
            status=sa.case((closed, EXPIRED), else_=PENDING),
            not_before=sa.case((closed, table.not_before), else_=None),
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(table.status)
    ).first()
    if settled is None:
        # Still ours, marked to be asked from an earlier request: asked again at once (by
        # this pass when its clock stands still, else by the next), from that request on.
        session.execute(
            sa.update(MESSAGES)
            .where(*ours, table.handed_at < row.handed_at)
            .values(lease_expires_at=now, updated_at=now)
        )
        return
    if settled.status == EXPIRED:
        detail = f"{NOT_AT_PROVIDER}; window closed"
        add_events(session, [event_row(row.id, now, "expired", EXPIRED, detail)])
        report.expired += 1
    else:
        detail = f"{NOT_AT_PROVIDER}; send again"
        add_events(session, [event_row(row.id, now, "requeued", PENDING, detail)])
        report.requeued += 1


def _ask_again_later(
    session: so.Session,
    row: Any,
    *,
    now: datetime,
    owner: str,
    report: ReapReport,
    exc: Exception,
) -> None:
    """The provider could not be asked (or its answer not recorded): keep the text under
    this reaper's lease and ask again later, less and less often (and, refused as too
    many requests, not before the provider's Retry-After)."""
    again = ask_again_at(now, row.handed_at, exc)
    settle_leased(session, owner=owner, values={"lease_expires_at": again}, rows=[{"id": row.id}])
    report.errors += 1
    log.warning("message %s: reconcile failed (%s); asked again later", row.id, type(exc).__name__)
