"""Counts of what each pass of the outbox did; printable."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class Report:
    """Counts of what a pass did; printable."""

    def add(self, other: Report) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def __str__(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


@dataclass
class PlanReport(Report):
    procedures: int = 0
    planned: int = 0
    expired: int = 0
    reintroduced: int = 0  # procedures re-planned because their intro text closed unsent


@dataclass
class DispatchReport(Report):
    """One dispatcher pass. Every claimed text ends in exactly one of sent, retried,
    throttled, unknown, failed, cancelled, expired, deferred, returned or lost; `expired` also
    counts pending texts whose window closed before they were claimed, and `cancelled`
    the pending texts of a patient a provider opt-out (21610) cancelled."""

    claimed: int = 0
    sent: int = 0  # accepted by the provider
    retried: int = 0  # transient failure: back to pending, with backoff
    throttled: int = 0  # "too many requests": back to pending after the pause, no backoff
    unknown: int = 0  # may have reached the provider: left `sending` for the reaper
    failed: int = 0  # refused for good
    cancelled: int = 0
    expired: int = 0
    deferred: int = 0  # quiet hours: back to pending until they end
    returned: int = 0  # back to the queue unsent: the dispatcher stopped, or it changed
    lost: int = 0  # our lease ran out before the hand-over: not sent by us


@dataclass
class ReapReport(Report):
    """One reaper pass over texts left `sending` past their lease."""

    stale: int = 0  # found past their lease
    reconciled: int = 0  # found at the provider: recorded as sent
    requeued: int = 0  # not at the provider (or never handed over): pending again
    held: int = 0  # the transport cannot be asked: left for a person
    expired: int = 0  # not at the provider and the window has closed
    errors: int = 0  # the provider could not be asked now: asked again later
    put_off: int = 0  # not asked: the provider asked to slow down (429); a later pass asks
    # Delivery reports that came before their text's SID was recorded (held_status_reports):
    early_reports_applied: int = 0  # its text is recorded now: applied
    early_reports_dropped: int = 0  # no text took its SID in a day: dropped
    # 1 when the pass did not run: this host's clock is too far from the database's.
    clock_skewed: int = 0


@dataclass
class PollReport(Report):
    checked: int = 0
    changed: int = 0
    errors: int = 0


@dataclass
class TickReport:
    plan: PlanReport = field(default_factory=PlanReport)
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    reap: ReapReport = field(default_factory=ReapReport)

    def __str__(self) -> str:
        return f"plan: {self.plan}\ndispatch: {self.dispatch}\nreap: {self.reap}"
