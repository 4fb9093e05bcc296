"""What a procedure's texts are, as re-planning sees them: read fresh (and locked before
they are overwritten), whether each is still unsent and ours to change, and what the
texts' history says of their requests (closed ones that may have reached the patient all
the same, retries none of whose requests may be at the provider)."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.db import in_ids, is_postgresql, sqlite_write_lock
from followup.messaging.events import FOUND_AT_PROVIDER, NOT_AT_PROVIDER
from followup.messaging.models import (
    CANCELLED,
    EXPIRED,
    PENDING,
    SENDING,
    Message,
    MessageEvent,
)
from followup.patients.models import Procedure

REPLANNABLE = (PENDING, EXPIRED)


def claimed_only(message: Message) -> bool:
    """Claimed by a dispatcher but not handed over: still unsent, so still ours to change
    (the dispatcher's guard then finds it no longer `sending` and does not send it)."""
    return message.status == SENDING and message.handed_at is None


def outcome_open(message: Message) -> bool:
    """Handed over, its outcome not known yet: a request under way, or one the provider
    may or may not have taken (the reaper asks it). It keeps its status, but takes the new
    times: if it did not reach the patient, it is sent again at them, not at the old ones."""
    return message.status == SENDING and message.handed_at is not None


def replannable(message: Message) -> bool:
    return message.status in REPLANNABLE or claimed_only(message)


def unsent_retry(message: Message) -> bool:
    """Handed over before but refused for now (a transient error): waiting for its retry,
    or claimed for it. It never reached the patient, so it follows the new times too (an
    expired one stays expired: its failure is already a person's to follow up)."""
    return message.status == PENDING or claimed_only(message)


def procedure_messages(
    *, session: so.Session, procedure_id: int, lock: bool = False
) -> dict[str, Message]:
    """A procedure's texts by step, freshly read.

    With `lock` (before writing them), no dispatcher can claim or hand over one of them
    until this transaction ends: on PostgreSQL the rows are locked (a dispatcher's claim
    skips them, its guard waits); on SQLite the transaction takes the database's write
    lock first (a no-op write to the procedure), so what is read is what is overwritten.
    """
    query = (
        sa.select(Message)
        .where(Message.procedure_id == procedure_id)
        .order_by(Message.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        if is_postgresql(session):
            query = query.with_for_update(of=Message)
        else:
            sqlite_write_lock(session, cast(sa.Table, Procedure.__table__))
    return {m.step: m for m in session.scalars(query)}


def request_facts(session: so.Session, existing: dict[str, Message]) -> tuple[set[str], set[str]]:
    """What `existing`'s history says of their requests, for `decide_replan` (one query):
    the steps closed (cancelled, expired) that may have reached the patient all the same,
    and the steps waiting for a retry none of whose requests may be at the provider
    (refused for now, or found missing there by the reaper). See `maybe_at_provider`."""
    closed = {m.id: step for step, m in existing.items() if m.status in (CANCELLED, EXPIRED)}
    waiting = {m.id: step for step, m in existing.items() if m.attempts > 0 and unsent_retry(m)}
    maybe = maybe_at_provider(session, [*closed, *waiting])
    maybe_reached = {step for i, step in closed.items() if i in maybe}
    refused = {step for i, step in waiting.items() if i not in maybe}
    return maybe_reached, refused


def maybe_at_provider(session: so.Session, ids: list[int]) -> set[int]:
    """Those of `ids` a request of which may have reached the provider: an unknown outcome
    that no later answer of the reaper's settled (NOT_AT_PROVIDER; or FOUND_AT_PROVIDER: the
    copy was recorded, and what became of it is known by its SID, or `failed_copies` once a
    30001 expired the text without it). A newer hand-over's refusal, a cancellation or an
    expiry says nothing of an older request."""
    if not ids:
        return set()
    maybe: dict[int, bool] = {}
    for message_id, kind, detail in session.execute(
        sa.select(MessageEvent.message_id, MessageEvent.kind, MessageEvent.detail)
        .where(
            in_ids(session, MessageEvent.message_id, ids),
            MessageEvent.kind.in_(
                ("requeued", "expired", "checked", "outcome-unknown", "reconciled")
            ),
        )
        .order_by(MessageEvent.id)
    ):
        if kind == "outcome-unknown":
            maybe[message_id] = True
        elif (detail or "").startswith((NOT_AT_PROVIDER, FOUND_AT_PROVIDER)):
            maybe[message_id] = False
    return {message_id for message_id, value in maybe.items() if value}
