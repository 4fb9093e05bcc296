"""The planner: which texts a procedure gets, and when. Pure: no database, web or network."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from followup.care.protocol import Protocol, Step
from followup.care.timing import QuietHours, defer_past_quiet_hours

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
    completed_at: datetime,
    tz: ZoneInfo,
    quiet_hours: QuietHours,
    now: datetime,
) -> PlannedText:
    """Plan one step: never before its instant, never in quiet hours, never at expiry."""
    nominal = step.send.resolve(completed_at, tz)
    expires = step.expires.resolve(completed_at, tz)
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
    completed_at: datetime,
    tz: ZoneInfo,
    has_blood_thinner: bool,
    quiet_hours: QuietHours,
    now: datetime,
) -> list[PlannedText]:
    """Plan every step of `protocol` that applies to this procedure, in protocol order."""
    return [
        plan_step(step=step, completed_at=completed_at, tz=tz, quiet_hours=quiet_hours, now=now)
        for step in protocol.steps
        if step.applies(has_blood_thinner=has_blood_thinner)
    ]
