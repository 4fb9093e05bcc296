"""The planner: which texts a procedure gets, and when. Pure: no database, web or network.

A booked procedure gets the steps before it (the welcome, the blood-thinner stop reminder,
the day-before text); once it is done, the steps after it. The first text a patient
receives introduces the program: the welcome for a booked procedure, otherwise the first
post-procedure text (its `first_text`), or the welcome when that text cannot carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from followup.care.protocol import AFTER, BEFORE, Protocol, Step
from followup.care.timing import STOP, Anchors, QuietHours, defer_past_quiet_hours

PENDING = "pending"
EXPIRED = "expired"


@dataclass(frozen=True)
class PlannedText:
    """One step of one procedure's plan."""

    step: str
    nominal_at: datetime  # the step's own instant, before quiet hours
    due_at: datetime  # the earliest instant it may go out
    expires_at: datetime  # it never goes out at or after this instant
    status: str  # PENDING or EXPIRED


def plan_step(
    *,
    step: Step,
    tz: ZoneInfo,
    quiet_hours: QuietHours,
    now: datetime,
    completed_at: datetime | None = None,
    anchors: Anchors | None = None,
) -> PlannedText:
    """Plan one step: never before its instant, never in quiet hours, never at expiry.

    `anchors` carries the procedure's times (`completed_at` alone is enough after it);
    "enrolled" steps count from `now`. A step before the procedure never goes out once
    the procedure's booked time has come.
    """
    anchors = anchors or Anchors(completed_at=completed_at)
    if anchors.enrolled_at is None:
        anchors = replace(anchors, enrolled_at=now)
    nominal = step.send.resolve(anchors, tz)
    expires = step.expires.resolve(anchors, tz)
    if step.phase == BEFORE and anchors.scheduled_at is not None:
        expires = min(expires, anchors.scheduled_at.astimezone(UTC))
    # Late enrollment: what is still in its window goes out now (quiet hours permitting).
    earliest = max(nominal, now.astimezone(UTC))
    due = defer_past_quiet_hours(earliest, tz, quiet_hours)
    status = EXPIRED if due >= expires else PENDING
    return PlannedText(
        step=step.key, nominal_at=nominal, due_at=due, expires_at=expires, status=status
    )


def plan_procedure(
    *,
    protocol: Protocol,
    tz: ZoneInfo,
    has_blood_thinner: bool,
    quiet_hours: QuietHours,
    now: datetime,
    completed_at: datetime | None = None,
    scheduled_at: datetime | None = None,
    stop_on: date | None = None,
) -> list[PlannedText]:
    """Plan the steps of the procedure's current phase, in protocol order.

    Done (`completed_at` given): the steps after it. Booked (`scheduled_at` only): the
    welcome and the steps before it. The welcome a completed procedure may need instead is
    `choose_intro`'s business.
    """
    anchors = Anchors(
        completed_at=completed_at, scheduled_at=scheduled_at, stop_on=stop_on, enrolled_at=now
    )
    if completed_at is not None:
        steps = protocol.phase_steps(AFTER, has_blood_thinner=has_blood_thinner)
    elif scheduled_at is not None:
        steps = protocol.phase_steps(BEFORE, has_blood_thinner=has_blood_thinner)
        if has_blood_thinner and stop_on is None:
            steps = [s for s in steps if s.send.anchor != STOP]  # nothing to time it by
        intro = protocol.intro_step
        steps = ([intro] if intro is not None else []) + steps
    else:
        raise ValueError("a procedure needs a completion or a booked time to be planned")
    return [
        plan_step(step=step, tz=tz, quiet_hours=quiet_hours, now=now, anchors=anchors)
        for step in steps
    ]


def choose_intro(
    *,
    protocol: Protocol,
    planned: list[PlannedText],
    tz: ZoneInfo,
    quiet_hours: QuietHours,
    now: datetime,
) -> tuple[str | None, PlannedText | None]:
    """Pick the text that introduces the program to a patient who has had none yet.

    Returns the step key that carries the introduction and, when the first pending text
    cannot carry it (no first_text: a late enrollment), the welcome to send now as well.
    (None, None) when nothing will be sent at all.
    """
    pending = sorted((p for p in planned if p.status == PENDING), key=lambda p: p.due_at)
    if not pending:
        return None, None
    first = pending[0]
    step = protocol.step(first.step)
    if step.intro or step.texts_first is not None:
        return first.step, None
    welcome = protocol.intro_step
    if welcome is None:
        return None, None
    text = plan_step(step=welcome, tz=tz, quiet_hours=quiet_hours, now=now)
    # It goes out now (quiet hours permitting), and not once the first text's window closed.
    expires = min(text.expires_at, first.expires_at)
    status = EXPIRED if text.due_at >= expires else PENDING
    return welcome.key, replace(text, expires_at=expires, status=status)
