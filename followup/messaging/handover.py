"""What a dispatcher's worker thread is handed (`Item`: a text checked, rendered and
guarded) and what it gives back (`Answer`), between turns.py, dispatch.py and outcomes.py;
and what the hand-over reads of each text (`Claimed`, with its patient and procedure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from followup.messaging.transports.base import SendError, SendResult


@dataclass(frozen=True)
class Item:
    """A text checked, rendered and guarded: ready for a worker to hand over."""

    id: int
    patient_id: int
    step: str
    to: str
    body: str
    language: str  # the patient's, as `body` was rendered (the guard checks it is still)
    due_at: datetime
    expires_at: datetime
    attempts: int
    tz: ZoneInfo
    deadline: float  # monotonic: after this the lease may not cover the call
    guarded: float = 0.0  # monotonic: when the guard checked it


@dataclass(frozen=True)
class Answer:
    """What happened to one hand-over, as the worker saw it."""

    item: Item
    at: datetime  # the clock when handed over (or withheld)
    answered_at: datetime
    result: SendResult | None = None
    error: SendError | None = None
    unknown: str | None = None  # the exception type when the transport raised something else
    withheld: str | None = None  # "expired", "quiet", "lease", "stale" or "throttled": not sent
    seconds: float = 0.0  # how long the transport call took
    quiet_end: datetime | None = None


# Plain copies of the columns the hand-over reads, not ORM objects: building, populating
# and tracking two entities per text was a sixth of a pass's own time at the console.
@dataclass(frozen=True, slots=True)
class PatientCopy:
    phone: str
    timezone: str
    language: str
    opted_out_at: datetime | None
    sms_consent_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProcedureCopy:
    kind: str
    status: str
    completed_at: datetime | None
    scheduled_at: datetime | None
    stop_blood_thinner_on: date | None
    blood_thinner: str | None
    intro_step: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed text as the hand-over reads it: its row now, its patient and procedure."""

    id: int
    patient_id: int
    step: str
    status: str
    lease_owner: str | None
    due_at: datetime
    expires_at: datetime
    attempts: int
    patient: PatientCopy
    procedure: ProcedureCopy
