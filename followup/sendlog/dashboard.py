"""The admins' dashboard: today's and the week's counts, failures by code, opt-outs, texts
stuck in flight, and a 30-day chart in the clinic's local days (DST-correct), with closed
days' counts cached per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.messaging.models import FAILED, PENDING, SENDING, SENT, UNDELIVERED, Message
from followup.patients.models import Patient


@dataclass(frozen=True)
class Counts:
    sent: int
    delivered: int
    failed: int
    pending: int

    @property
    def delivery_rate(self) -> float | None:
        """Delivered over sent, or None before anything was sent."""
        return self.delivered / self.sent if self.sent else None


@dataclass(frozen=True)
class Dashboard:
    today: Counts
    week: Counts
    failures_by_code: list[tuple[str, int]]
    opt_outs_week: int
    stuck: int  # in `sending`, or `sent` with no delivery report, for too long
    days: list[tuple[date, int, int, int]]  # day, sent, delivered, failed (oldest first)


STUCK_AFTER = timedelta(hours=1)
CLOSED_DAY_TTL = timedelta(minutes=10)


class DailyCache:
    """A process's memory of closed days' counts for the dashboard's chart.

    A day that ended before yesterday changes only when a very late delivery report
    arrives, so its counts are kept for CLOSED_DAY_TTL; today and yesterday are always
    counted live. Thread-safe (waitress serves requests from several threads).
    """

    def __init__(self, ttl: timedelta = CLOSED_DAY_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, date], tuple[datetime, tuple[int, int, int]]] = {}
        self._lock = threading.Lock()

    def get(self, zone_name: str, day: date, now: datetime) -> tuple[int, int, int] | None:
        with self._lock:
            entry = self._entries.get((zone_name, day))
        if entry is None or now - entry[0] >= self.ttl:
            return None
        return entry[1]

    def put(self, zone_name: str, day: date, counts: tuple[int, int, int], now: datetime) -> None:
        with self._lock:
            self._entries[(zone_name, day)] = (now, counts)
            for key in [k for k, (at, _) in self._entries.items() if now - at >= self.ttl]:
                del self._entries[key]


def _counts(session: so.Session, start: datetime, end: datetime) -> Counts:
    sent = session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(Message.sent_at >= start, Message.sent_at < end)
    )
    delivered = session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(Message.delivered_at >= start, Message.delivered_at < end)
    )
    failed = session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(
            Message.status.in_((FAILED, UNDELIVERED)),
            Message.updated_at >= start,
            Message.updated_at < end,
        )
    )
    pending = session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(Message.status == PENDING, Message.due_at >= start, Message.due_at < end)
    )
    return Counts(
        sent=sent or 0, delivered=delivered or 0, failed=failed or 0, pending=pending or 0
    )


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def dashboard(
    *, session: so.Session, now: datetime, tz: ZoneInfo, cache: DailyCache | None = None
) -> Dashboard:
    """The admins' figures, in the clinic's local days."""
    today = now.astimezone(tz).date()
    tomorrow = _local_midnight(today + timedelta(days=1), tz)
    week_start = _local_midnight(today - timedelta(days=6), tz)
    month_start = _local_midnight(today - timedelta(days=29), tz)
    failures = session.execute(
        sa.select(Message.error_code, sa.func.count())
        .where(
            Message.status.in_((FAILED, UNDELIVERED)),
            Message.updated_at >= week_start,
        )
        .group_by(Message.error_code)
        .order_by(sa.func.count().desc())
    ).all()
    opt_outs = session.scalar(
        sa.select(sa.func.count()).select_from(Patient).where(Patient.opted_out_at >= week_start)
    )
    stuck = session.scalar(
        sa.select(sa.func.count())
        .select_from(Message)
        .where(
            sa.or_(
                sa.and_(Message.status == SENDING, Message.claimed_at < now - STUCK_AFTER),
                # A text the care team recorded as sent (a held text settled) has no SID:
                # no report will ever come, and a person has already looked at it.
                sa.and_(
                    Message.status == SENT,
                    Message.sent_at < now - STUCK_AFTER,
                    Message.provider_sid.is_not(None),
                ),
            )
        )
    )
    return Dashboard(
        today=_counts(session, _local_midnight(today, tz), tomorrow),
        week=_counts(session, week_start, tomorrow),
        failures_by_code=[(code or "none", count) for code, count in failures],
        opt_outs_week=opt_outs or 0,
        stuck=stuck or 0,
        days=_daily_cached(session, month_start, today, tz, cache, now),
    )


def _daily_series() -> tuple[tuple[Any, Any], ...]:
    """The chart's three series: the timestamp each counts, and any extra condition."""
    return (
        (Message.sent_at, None),
        (Message.delivered_at, None),
        (Message.updated_at, Message.status.in_((FAILED, UNDELIVERED))),
    )


