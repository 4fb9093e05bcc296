"""Handling the queue's items, and what the patient's page and the patients list show of them.

Handling any item takes a note (a held text, `unknown`, a decision too: inbox/held.py);
the note, who and when are kept on the item, shown on the
patient's page (`handled_notes`) and audited. `patient_flags` and `flag_condition` mark
the patients who cannot receive texts, opted out, or have open items.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.service import record_audit
from followup.db import is_postgresql
from followup.errors import NotFound, ValidationError
from followup.inbox.held import check_decision, settle_held
from followup.inbox.items import reply_reason
from followup.inbox.models import (
    AttentionResolution,
    UnreachableResolution,
)
from followup.inbox.queue import (
    ATTENTION_KINDS,
    CANNOT_RECEIVE,
    DECISIONS,
    FAILURE_STATUSES,
    MAX_NOTE,
    REPLY,
    TEXT,
    UNKNOWN,
    UNREACHABLE,
    critical_queries,
    held_filter,
    open_failures,
    open_reply_filter,
    unreachable_covered,
)
from followup.messaging.models import (
    InboundMessage,
    Message,
    MessageEvent,
)
from followup.patients.models import Patient

log = logging.getLogger(__name__)


# --- handling -----------------------------------------------------------------------------


def mark_handled(
    *,
    session: so.Session,
    kind: str,
    item_id: int,
    note: str,
    actor: str,
    now: datetime,
    decision: str | None = None,
    seen: str | None = None,
) -> None:
    """Take an item off the queue with a note; its history stays (the caller commits).

    `item_id` is the reply's id, the text's id (text, unknown), or (unreachable) the
    patient's id. A held text (unknown) takes a `decision` too (DECISIONS); no other does.
    `seen` (a critical text's item, from the page) is the text's last change as the person
    read it: if it changed since, nothing is written (ValidationError('item')).
    """
    note = (note or "").strip()
    if kind not in ATTENTION_KINDS:
        raise ValidationError("kind", f"must be one of: {', '.join(ATTENTION_KINDS)}")
    if not note:
        raise ValidationError("note", "is required: say what was done")
    if len(note) > MAX_NOTE:
        raise ValidationError("note", f"is longer than {MAX_NOTE} characters")
    settle = check_decision(decision) if kind == UNKNOWN else ""
    if kind != UNKNOWN and decision:
        raise ValidationError("decision", f"applies only to {UNKNOWN} items")
    handled = "handled"
    if kind == REPLY:
        record_type = _handle_reply(session, item_id, note, actor, now)
    elif kind == TEXT:
        record_type = _handle_text(session, item_id, note, actor, now, _seen_at(seen))
    elif kind == UNKNOWN:
        settle_held(
            session=session,
            message_id=item_id,
            decision=settle,
            note=note,
            actor=actor,
            now=now,
        )
        record_type = "message"
        handled = f"settled ({DECISIONS[settle].lower()})"
    else:
        record_type = _handle_unreachable(session, item_id, note, actor, now)
    record_audit(
        session=session,
        actor=actor,
        action="attention.handled",
        now=now,
        record_type=record_type,
        record_id=item_id,
        detail=f"{kind} {item_id} {handled}: {note}"[:500],
    )
    log.info("attention item %s:%s handled%s", kind, item_id, f" ({settle})" if settle else "")


def _handle_reply(session: so.Session, item_id: int, note: str, actor: str, now: datetime) -> str:
    done = session.execute(
        sa.update(InboundMessage)
        .where(InboundMessage.id == item_id, InboundMessage.handled_at.is_(None))
        .values(handled_at=now, handled_by=actor, handled_note=note)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        reply = session.get(InboundMessage, item_id)
        if reply is None:
            raise NotFound(f"no reply {item_id}")
        session.refresh(reply)
        raise ValidationError("item", f"was already handled by {reply.handled_by}")
    return "inbound_message"


def _seen_at(seen: str | None) -> datetime | None:
    """The text's last change as the page showed it, or None (the CLI, an older page)."""
    if not seen:
        return None
    try:
        at = datetime.fromisoformat(seen)
    except ValueError:
        raise ValidationError("item", "was read from a page this app did not write") from None
    if at.tzinfo is None:
        raise ValidationError("item", "was read from a page this app did not write")
    return at


def _handle_text(
    session: so.Session,
    item_id: int,
    note: str,
    actor: str,
    now: datetime,
    seen_at: datetime | None = None,
) -> str:
    """Mark the critical text's problem handled: the text as it is now (`problem_at`), and
    only if that is the one the person read (`seen_at`): a text brought back and failed
    again while the note was written is a new problem, which the note does not cover.

    Two people handling it at once go one after the other: on PostgreSQL the text's row is
    locked first; on SQLite the event is written first, which takes the database's write
    lock before the marks are read. The second is told who handled it.
    """
    read = sa.select(Message).where(Message.id == item_id).execution_options(populate_existing=True)
    if is_postgresql(session):
        read = read.with_for_update()
    message = session.scalars(read).first()
    if message is None:
        raise NotFound(f"no text {item_id}")
    session.add(
        MessageEvent(
            message_id=item_id, at=now, kind="handled", status=message.status, detail=f"by {actor}"
        )
    )
    session.flush()
    message = session.scalars(read).one()
    done = session.scalar(
        sa.select(AttentionResolution.handled_by)
        .where(
            AttentionResolution.message_id == item_id,
            AttentionResolution.problem_at >= message.updated_at,
        )
        .order_by(AttentionResolution.id.desc())
        .limit(1)
    )
    if done is not None:
        raise ValidationError("item", f"was already handled by {done}")
    if seen_at is not None and message.updated_at > seen_at:
        raise ValidationError(
            "item", f"changed since the page was read (it is {message.status} now): read it again"
        )
    session.add(
        AttentionResolution(
            message_id=item_id,
            problem_at=message.updated_at,
            handled_at=now,
            handled_by=actor,
            note=note,
        )
    )
    return "message"


def _handle_unreachable(
    session: so.Session, patient_id: int, note: str, actor: str, now: datetime
) -> str:
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"no patient {patient_id}")
    # The newest failure (its number is the one later failures to the same are covered
    # for): the last to fail, not the highest id (texts do not fail in the order planned).
    newest = session.scalar(
        sa.select(Message.id)
        .where(
            Message.patient_id == patient_id,
            Message.status.in_(FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            ~unreachable_covered(),
        )
        .order_by(Message.updated_at.desc(), Message.id.desc())
        .limit(1)
    )
    if newest is None:
        raise ValidationError("item", "was already handled: nothing is open for this patient")
    try:
        with session.begin_nested():
            session.add(
                UnreachableResolution(
                    patient_id=patient_id,
                    message_id=newest,
                    handled_at=now,
                    handled_by=actor,
                    note=note,
                )
            )
    except sa.exc.IntegrityError as exc:
        raise ValidationError("item", "was already handled by someone else") from exc
    return "patient"


# --- what the patient's page and the patients list show ------------------------------------


@dataclass(frozen=True)
class HandledNote:
    """A handled item, for the patient's timeline."""

    at: datetime
    kind: str
    reason: str
    handled_by: str
    note: str


def handled_notes(*, session: so.Session, patient_id: int) -> list[HandledNote]:
    """Every note written when handling this patient's items, oldest first."""
    notes = [
        HandledNote(r.handled_at, REPLY, reply_reason(r), r.handled_by or "", r.handled_note or "")
        for r in session.scalars(
            sa.select(InboundMessage).where(
                InboundMessage.patient_id == patient_id, InboundMessage.handled_at.is_not(None)
            )
        )
        if r.handled_at is not None
    ]
    for resolution, step, status in session.execute(
        sa.select(AttentionResolution, Message.step, Message.status)
        .join(Message, Message.id == AttentionResolution.message_id)
        .where(Message.patient_id == patient_id)
    ).all():
        notes.append(
            HandledNote(
                resolution.handled_at,
                TEXT,
                f"{step} {status}",
                resolution.handled_by,
                resolution.note,
            )
        )
    for unreachable in session.scalars(
        sa.select(UnreachableResolution).where(UnreachableResolution.patient_id == patient_id)
    ):
        notes.append(
            HandledNote(
                unreachable.handled_at,
                UNREACHABLE,
                "cannot receive texts",
                unreachable.handled_by,
                unreachable.note,
            )
        )
    notes.sort(key=lambda n: n.at)
    return notes


FLAG_UNREACHABLE = "unreachable"
FLAG_OPTED_OUT = "opted-out"
FLAG_OPEN = "open"
PATIENT_FLAGS = {
    FLAG_UNREACHABLE: "Cannot receive texts",
    FLAG_OPTED_OUT: "Opted out",
    FLAG_OPEN: "Has open items",
}


@dataclass(frozen=True)
class PatientFlags:
    unreachable: bool = False
    opted_out: bool = False
    open_items: int = 0


def _unreachable_patients() -> Any:
    """Patients whose current number failed with a cannot-receive error."""
    return (
        sa.select(Message.patient_id)
        .join(Patient, Patient.id == Message.patient_id)
        .where(
            Message.status.in_(FAILURE_STATUSES),
            Message.error_code.in_(sorted(CANNOT_RECEIVE)),
            Message.to_phone == Patient.phone,
        )
    )


def _open_item_patients(critical_steps: frozenset[str]) -> Any:
    parts: list[Any] = [
        sa.select(InboundMessage.patient_id).where(
            open_reply_filter(), InboundMessage.patient_id.is_not(None)
        ),
        open_failures(),
        sa.select(Message.patient_id).where(held_filter()),
    ]
    if critical_steps:
        ids = sa.union_all(
            *(sa.select(q.subquery().c.id) for q in critical_queries(critical_steps, True))
        ).subquery()
        parts.append(sa.select(Message.patient_id).where(Message.id.in_(sa.select(ids.c.id))))
    return sa.union(*parts)


def flag_condition(flag: str, critical_steps: frozenset[str]) -> sa.ColumnElement[bool]:
    """Which patients a patients-list filter keeps; ValidationError('show') if unknown."""
    if flag == FLAG_OPTED_OUT:
        return Patient.opted_out_at.is_not(None)
    if flag == FLAG_UNREACHABLE:
        return Patient.id.in_(_unreachable_patients())
    if flag == FLAG_OPEN:
        return Patient.id.in_(_open_item_patients(critical_steps))
    raise ValidationError("show", f"must be one of: {', '.join(PATIENT_FLAGS)}")


def patient_flags(
    *, session: so.Session, patient_ids: Sequence[int], critical_steps: frozenset[str]
) -> dict[int, PatientFlags]:
    """For each listed patient: cannot receive texts, opted out, open items."""
    ids = sorted(set(patient_ids))
    if not ids:
        return {}
    unreachable = set(session.scalars(_unreachable_patients().where(Message.patient_id.in_(ids))))
    opted_out = set(
        session.scalars(
            sa.select(Patient.id).where(Patient.id.in_(ids), Patient.opted_out_at.is_not(None))
        )
    )
    open_counts: dict[int, int] = defaultdict(int)
    for reply_patient, count in session.execute(
        sa.select(InboundMessage.patient_id, sa.func.count())
        .where(open_reply_filter(), InboundMessage.patient_id.in_(ids))
        .group_by(InboundMessage.patient_id)
    ):
        if reply_patient is not None:
            open_counts[reply_patient] += count
    for patient_id in session.scalars(
        open_failures().where(Message.patient_id.in_(ids)).distinct()
    ):
        open_counts[patient_id] += 1
    for patient_id, count in session.execute(
        sa.select(Message.patient_id, sa.func.count())
        .where(held_filter(), Message.patient_id.in_(ids))
        .group_by(Message.patient_id)
    ):
        open_counts[patient_id] += count
    for query in critical_queries(critical_steps, True) if critical_steps else []:
        sub = query.subquery()
        for patient_id, count in session.execute(
            sa.select(Message.patient_id, sa.func.count())
            .where(Message.id.in_(sa.select(sub.c.id)), Message.patient_id.in_(ids))
            .group_by(Message.patient_id)
        ):
            open_counts[patient_id] += count
    return {
        i: PatientFlags(i in unreachable, i in opted_out, open_counts.get(i, 0))
        for i in ids
        if i in unreachable or i in opted_out or open_counts.get(i)
    }
