"""What each scheduler job run leaves behind: one log line if it did something, metrics.

A job returns a report of counts (PlanReport, DispatchReport, PurgeReport, ...): a
dataclass of integers. Its non-zero counts become the line ("dispatch: 12 sent,
1 retried") and the `followup_job_results_total{job, result}` counters, so a field a
report gains later is logged and counted without a change here.
"""

from __future__ import annotations

import logging
from dataclasses import fields, is_dataclass
from datetime import datetime

from followup.ops.metrics import Metrics

log = logging.getLogger("followup.jobs")

# Counts that mean a person (or the reaper) has something to settle: logged at WARNING.
WARNING_RESULTS = frozenset({"stale", "held", "unknown", "errors", "clock_skewed"})


def report_counts(report: object) -> dict[str, int]:
    """A report's non-zero integer counts, in field order ({} for anything else)."""
    if not is_dataclass(report) or isinstance(report, type):
        return {}
    counts: dict[str, int] = {}
    for f in fields(report):
        value = getattr(report, f.name)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            counts[f.name] = value
        elif is_dataclass(value) and not isinstance(value, type):
            # A nested report (TickReport's plan/dispatch/reap): prefix its counts.
            counts.update({f"{f.name}_{k}": v for k, v in report_counts(value).items()})
    return counts


def summary(counts: dict[str, int]) -> str:
    """Say counts the way an operator reads them: "12 sent, 1 retried"."""
    return ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in counts.items())


def record_run(
    *, metrics: Metrics, job: str, report: object, seconds: float, now: datetime
) -> dict[str, int]:
    """Count a successful run and log one line if it did anything; return its counts."""
    counts = report_counts(report)
    metrics.job_runs.labels(job, "ok").inc()
    metrics.job_seconds.labels(job).observe(seconds)
    metrics.job_last_success.labels(job).set(now.timestamp())
    for name, value in counts.items():
        metrics.job_results.labels(job, name).inc(value)
    if counts:
        level = logging.WARNING if WARNING_RESULTS & set(counts) else logging.INFO
        log.log(
            level,
            "%s: %s",
            job,
            summary(counts),
            extra={"job": job, "results": counts, "seconds": round(seconds, 3)},
        )
    return counts


def record_failure(*, metrics: Metrics, job: str, seconds: float) -> None:
    """Count a run that raised (the caller logs the failure)."""
    metrics.job_runs.labels(job, "failed").inc()
    metrics.job_seconds.labels(job).observe(seconds)
