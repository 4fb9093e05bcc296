"""What a nurse must be told about texts that already went out when a procedure changes:
nothing takes a text back, so where its words are now wrong in a way that matters (a
blood thinner restarted too early, or stopped for a procedure that will not happen),
staff call the patient."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import AFTER, BEFORE, CareContext, correction_key, step_key
from followup.care.texts import describe_date, short_local
from followup.care.timing import Anchors
from followup.messaging.models import DELIVERED, SENT, Message, MessageEvent
from followup.patients.models import Procedure


def _reached(message: Message) -> bool:
    """The provider took it and has not reported it undelivered or failed."""
    return message.status in (SENT, DELIVERED) and message.provider_sid is not None


def sent_too_early(
    message: Message | None,
    *,
    care: CareContext,
    kind: str,
    tz: ZoneInfo,
    completed_at: datetime | None,
) -> str | None:
    """The note for a text that went out naming its own time ("You may restart your Eliquis
    from 3:30 PM") before that time counted from the new completion (one corrected to
    later); None when there is no such text."""
    if message is None or message.sent_at is None or not _reached(message):
        return None
    step = care.protocol(kind).step(message.step)
    variants = (step.texts, step.texts_blood_thinner or {}, step.texts_first or {})
    if not any("{from_time}" in text for texts in variants for text in texts.values()):
        return None
    try:
        new_time = step.send.resolve(Anchors(completed_at=completed_at), tz)
    except ValueError:  # nothing to count from after the change
        return None
    if message.sent_at >= new_time:
        return None
    return (
        f"sent {short_local(message.sent_at, tz)}, before its time from the new completion "
        f"({short_local(new_time, tz)}): call the patient, who may act on it too early"
    )


def sent_with_old_value(
    message: Message | None, *, care: CareContext, kind: str, moved: Collection[str]
) -> str | None:
    """The note for a text before the procedure that went out naming the booked time or
    stop date a reschedule moves, and that is not sent again with the new one (its new
    time has passed: a stop date moved to today, after the reminder's window)."""
    if message is None or not _reached(message):
        return None
    step = care.protocol(kind).step(message.step)
    named = [anchor for anchor in ("stop", "scheduled") if anchor in moved and step.names(anchor)]
    if not named:
        return None
    what = "stop date" if named[0] == "stop" else "booked time"
    return f"sent with the old {what}; the new one cannot be texted in time: call the patient"


def told_to_stop_blood_thinner(
    *, session: so.Session, procedure_id: int, care: CareContext
) -> str | None:
    """For a cancelled procedure, staff's warning when the patient stopped their blood
    thinner for it (a text before it told them to, or it was done) and no text told them
    when to take it again (the restart, cancelled with the rest); None otherwise."""
    procedure = session.get(Procedure, procedure_id)
    if procedure is None or procedure.blood_thinner is None:
        return None
    protocol = care.protocols.get(procedure.kind)
    if protocol is None:
        return None
    restart, stop = [], []
    for step in protocol.steps:
        if not step.applies(has_blood_thinner=True) or step.intro:
            continue
        if step.phase == AFTER and step.when == "blood_thinner":
            restart.append(step.key)
        elif step.phase == BEFORE and any(
            "{blood_thinner}" in step.template(language, has_blood_thinner=True, first=False)
            for language in step.texts
        ):
            stop.append(step.key)
    # A text the provider took has its SID; one a reschedule planned again ("renewed" at
    # its time before the new date, or corrected) no longer does, but its history keeps the
    # copy the patient has. A correction ("<step>.correction") told them as its step does.
    steps = restart + stop + [correction_key(key) for key in stop]
    reached = sa.or_(
        Message.provider_sid.is_not(None),
        sa.exists().where(
            MessageEvent.message_id == Message.id, MessageEvent.status.in_((SENT, DELIVERED))
        ),
    )
    sent = {
        step_key(key)
        for key in session.scalars(
            sa.select(Message.step).where(
                Message.procedure_id == procedure_id, Message.step.in_(steps), reached
            )
        )
    }
    if sent & set(restart) or (procedure.completed_at is None and not sent & set(stop)):
        return None
    when = (
        f" on {describe_date(procedure.stop_blood_thinner_on, 'en')}"
        if procedure.stop_blood_thinner_on is not None and sent & set(stop)
        else ""
    )
    told = "was texted to stop" if sent & set(stop) else "stopped"
    return (
        f"The patient {told} their {procedure.blood_thinner}{when} for this procedure, and no "
        "text will tell them when to take it again: call them."
    )
