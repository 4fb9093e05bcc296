"""Prometheus metrics, through the official prometheus-client.

Two kinds, both on the runtime's own registry (nothing is registered at import time):

- **this process's events**: provider requests (latency, errors by code), hand-over
  lateness, scheduler job runs and what they did, Twilio webhook requests. Counters start
  at zero with each process; Prometheus scrapes every process and adds them up.
- **the database's state**, read when Prometheus scrapes: texts by status and step, texts
  overdue or stuck, the needs-attention queue by kind. Every process reports the same
  figures (alert rules take `max` over instances). Each query is an index range over
  texts still in flight or recent, never a scan of the whole history.

No label ever carries patient data: labels are step keys, statuses, job names, error
codes and transport names, all from small fixed sets.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from followup.messaging.transports.base import (
    OutgoingSms,
    PermanentSendError,
    SendError,
    SendResult,
    SmsTransport,
)

if TYPE_CHECKING:
    import sqlalchemy.orm as so

    from followup.care.protocol import CareContext
    from followup.clock import Clock
    from followup.inbox.queue import Queue

# Seconds. Provider requests: Twilio answers in about 0.1-0.5 s; the timeout is 10 s.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds from a text's due time to its hand-over: seconds normally, hours on a bad day.
LATENESS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)

RECENT_WINDOW = timedelta(days=7)  # followup_texts_recent: texts due since then, or later
OVERDUE_AFTER = timedelta(minutes=2)  # a ready text not handed over this long after it was due
ATTENTION_SCAN = 200  # items of the needs-attention queue read per scrape: as its page shows


class Metrics:
    """This process's registry and instruments."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` twin for every series: half the scrape, and nothing alerts on it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.provider_request_seconds = Histogram(
            "followup_provider_request_seconds",
            "Time the SMS provider took to answer one request.",
            ["transport", "operation"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "followup_provider_errors",
            "Provider requests that failed, by the provider's error code "
            "(or network, timeout) and whether a retry can help.",
            ["transport", "operation", "code", "kind"],
            registry=r,
        )
        self.handover_lateness = Histogram(
            "followup_handover_lateness_seconds",
            "How long after its due time each text was handed to the provider.",
            ["step"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.job_runs = Counter(
            "followup_job_runs",
            "Scheduler job runs, by job and outcome (ok or failed).",
            ["job", "outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "followup_job_duration_seconds",
            "How long each scheduler job run took.",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_last_success = Gauge(
            "followup_job_last_success_timestamp_seconds",
            "When each scheduler job last finished without an error (Unix time).",
            ["job"],
            registry=r,
        )
        self.job_results = Counter(
            "followup_job_results",
            "What the job runs did: texts planned, sent, retried, failed, expired, "
            "reconciled, patients purged, ...",
            ["job", "result"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "followup_webhook_requests",
            "Twilio webhook requests, by endpoint and outcome "
            "(accepted, refused for a bad signature, bad_request, error).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.delivery_reports = Counter(
            "followup_delivery_reports",
            "Delivery reports Twilio posted and followup accepted, by the status reported "
            "(delivered, undelivered, failed, ...).",
            ["status"],
            registry=r,
        )
        self.clock_skew = Gauge(
            "followup_clock_skew_seconds",
            "The database server's clock minus this host's, at the reaper's last pass "
            "(PostgreSQL); past 5 s either way the reaper does not run.",
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._database: DatabaseCollector | None = None
        self._lock = threading.Lock()

    def watch_database(
        self,
        *,
        session_factory: so.sessionmaker[so.Session],
        care: CareContext,
        clock: Clock,
    ) -> None:
        """Report the database's figures on every scrape (once per registry)."""
        with self._lock:
            if self._database is None:
                self._database = DatabaseCollector(
                    session_factory=session_factory, care=care, clock=clock
                )
                self.registry.register(self._database)

    @contextmanager
    def provider_request(self, transport: str, operation: str) -> Iterator[None]:
        """Time one provider request and count it if it fails."""
        started = time.perf_counter()
        try:
            yield
        except NotImplementedError:
            raise  # "cannot be asked" (the console transport): not a provider error
        except SendError as exc:
            kind = "permanent" if isinstance(exc, PermanentSendError) else "transient"
            self.provider_errors.labels(transport, operation, exc.code, kind).inc()
            raise
        except Exception:
            self.provider_errors.labels(transport, operation, "unexpected", "unknown").inc()
            raise
        finally:
            self.provider_request_seconds.labels(transport, operation).observe(
                time.perf_counter() - started
            )


# --- the transport, instrumented ----------------------------------------------------------


class InstrumentedTransport:
    """An SmsTransport that times every provider request and counts its errors.

    It wraps whichever transport the settings chose, so the dispatcher, the reaper and the
    status poller are measured without knowing it.
    """

    def __init__(self, inner: SmsTransport, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics

    def send(self, sms: OutgoingSms) -> SendResult:
        with self._metrics.provider_request(self.name, "send"):
            result = self.inner.send(sms)
        if sms.due_at is not None:
            late = max((sms.now - sms.due_at).total_seconds(), 0.0)
            self._metrics.handover_lateness.labels(sms.step).observe(late)
        return result

    def find_sent(
        self, *, to: str, body: str, since: datetime, exclude: Collection[str] = ()
    ) -> SendResult | None:
        with self._metrics.provider_request(self.name, "find"):
            return self.inner.find_sent(to=to, body=body, since=since, exclude=exclude)

    def close(self) -> None:
        close: Callable[[], None] | None = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        # Anything else the wrapped transport offers (its HTTP client, ...), unchanged.
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class InstrumentedStatusTransport(InstrumentedTransport):
    """The same, for a transport that can also be asked for a text's status (Twilio)."""

    def fetch_status(self, provider_sid: str) -> Any:
        with self._metrics.provider_request(self.name, "status"):
            return self.inner.fetch_status(provider_sid)  # type: ignore[attr-defined]


def instrument_transport(transport: SmsTransport, metrics: Metrics) -> SmsTransport:
    """Wrap `transport` so that its requests are measured (once)."""
    if isinstance(transport, InstrumentedTransport):
        return transport
    if callable(getattr(transport, "fetch_status", None)):
        return InstrumentedStatusTransport(transport, metrics)
    return InstrumentedTransport(transport, metrics)


# --- the database, read at scrape time ----------------------------------------------------


def attention_queue(*, session: so.Session, critical_steps: frozenset[str], limit: int) -> Queue:
    """The needs-attention queue and its exact counts (the one place this module reads it)."""
    from followup.inbox.queue import attention_queue as queue

    return queue(session=session, critical_steps=critical_steps, limit=limit)


class DatabaseCollector:
    """Texts and the needs-attention queue as the database has them now."""

    def __init__(
        self,
        *,
        session_factory: so.sessionmaker[so.Session],
        care: CareContext,
        clock: Clock,
    ) -> None:
        self._session_factory = session_factory
        self._care = care
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "followup_database_up", "1 if this process could read the database at this scrape."
        )
        try:
            families = self._read(self._clock.now())
        except Exception:  # noqa: BLE001 - a scrape reports the database down, never a 500
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, now: datetime) -> list[Metric]:
        import sqlalchemy as sa

        from followup.messaging.closed_copies import count_overdue
        from followup.messaging.models import PENDING, SENDING, Message

        recent = GaugeMetricFamily(
            "followup_texts_recent",
            "Texts due in the last 7 days or later, by status and step.",
            labels=["status", "step"],
        )
        overdue = GaugeMetricFamily(
            "followup_texts_overdue",
            "Texts ready to go (due over 2 minutes ago, not waiting for a retry or quiet "
            "hours, not expired) that no worker has handed to the provider yet, by step.",
            labels=["step"],
        )
        oldest = GaugeMetricFamily(
            "followup_texts_overdue_oldest_seconds",
            "How long the longest-waiting overdue text has been due (0 if none).",
        )
        retrying = GaugeMetricFamily(
            "followup_texts_retrying",
            "Pending texts that failed at least once and wait for their next attempt.",
        )
        stuck = GaugeMetricFamily(
            "followup_texts_stuck",
            "Texts left in `sending` past their lease (a worker died or the provider did "
            "not answer), which the reaper settles, or held there for a person; and closed "
            "copies the provider was to be asked about by now.",
        )
        attention = GaugeMetricFamily(
            "followup_attention_items",
            "Items waiting in the needs-attention queue, by kind "
            f"(reply, text, unreachable, unknown; counted up to {ATTENTION_SCAN} of each).",
            labels=["kind"],
        )
        attention_age = GaugeMetricFamily(
            "followup_attention_oldest_seconds",
            "How long the oldest unhandled item of each kind has waited (0 if none).",
            labels=["kind"],
        )
        urgent = GaugeMetricFamily(
            "followup_attention_urgent",
            "Urgent replies (warning signs, pain 7+) waiting in the needs-attention queue.",
        )
        urgent_age = GaugeMetricFamily(
            "followup_attention_urgent_oldest_seconds",
            "How long the oldest unhandled urgent reply has waited (0 if none).",
        )
        with self._session_factory() as session:
            # ix_messages_due_at_id: one range over the window, however long the history.
            # MATERIALIZED keeps the planner from grouping along another index instead,
            # which reads every text ever sent (SQLite does, without it).
            window = (
                sa.select(Message.status, Message.step)
                .where(Message.due_at >= now - RECENT_WINDOW)
                .cte("recent_texts")
                .prefix_with("MATERIALIZED")
            )
            for status, step, count in session.execute(
                sa.select(window.c.status, window.c.step, sa.func.count()).group_by(
                    window.c.status, window.c.step
                )
            ):
                recent.add_metric([status, step], count)
            # ix_messages_status_due_at: pending texts only.
            ready_since = now - OVERDUE_AFTER
            earliest: datetime | None = None
            for step, count, first_due in session.execute(
                sa.select(Message.step, sa.func.count(), sa.func.min(Message.due_at))
                .where(
                    Message.status == PENDING,
                    Message.due_at < ready_since,
                    Message.expires_at > now,
                    sa.or_(Message.not_before.is_(None), Message.not_before <= ready_since),
                )
                .group_by(Message.step)
            ):
                overdue.add_metric([step], count)
                first: datetime = first_due  # min() keeps the column's type: aware UTC
                earliest = first if earliest is None or first < earliest else earliest
            oldest.add_metric([], (now - earliest).total_seconds() if earliest else 0.0)
            retrying.add_metric(
                [],
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Message)
                    .where(Message.status == PENDING, Message.attempts > 0)
                )
                or 0,
            )
            # ix_messages_status_due_at's status: the few texts in flight; and through
            # ix_messages_closed_unsettled, copies closed while a request of theirs may be
            # at the provider, which the reaper has not asked about in time.
            stuck.add_metric(
                [],
                (
                    session.scalar(
                        sa.select(sa.func.count())
                        .select_from(Message)
                        .where(
                            Message.status == SENDING,
                            # Held for a person (the reaper released its lease): no one
                            # else will ever settle it.
                            sa.or_(
                                Message.lease_expires_at < now,
                                Message.lease_expires_at.is_(None),
                            ),
                        )
                    )
                    or 0
                )
                + count_overdue(session, now=now),
            )
            queue = attention_queue(
                session=session, critical_steps=self._care.critical_steps(), limit=ATTENTION_SCAN
            )
        counts: dict[str, int] = {}
        waited: dict[str, float] = {}
        urgent_waited = 0.0
        for item in queue.items:
            counts[item.kind] = counts.get(item.kind, 0) + 1
            age = max((now - item.at).total_seconds(), 0.0)
            waited[item.kind] = max(waited.get(item.kind, 0.0), age)
            if item.urgent:
                urgent_waited = max(urgent_waited, age)
        for kind in ("reply", "text", "unreachable", "unknown"):
            attention.add_metric([kind], counts.get(kind, 0))
            attention_age.add_metric([kind], waited.get(kind, 0.0))
        urgent.add_metric([], queue.urgent_count)
        urgent_age.add_metric([], urgent_waited)
        return [
            recent,
            overdue,
            oldest,
            retrying,
            stuck,
            attention,
            attention_age,
            urgent,
            urgent_age,
        ]


# --- exposition ---------------------------------------------------------------------------


def token_matches(authorization: str | None, token: str) -> bool:
    """Check an `Authorization: Bearer ...` header against the token, in constant time."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        value = ""
    return hmac.compare_digest(value.strip().encode(), token.encode())


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format Prometheus asked for (text, or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
