"""Corrections after a reschedule: a text before the procedure that went out naming the
booked time or the stop date a reschedule moved is corrected by a text of its own, at once
(out of quiet hours), so that the patient does not act on the old date; the step's usual
text for the new date still goes at its usual time, unless that comes soon after the
correction (or has passed): then the one text says it all.

A correction is a row of the outbox keyed `<step>.correction` (`correction_key`): same
words as its step, rendered at hand-over from the procedure's current times, so it is
cancelled, closed and sent again as any text of that step (`replan.py` decides it).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from followup.care.planner import PlannedText
from followup.care.timing import QuietHours, defer_past_quiet_hours
from followup.messaging.models import DELIVERED, PENDING, SENT, Message
from followup.messaging.text_state import claimed_only

# A correction stands in for its step's usual text when that would come less than this
# after it: the same words twice within a few hours (or the same afternoon) tell the
# patient nothing new. Further apart, the usual text comes the day before as ever, with the
# instructions that matter on the eve (fasting, a driver, the blood thinner).
CORRECTION_STANDS_IN = timedelta(hours=12)


def held(message: Message | None) -> bool:
    """The provider took it: the patient has it, with the values it was rendered with."""
    return (
        message is not None
        and message.status in (SENT, DELIVERED)
        and message.provider_sid is not None
    )


def still_to_go(message: Message | None) -> bool:
    """Pending, or claimed and not handed over: not sent yet, still ours to change."""
    return message is not None and (message.status == PENDING or claimed_only(message))


def correction_plan(
    *, planned: PlannedText, key: str, now: datetime, tz: ZoneInfo, quiet_hours: QuietHours
) -> tuple[PlannedText, bool]:
    """The correction's plan (keyed `key`): at once out of quiet hours, or at the step's
    usual time if that comes first, in the step's window; and whether the step's usual text
    goes as well, at its time (more than `CORRECTION_STANDS_IN` after the correction)."""
    at = min(defer_past_quiet_hours(now, tz, quiet_hours), planned.due_at)
    correction = replace(planned, step=key, due_at=at)
    return correction, planned.due_at - at >= CORRECTION_STANDS_IN
