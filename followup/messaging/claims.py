"""The dispatcher's queries on the queue: expire what is overdue, claim what is due under a
lease, when to look next, and the statements a pass reuses (lease renewal, hand-over read).
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects.postgresql import ARRAY

from followup.db import UTCDateTime, is_postgresql
from followup.messaging.events import (
    MESSAGES,
    add_events,
    event_row,
    status_is,
)
from followup.messaging.handover import Claimed, PatientCopy, ProcedureCopy
from followup.messaging.models import (
    EXPIRED,
    PENDING,
    SENDING,
)
from followup.patients.models import Patient, Procedure

LEASE = timedelta(seconds=60)  # a claimed text is ours this long past the last heartbeat
# A reaper's name on the leases it takes ends so (`reaper_owner`): its lease on a text
# whose outcome is unknown does not hold up the patient's other texts (`_held_elsewhere`).
REAPER_SUFFIX = "/reap"


def reaper_owner(owner: str) -> str:
    """The name a process's reaper takes its leases under: never one of a dispatcher's."""
    return f"{owner}{REAPER_SUFFIX}"


def parked_owner(owner: str) -> str:
    """The name a dispatcher parks a text for the reaper under (an answer left its outcome
    unknown): a reaper's (its lease holds up none of the patient's texts), but one no
    reaper pass takes leases under. Parked under the reap job's own name, a text that job
    was still asking the provider about (its lease run out meanwhile, another reaper took
    it, found nothing, and it went again with a 5xx) took the job's late "not found" as
    its own, and went a third time: the patient got it twice."""
    return f"{owner}^{REAPER_SUFFIX}"


def expire_overdue(*, session: so.Session, now: datetime) -> int:
    """Mark pending texts whose window has closed as expired; return how many.

    One UPDATE over the index range (status, due_at) of texts already due: a pending text
    always falls due before its window closes, so texts not yet due are never read. The
    event says why, with the last error when retries were under way.
    """
    table = MESSAGES.c
    rows = session.execute(
        sa.update(MESSAGES)
        .where(table.status == PENDING, table.due_at <= now, table.expires_at <= now)
        .values(status=EXPIRED, updated_at=now)
        .returning(table.id, table.error_code)
    ).all()
    add_events(
        session,
        [
            event_row(
                message_id,
                now,
                "expired",
                EXPIRED,
                "not sent before its expiry" + (f"; last error {code}" if code else ""),
            )
            for message_id, code in rows
        ],
    )
    return len(rows)


def claim_due(
    *,
    session: so.Session,
    now: datetime,
    owner: str,
    limit: int,
    lease: timedelta = LEASE,
    lease_now: datetime | None = None,
) -> list[int]:
    """Lease up to `limit` due texts to `owner`; return their ids in due order (the caller
    commits). Due at `now`; leases written and judged at `lease_now` (default `now`: this
    host's clock for a pass pinned with `--now`, which other processes' leases keep to).

    Due order by `due_at` alone: an index range on (status, due_at), never a sort of every
    text due at the same second. A patient's texts are one dispatcher's at a time, so that
    they arrive one after another, the intro first (turns.py orders them within a pass):
    none is claimed while another dispatcher holds one of the patient's texts under a live
    lease (claimed, or handed over and not yet answered). On PostgreSQL two claims at once
    could each take part of one patient's texts, neither seeing the other's uncommitted
    claim: each first takes a transaction-scoped advisory lock per patient, without
    waiting (a patient another claim is taking is left to it, for its next claim). On
    SQLite the UPDATE runs under the database's write lock and sees every committed claim.
    """
    postgresql = is_postgresql(session)
    due, claim = _claim_statements(postgresql)
    params = {"p_now": now, "p_owner": owner, "p_lease_now": lease_now or now}
    candidates = session.execute(due, {**params, "p_limit": limit}).all()
    if not candidates:
        return []
    if postgresql:
        patients = set(_patients_locked(session, sorted({row.patient_id for row in candidates})))
        candidates = [row for row in candidates if row.patient_id in patients]
    ids = [row.id for row in candidates]
    if not ids:
        return []
    claimed = session.scalars(
        claim,
        {
            **params,
            "p_ids": ids if postgresql else json.dumps(ids),
            "v_lease": (lease_now or now) + lease,
        },
    ).all()
    add_events(session, [event_row(i, now, "claimed", SENDING, f"by {owner}") for i in claimed])
    mine = set(claimed)
    return [i for i in ids if i in mine]  # in due order


@lru_cache(maxsize=2)
def _claim_statements(postgresql: bool) -> tuple[sa.Select[Any], sa.Update]:
    """The claim's read of due texts and its UPDATE, built once (p_now, p_lease_now,
    p_owner, p_limit; p_ids and v_lease for the UPDATE)."""
    table = MESSAGES.c
    now = sa.bindparam("p_now", type_=UTCDateTime())
    lease_now = sa.bindparam("p_lease_now", type_=UTCDateTime())
    owner = sa.bindparam("p_owner", type_=sa.String())
    ready = (
        table.due_at <= now,
        table.expires_at > now,
        sa.or_(table.not_before.is_(None), table.not_before <= now),
    )
    # The patients another dispatcher holds are passed over here already, not only in the
    # UPDATE: else their texts, first in due order, could fill the whole `limit`, and the
    # claim come back empty (its pass thinking itself caught up) while texts of patients
    # nobody holds wait behind them for that lease to run out.
    due = (
        sa.select(table.id, table.patient_id)
        .where(table.status == PENDING, *ready, ~_held_elsewhere(owner, lease_now))
        .order_by(table.due_at)
        .limit(sa.bindparam("p_limit", type_=sa.Integer()))
    )
    if postgresql:
        due = due.with_for_update(skip_locked=True)
        chosen = table.id == sa.any_(sa.bindparam("p_ids", type_=ARRAY(sa.Integer())))
    else:
        rows = sa.func.json_each(sa.bindparam("p_ids", type_=sa.Text()))
        chosen = table.id.in_(sa.select(sa.literal_column("value")).select_from(rows))
    # Every condition again, in the UPDATE: on SQLite the SELECTs hold no lock, and another
    # process may have claimed, re-planned (a later due time) or deferred a text since.
    claim = (
        sa.update(MESSAGES)
        .where(chosen, status_is(PENDING), *ready, ~_held_elsewhere(owner, lease_now))
        .values(
            status=SENDING,
            lease_owner=owner,
            lease_expires_at=sa.bindparam("v_lease", type_=UTCDateTime()),
            claimed_at=now,
            handed_at=None,
            updated_at=now,
        )
        .returning(table.id)
    )
    return due, claim


# The advisory locks' class (their first key): "a dispatcher is claiming this patient's texts".
PATIENT_CLAIM_LOCK = 0x46550001


def _patients_locked(session: so.Session, patients: list[int]) -> list[int]:
    """Those of `patients` whose claim lock this transaction holds now (taken without
    waiting; released at its commit or rollback)."""
    return list(
        session.scalars(
            sa.text(
                "SELECT p FROM unnest(CAST(:patients AS integer[])) AS p"
                " WHERE pg_try_advisory_xact_lock(:lock_class, p)"
            ),
            {"patients": patients, "lock_class": PATIENT_CLAIM_LOCK},
        )
    )


def _held_elsewhere(owner: sa.ColumnElement[str], now: sa.ColumnElement[datetime]) -> sa.Exists:
    """Another dispatcher holds one of this text's patient's texts under a live lease:
    claimed, or handed over and its answer not yet recorded; or this one does, handed over
    by an earlier pass (one whose turn the database rolled back while its call was under
    way: the next pass, with nothing in flight of its own, sent the patient's next text
    beside it). An unknown outcome the
    dispatcher recorded (a timeout, a 5xx) waits for the reaper under the reaper's name
    (until its retry time, which can be a long Retry-After away) and an exception's for a
    lease; a reaper's lease, which may last while the provider cannot be asked, holds up
    nothing: within a pass, too, a text waits for the answer, not for success."""
    table, other = MESSAGES.c, MESSAGES.alias("sibling").c
    return sa.exists().where(
        other.patient_id == table.patient_id,
        # Through the patient's few texts (their index), never a status index: a claim
        # checks every candidate, and reading every text in `sending` for each is
        # quadratic in a busy pass (PostgreSQL, whose statistics saw none in `sending`).
        other.status.concat("") == SENDING,
        sa.or_(other.lease_owner != owner, other.handed_at.is_not(None)),
        other.lease_owner.not_like("%" + REAPER_SUFFIX),
        other.lease_expires_at > now,
    )


def hand_back_unhanded(*, session: so.Session, now: datetime, owner: str) -> list[int]:
    """Put `owner`'s claimed texts never handed over back in the queue; return their ids
    (the caller commits).

    For a dispatcher whose pass failed (its turn rolled back: a deadlock, a lost
    connection): nothing of these reached the provider (a call starts only after its
    hand-over is committed), and no pass of `owner` holds them any more, so they go again
    now rather than when their lease runs out. A hand-over under way elsewhere under the
    same owner is refused by its guard once they are back (a claim is handed over once).
    """
    table = MESSAGES.c
    ids = session.scalars(
        sa.update(MESSAGES)
        .where(table.status == SENDING, table.lease_owner == owner, table.handed_at.is_(None))
        .values(status=PENDING, lease_owner=None, lease_expires_at=None, updated_at=now)
        .returning(table.id)
    ).all()
    detail = "its dispatcher's pass failed before the hand-over"
    add_events(session, [event_row(i, now, "requeued", PENDING, detail) for i in ids])
    return list(ids)


def _parked_for_the_reaper() -> sa.ColumnElement[bool]:
    """Texts in `sending` under a reaper's name: an answer left the outcome unknown (a 5xx,
    a timeout), and the provider is asked about them when that lease runs out, at their
    retry time (outcomes.py), or a reaper is asking about them now. Few: read through the
    leading status of (status, due_at)."""
    table = MESSAGES.c
    return sa.and_(table.status == SENDING, table.lease_owner.like(f"%{REAPER_SUFFIX}"))


def asks_due(*, session: so.Session, now: datetime) -> bool:
    """Whether a text parked for the reaper has reached its retry time: the provider is
    to be asked about it now, and the text sent again if it does not have it."""
    table = MESSAGES.c
    due = sa.exists().where(_parked_for_the_reaper(), table.lease_expires_at <= now)
    return bool(session.scalar(sa.select(due)))


def next_wake(
    *,
    session: so.Session,
    now: datetime,
    owner: str | None = None,
    lease_now: datetime | None = None,
    parked: bool = True,
) -> datetime | None:
    """When the dispatcher next has work: `now` if a text is ready (or its window closed),
    else the earliest due time, retry or end of quiet hours, or expiry among pending texts,
    or retry time of a text parked for the reaper (`asks_due`); None if there is none.

    One statement over index ranges of (status, due_at): the next text due after `now`, and
    the backlog already due (a retry's or a deferral's `not_before`, and every expiry: a
    pending text always falls due before its window closes). The dispatcher's idle poll.
    Without the parked texts' retry times, a last try after a 5xx squeezed in before quiet
    hours waited for the reaper's next round (every 20 s), usually after 21:00, and the
    text expired unsent (`tests/messaging/test_unknown_outcome_last_try.py`).
    For a dispatcher (`owner`), a text another dispatcher holds a text of its patient for
    is not ready: the loop sleeps until the next text it can send, not a whole poll. Leases
    are judged at `lease_now` (the lease clock's instant, as the claim judges them).
    Without `parked`, texts parked for the reaper are left out (a loop whose clock is
    pinned: their retry times are on this host's clock, and its reaper may not run).
    """
    table = MESSAGES.c
    backlog = sa.and_(table.status == PENDING, table.due_at <= now)
    ready = sa.exists().where(backlog, sa.or_(table.not_before.is_(None), table.not_before <= now))
    if owner is not None:
        leases_at = sa.literal(lease_now or now, UTCDateTime())
        ready = ready.where(~_held_elsewhere(sa.literal(owner), leases_at))
    next_due = (
        sa.select(table.due_at)
        .where(table.status == PENDING, table.due_at > now)
        .order_by(table.due_at)
        .limit(1)
        .scalar_subquery()
    )
    next_retry = (
        sa.select(sa.func.min(table.not_before))
        .where(backlog, table.not_before > now)
        .scalar_subquery()
    )
    next_expiry = sa.select(sa.func.min(table.expires_at)).where(backlog).scalar_subquery()
    next_ask = (
        sa.select(sa.func.min(table.lease_expires_at))
        .where(_parked_for_the_reaper())
        .scalar_subquery()
    )
    asks = [next_ask] if parked else []
    row = session.execute(sa.select(ready, next_due, next_retry, next_expiry, *asks)).one()
    if row[0]:
        return now
    instants = [_aware(value) for value in row[1:] if value is not None]
    return max(min(instants), now) if instants else None


def _aware(value: datetime | str) -> datetime:
    """A subquery's datetime as aware UTC (SQLite hands back naive UTC or text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=1)
def renew_statement() -> sa.Update:
    """The heartbeat: extend the leases of texts still ours."""
    table = MESSAGES.c
    return (
        sa.update(MESSAGES)
        .where(
            table.id.in_(sa.bindparam("p_ids", expanding=True)),
            status_is(SENDING),
            table.lease_owner == sa.bindparam("p_owner"),
        )
        .values(lease_expires_at=sa.bindparam("v_lease"))
        .returning(table.id)
    )


_MESSAGE_COLUMNS = (
    "id", "patient_id", "step", "status", "lease_owner", "due_at", "expires_at", "attempts"
)  # fmt: skip
_PATIENT_COLUMNS = tuple(f.name for f in fields(PatientCopy))
_PROCEDURE_COLUMNS = tuple(f.name for f in fields(ProcedureCopy))


@lru_cache(maxsize=1)
def handover_read() -> sa.Select[Any]:
    """A group's texts (the columns the hand-over needs) with their patient's and
    procedure's, as they are now (plain columns: nothing cached in the session)."""
    table = MESSAGES.c
    patients = cast(sa.Table, Patient.__table__).c
    procedures = cast(sa.Table, Procedure.__table__).c
    return (
        sa.select(
            *(table[name] for name in _MESSAGE_COLUMNS),
            *(patients[name] for name in _PATIENT_COLUMNS),
            *(procedures[name] for name in _PROCEDURE_COLUMNS),
        )
        .select_from(MESSAGES)
        .join(Patient.__table__, patients.id == table.patient_id)
        .join(Procedure.__table__, procedures.id == table.procedure_id)
        .where(table.id.in_(sa.bindparam("p_ids", expanding=True)))
    )


def read_claimed(session: so.Session, ids: list[int]) -> list[Claimed]:
    """The texts `ids` with their patient and procedure, as committed (or written by this
    transaction) now."""
    claimed = []
    m, p = len(_MESSAGE_COLUMNS), len(_PATIENT_COLUMNS)
    for row in session.execute(handover_read(), {"p_ids": ids}):
        values: Any = tuple(row)
        claimed.append(
            Claimed(
                **dict(zip(_MESSAGE_COLUMNS, values[:m], strict=True)),
                patient=PatientCopy(*values[m : m + p]),
                procedure=ProcedureCopy(*values[m + p :]),
            )
        )
    return claimed
