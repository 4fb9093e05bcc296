"""GET /metrics: the token, what a real run shows, the database's figures, no patient data."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from followup.app import create_app
from followup.clock import FakeClock
from followup.db import make_engine, make_session_factory
from followup.messaging.models import InboundMessage, Message
from followup.messaging.transports.console import ConsoleTransport
from followup.messaging.transports.twilio import TwilioTransport
from followup.ops.metrics import (
    InstrumentedStatusTransport,
    InstrumentedTransport,
    Metrics,
    instrument_transport,
    token_matches,
)
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from jobs import tasks
from jobs.scheduler import _guarded
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.conftest import post_signed
from tests.ops.conftest import METRICS_TOKEN

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# --- the endpoint -------------------------------------------------------------------------


def test_metrics_are_off_without_a_token(runtime: Runtime) -> None:
    app = create_app(runtime.settings, runtime=runtime)
    response = app.test_client().get("/metrics")
    assert response.status_code == 404
    assert "METRICS_TOKEN" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token-0123456789", f"Basic {METRICS_TOKEN}", METRICS_TOKEN],
)
def test_metrics_refuse_a_missing_or_wrong_token(
    measured_app: Flask, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = measured_app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "followup_" not in response.get_data(as_text=True)


def test_metrics_answer_the_token_in_prometheus_text_format(measured_app: Flask) -> None:
    client = measured_app.test_client()
    response = client.get("/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    assert "# TYPE followup_provider_request_seconds histogram" in text
    assert "followup_database_up 1.0" in text
    # OpenMetrics for a Prometheus that asks for it.
    openmetrics = client.get(
        "/metrics",
        headers={
            "Authorization": f"Bearer {METRICS_TOKEN}",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).rstrip().endswith("# EOF")


def test_token_comparison() -> None:
    assert token_matches(f"Bearer {METRICS_TOKEN}", METRICS_TOKEN)
    assert token_matches(f"  bearer   {METRICS_TOKEN} ", METRICS_TOKEN)
    assert not token_matches(f"Bearer {METRICS_TOKEN}x", METRICS_TOKEN)
    assert not token_matches(f"Token {METRICS_TOKEN}", METRICS_TOKEN)
    assert not token_matches(None, METRICS_TOKEN)


# --- a real run through Twilio ------------------------------------------------------------


def test_a_run_through_twilio_shows_in_metrics_without_patient_data(
    measured_runtime: Runtime,
    measured_app: Flask,
    scrape: Callable[..., str],
    enroll: Callable[..., EnrollmentResult],
    twilio_fake: FakeTwilio,
    clock: FakeClock,
) -> None:
    ada = enroll()  # completed 13:30 New York = 18:30 UTC; the clock is at 20:00 UTC
    enroll(first_name="Bruno", last_name="Quintero", phone="(202) 555-0144")
    twilio_fake.errors["+12025550144"] = FakeError(21211, 400, "The 'To' number is not valid")

    _guarded("dispatch", tasks.dispatch, measured_runtime)

    token = measured_runtime.settings.twilio_auth_token or ""
    client = measured_app.test_client()
    reply = {"MessageSid": "SM" + "a" * 32, "From": "+12025550143", "Body": "bleeding a lot"}
    assert post_signed(client, "/twilio/inbound", reply, token=token)[0] == 200
    assert post_signed(client, "/twilio/inbound", reply, token=token, forged=True)[0] == 403
    ada_sid = next(iter(twilio_fake.messages))
    for reported in ("delivered", "Ada Moreno"):  # a made-up status: never a label
        report = {"MessageSid": ada_sid, "MessageStatus": reported}
        assert post_signed(client, "/twilio/status", report, token=token)[0] == 200

    del twilio_fake.errors["+12025550144"]
    twilio_fake.fail_next = 1  # the next send (Ada's) gets a 500 from Twilio
    clock.advance(timedelta(days=1))  # the soreness texts are due (day 1 at 10:00)
    clock.set(clock.now().replace(hour=15, minute=10))  # 10 minutes late
    _guarded("dispatch", tasks.dispatch, measured_runtime)

    text = scrape()
    found = samples(text)
    send = {"transport": "twilio", "operation": "send"}
    assert value(found, "followup_provider_request_seconds_count", **send) == 4
    assert (
        value(found, "followup_provider_errors_total", **send, code="21211", kind="permanent") == 1
    )
    assert (
        value(found, "followup_provider_errors_total", **send, code="20500", kind="transient") == 1
    )
    # Enrolled late, the no-driving texts were due at once; Bruno's soreness text went out
    # 10 minutes after its 10:00 (15:00 UTC).
    assert (
        value(found, "followup_handover_lateness_seconds_bucket", step="no-driving", le="1.0") == 1
    )
    soreness = {"step": "soreness"}
    assert value(found, "followup_handover_lateness_seconds_count", **soreness) == 1
    assert value(found, "followup_handover_lateness_seconds_sum", **soreness) == 600
    assert value(found, "followup_handover_lateness_seconds_bucket", **soreness, le="300.0") == 0
    assert value(found, "followup_handover_lateness_seconds_bucket", **soreness, le="900.0") == 1
    assert value(found, "followup_job_runs_total", job="dispatch", outcome="ok") == 2
    assert value(found, "followup_job_results_total", job="dispatch", result="sent") == 2
    assert value(found, "followup_job_results_total", job="dispatch", result="failed") == 1
    # A 500 may have created the message at Twilio: left for the reaper to ask, not resent.
    assert value(found, "followup_job_results_total", job="dispatch", result="unknown") == 1
    assert value(found, "followup_job_results_total", job="dispatch", result="retried") == 0
    assert value(found, "followup_job_last_success_timestamp_seconds", job="dispatch") == (
        clock.now().timestamp()
    )
    assert (
        value(found, "followup_webhook_requests_total", endpoint="inbound", outcome="accepted") == 1
    )
    assert (
        value(found, "followup_webhook_requests_total", endpoint="inbound", outcome="refused") == 1
    )
    assert value(found, "followup_delivery_reports_total", status="delivered") == 1
    assert value(found, "followup_delivery_reports_total", status="other") == 1
    # From the database at scrape time.
    assert value(found, "followup_texts_recent", status="delivered", step="no-driving") == 1
    assert value(found, "followup_texts_recent", status="failed", step="no-driving") == 1
    assert value(found, "followup_texts_recent", status="sent", step="soreness") == 1
    # A 500 on create may have reached Twilio: the text waits in `sending` for the reaper.
    assert value(found, "followup_texts_recent", status="sending", step="soreness") == 1
    assert value(found, "followup_attention_items", kind="reply") == 1

    # Nothing that names or reaches a patient, nor what they were told or said.
    body = twilio_fake.messages[next(iter(twilio_fake.messages))]["body"]
    for secret in ("Ada", "Moreno", "Bruno", "Quintero", "5550143", "5550144", "bleeding"):
        assert secret not in text, secret
    assert body[:40] not in text
    assert str(ada.patient.id) != "" and f'patient="{ada.patient.id}"' not in text
    for (name, labels), _ in found.items():
        if name.startswith("followup_"):
            for label, label_value in labels:
                if label == "le":
                    continue  # a histogram bucket's bound
                assert re.fullmatch(r"[a-z0-9_.+-]{0,40}", label_value), (name, label)
                assert not re.search(r"\d{7}", label_value), (name, label)


def test_the_instrumented_transport_keeps_what_the_jobs_rely_on(
    twilio_transport: TwilioTransport,
) -> None:
    from followup.messaging.status import StatusLookup

    metrics = Metrics()
    twilio = instrument_transport(twilio_transport, metrics)
    console = instrument_transport(ConsoleTransport(), metrics)
    assert isinstance(twilio, InstrumentedStatusTransport) and isinstance(twilio, StatusLookup)
    assert isinstance(console, InstrumentedTransport) and not isinstance(console, StatusLookup)
    assert (twilio.name, console.name) == ("twilio", "console")
    assert instrument_transport(twilio, metrics) is twilio  # never measured twice
    assert twilio.http is twilio_transport.http  # anything else passes through


# --- the database's figures ---------------------------------------------------------------


def test_database_figures_at_scrape_time(
    scrape: Callable[..., str],
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    clock: FakeClock,
) -> None:
    now = clock.now()
    ada = enroll(blood_thinner="Eliquis")  # 5 texts
    old = enroll(first_name="Old", phone="(202) 555-0177", completed_at="2026-03-05T09:00")
    texts = {
        m.step: m
        for m in session.scalars(sa.select(Message).where(Message.patient_id == ada.patient.id))
    }

    def set_text(step: str, **values: object) -> None:
        session.execute(sa.update(Message).where(Message.id == texts[step].id).values(**values))

    set_text("no-driving", due_at=now - timedelta(minutes=90))  # and no worker ran since
    set_text("soreness", status="sending", lease_expires_at=now - timedelta(minutes=1))
    set_text("blood-thinner-restart", status="failed", updated_at=now - timedelta(minutes=5))
    set_text(
        "warning-signs",
        due_at=now - timedelta(minutes=10),
        attempts=1,
        not_before=now + timedelta(minutes=5),
    )
    # A text from a month ago is outside the 7-day window.
    session.execute(
        sa.update(Message)
        .where(Message.patient_id == old.patient.id)
        .values(status="delivered", due_at=now - timedelta(days=30))
    )
    # Copies closed while a request of theirs may be at Twilio, marked for the reaper to
    # ask: one whose time to ask has passed (stuck, as a text left in sending), one not yet.
    olds = session.scalars(sa.select(Message.id).where(Message.patient_id == old.patient.id))
    for message_id, status, ask in zip(olds.all(), ("cancelled", "expired"), (-1, 5), strict=False):
        session.execute(
            sa.update(Message)
            .where(Message.id == message_id)
            .values(status=status, lease_owner="w1", lease_expires_at=now + timedelta(minutes=ask))
        )
    session.add(
        InboundMessage(
            patient_id=ada.patient.id,
            from_phone="+12025550143",
            body="it hurts more",
            provider_sid="SM" + "b" * 32,
            received_at=now - timedelta(minutes=20),
            kind="other",
            needs_attention=True,
        )
    )
    session.commit()

    found = samples(scrape())
    assert value(found, "followup_database_up") == 1
    assert value(found, "followup_texts_overdue", step="no-driving") == 1
    assert value(found, "followup_texts_overdue", step="warning-signs") == 0  # waits for a retry
    assert value(found, "followup_texts_overdue_oldest_seconds") == 90 * 60
    assert value(found, "followup_texts_retrying") == 1
    assert value(found, "followup_texts_stuck") == 2  # soreness, and the cancelled copy
    assert value(found, "followup_texts_recent", status="pending", step="no-driving") == 1
    assert value(found, "followup_texts_recent", status="sending", step="soreness") == 1
    assert value(found, "followup_texts_recent", status="delivered", step="no-driving") == 0
    assert value(found, "followup_attention_items", kind="reply") == 1
    assert value(found, "followup_attention_items", kind="text") == 1
    assert value(found, "followup_attention_oldest_seconds", kind="reply") == 20 * 60
    assert value(found, "followup_attention_oldest_seconds", kind="text") == 5 * 60


def test_an_unreachable_database_is_reported_not_a_500(
    measured_runtime: Runtime, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    runtime = replace(
        measured_runtime,
        engine=engine,
        session_factory=make_session_factory(engine),
        metrics=Metrics(),
    )
    app = create_app(runtime.settings, runtime=runtime)
    response = app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    engine.dispose()
    assert response.status_code == 200
    found = samples(response.get_data(as_text=True))
    assert value(found, "followup_database_up") == 0
    assert not any(name == "followup_texts_recent" for name, _ in found)
