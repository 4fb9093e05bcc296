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


@dataclass
class DispatchReport(Report):
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    deferred: int = 0
    unknown: int = 0


@dataclass
class ReapReport(Report):
    stale: int = 0
    reconciled: int = 0
    requeued: int = 0
    held: int = 0
    expired: int = 0
    failed: int = 0


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
