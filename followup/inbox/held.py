"""Settling a held text: the queue's `unknown` items.

The reaper holds a text it cannot settle itself: handed to the provider, its lease run
out, and the provider cannot be asked or cannot tell whether it went out (reconcile.py).
It is never resent on a guess; a nurse or admin who has checked (Twilio's console, a call
to the patient) settles it with a note:

- `sent`: it reached the provider; recorded `sent` at its hand-over;
- `resend`: it did not; back to `pending` for the dispatcher, whose usual checks (quiet
  hours, expiry, opt-out, the procedure) apply at its hand-over. Only while its window is
  open (HANDOVER_MARGIN), the patient has not opted out and the procedure is not cancelled;
- `cancel`: it is not to go out; `cancelled`, never sent again (START does not bring it
  back: the reason is not an opt-out's).

Each decision is one UPDATE guarded on the text being held still: a late answer of the
dispatcher's, or anyone else, that settled it meanwhile wins, and nothing is written.
The two final decisions also record an AttentionResolution with the note (the patient's
page shows it, and the `text` kind does not raise a critical text a person just settled,
until it changes again);
a resent text gets none, so if it then fails or expires, a critical one is raised again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NoReturn

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.texts import short_local
from followup.care.timing import zone
from followup.errors import NotFound, ValidationError
from followup.inbox.models import AttentionResolution
from followup.inbox.queue import (
    DECISIONS,
    SETTLE_CANCEL,
    SETTLE_RESEND,
    SETTLE_SENT,
    held_filter,
)
from followup.messaging.events import add_events, event_row
from followup.messaging.models import CANCELLED, PENDING, SENT, Message
from followup.messaging.retries import HANDOVER_MARGIN
from followup.patients.models import Patient, Procedure

log = logging.getLogger(__name__)


def check_decision(decision: str | None) -> str:
    """The decision, or ValidationError('decision') when it is missing or unknown."""
    if not decision:
        raise ValidationError("decision", "is required: it was sent, send it again, or do not send")
    if decision not in DECISIONS:
        raise ValidationError("decision", f"must be one of: {', '.join(DECISIONS)}")
    return decision


def settle_held(
    *,
    session: so.Session,
    message_id: int,
    decision: str,
    note: str,
    actor: str,
    now: datetime,
) -> str:
    """Settle a held text as `decision` (checked by the caller) in one guarded UPDATE; the
    caller audits and commits. Returns the text's new status.

    NotFound if there is no such text; ValidationError('item') if it is not held (any
    more), ValidationError('decision') if it cannot be sent again; nothing written then.
    """
    guard = [Message.id == message_id, held_filter()]
    values: dict[str, object]
    status = {SETTLE_SENT: SENT, SETTLE_RESEND: PENDING, SETTLE_CANCEL: CANCELLED}[decision]
    if decision == SETTLE_SENT:
        values = {
            "status": status,
            "sent_at": Message.handed_at,
            "error_message": None,
            "updated_at": now,
        }
    elif decision == SETTLE_RESEND:
        guard += [
            Message.expires_at > now + HANDOVER_MARGIN,
            ~sa.exists().where(Patient.id == Message.patient_id, Patient.opted_out_at.is_not(None)),
            ~sa.exists().where(
                Procedure.id == Message.procedure_id, Procedure.status == "cancelled"
            ),
        ]
        values = {"status": status, "handed_at": None, "not_before": None, "updated_at": now}
    else:
        values = {"status": status, "updated_at": now}
    settled = session.execute(
        sa.update(Message)
        .where(*guard)
        .values(values)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    ).first()
    if settled is None:
        _refuse(session, message_id, decision, now)
    kind = {SENT: "settled", PENDING: "requeued", CANCELLED: "cancelled"}[status]
    detail = f"settled by staff ({actor}): {DECISIONS[decision].lower()}"
    event = event_row(message_id, now, kind, status, detail)
    add_events(session, [event])
    if decision in (SETTLE_SENT, SETTLE_CANCEL):
        _resolve(session, message_id, note, actor, now)
    log.info("message %s: held text settled (%s)", message_id, decision)
    return status


def _resolve(session: so.Session, message_id: int, note: str, actor: str, now: datetime) -> None:
    """Keep the note on the text (the patient's page), covering it as the settling UPDATE
    left it (`problem_at`: its `updated_at`, `now`)."""
    session.add(
        AttentionResolution(
            message_id=message_id, problem_at=now, handled_at=now, handled_by=actor, note=note
        )
    )
    session.flush()


def _refuse(session: so.Session, message_id: int, decision: str, now: datetime) -> NoReturn:
    """Say why the guarded UPDATE wrote nothing: no such text, not held, or not resendable."""
    row = session.execute(
        sa.select(
            Message.status,
            Message.expires_at,
            Patient.opted_out_at,
            Patient.timezone,
            Procedure.status,
            held_filter(),
        )
        .join(Patient, Patient.id == Message.patient_id)
        .join(Procedure, Procedure.id == Message.procedure_id)
        .where(Message.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no text {message_id}")
    status, expires_at, opted_out_at, timezone, procedure_status, held = row
    if not held or decision != SETTLE_RESEND:  # the others are guarded on the hold alone
        raise ValidationError("item", f"was already settled: the text is {status} now")
    if opted_out_at is not None:
        why = "the patient opted out"
    elif procedure_status == "cancelled":
        why = "the procedure was cancelled"
    else:
        closes = short_local(expires_at, zone(timezone))
        why = f"its window closed at {closes}"
        if expires_at > now:
            why = f"its window closes at {closes}, too soon to hand it over"
    raise ValidationError(
        "decision", f'cannot be "send it again": {why}; choose "it was sent" or "do not send"'
    )