def _daily_cached(
    session: so.Session,
    start: datetime,
    today: date,
    tz: ZoneInfo,
    cache: DailyCache | None,
    now: datetime,
) -> list[tuple[date, int, int, int]]:
    """The 30-day series, counting only the days the cache does not hold (and the live two)."""
    if cache is None:
        return _daily(session, start, today, tz)
    live_from = today - timedelta(days=1)
    days = [start.date() + timedelta(days=i) for i in range((today - start.date()).days + 1)]
    known = {d: cache.get(tz.key, d, now) for d in days if d < live_from}
    missing = [d for d, counts in known.items() if counts is None]
    counted: dict[date, tuple[int, int, int]] = {}
    if missing:
        for day, sent, delivered, failed in _daily(
            session, _local_midnight(missing[0], tz), missing[-1], tz
        ):
            counted[day] = (sent, delivered, failed)
            cache.put(tz.key, day, counted[day], now)
    for day, sent, delivered, failed in _daily(session, _local_midnight(live_from, tz), today, tz):
        counted[day] = (sent, delivered, failed)
    series: list[tuple[date, int, int, int]] = []
    for day in days:
        sent, delivered, failed = counted.get(day) or known.get(day) or (0, 0, 0)
        series.append((day, sent, delivered, failed))
    return series


def _daily(
    session: so.Session, start: datetime, today: date, tz: ZoneInfo
) -> list[tuple[date, int, int, int]]:
    """Sent, delivered and failed per local day for the 30 days up to today.

    Each local midnight is computed here, DST-correct, and the database counts the rows
    between them (one CASE per row, one GROUP BY per series): nothing is fetched per text.
    """
    days = [start.date() + timedelta(days=i) for i in range((today - start.date()).days + 1)]
    if session.get_bind().dialect.name == "postgresql":
        return _daily_postgresql(session, start, days, tz)
    bounds = [_local_midnight(d + timedelta(days=1), tz) for d in days]
    buckets: dict[int, list[int]] = {i: [0, 0, 0] for i in range(len(days))}
    series = _daily_series()
    for index, (column, condition) in enumerate(series):
        bucket = sa.case(
            *((column < bound, number) for number, bound in enumerate(bounds)), else_=-1
        ).label("bucket")
        query = sa.select(bucket, sa.func.count()).where(column >= start, column < bounds[-1])
        if condition is not None:
            query = query.where(condition)
        for number, count in session.execute(query.group_by(bucket)):
            if number in buckets:
                buckets[number][index] = count
    return [(d, *buckets[i]) for i, d in enumerate(days)]  # type: ignore[misc]


def _daily_postgresql(
    session: so.Session, start: datetime, days: list[date], tz: ZoneInfo
) -> list[tuple[date, int, int, int]]:
    """PostgreSQL buckets by local date itself (AT TIME ZONE follows the zone's DST rules)."""
    end = _local_midnight(days[-1] + timedelta(days=1), tz)
    counts: dict[date, list[int]] = {d: [0, 0, 0] for d in days}
    series = _daily_series()
    for index, (column, condition) in enumerate(series):
        local_day = sa.cast(sa.func.timezone(tz.key, column), sa.Date).label("day")
        query = sa.select(local_day, sa.func.count()).where(column >= start, column < end)
        if condition is not None:
            query = query.where(condition)
        for day, count in session.execute(query.group_by(local_day)):
            if day in counts:
                counts[day][index] = count
    return [(d, *counts[d]) for d in days]  # type: ignore[misc]
