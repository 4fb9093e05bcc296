"""Logs: one line per job run that did something, APScheduler quiet, JSON on demand, and
never a patient's name, phone number or a text's body."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from apscheduler.executors.base import run_job
from flask import Flask

from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.ops.logs import QUIET_LOGGERS, configure_logging
from followup.ops.runs import report_counts, summary
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from jobs import tasks
from jobs.dispatcher import DispatchLoop
from jobs.scheduler import _guarded, build_scheduler
from tests.fakes.twilio_server import FakeError, FakeTwilio
from tests.messaging.conftest import post_signed
from tests.web.test_first_start import serve_once


@pytest.fixture
def log_output() -> Iterator[Callable[..., io.StringIO]]:
    """Configure logging as the CLI does, into a buffer; put everything back afterwards."""
    root = logging.getLogger()
    saved = (root.level, {name: logging.getLogger(name).level for name in QUIET_LOGGERS})
    handlers: list[logging.Handler] = []

    def configure(**kwargs: object) -> io.StringIO:
        stream = io.StringIO()
        handler = configure_logging(stream=stream, **kwargs)  # type: ignore[arg-type]
        assert handler is not None
        handlers.append(handler)
        return stream

    yield configure
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


def test_a_report_is_summed_up_in_words() -> None:
    from followup.messaging.reports import DispatchReport, TickReport

    report = DispatchReport(claimed=13, sent=12, retried=1)
    assert summary(report_counts(report)) == "13 claimed, 12 sent, 1 retried"
    assert report_counts(DispatchReport()) == {}
    tick = TickReport(dispatch=report)
    assert report_counts(tick)["dispatch_sent"] == 12
    assert report_counts(None) == {}


def test_a_job_run_logs_one_line_and_apscheduler_says_nothing(
    runtime: Runtime,
    enroll: Callable[..., EnrollmentResult],
    log_output: Callable[..., io.StringIO],
) -> None:
    enroll()  # its no-driving text is due now
    output = log_output()
    scheduler = build_scheduler(runtime, blocking=False)
    now = datetime.now(UTC)  # APScheduler's own time, for its misfire check

    # What the scheduler's executor does for each run, called directly: no waiting; then one
    # pass of the dispatcher's loop (a thread of its own in the worker), as it runs it.
    for name in ("plan", "reap", "alerts"):
        run_job(scheduler.get_job(name), "default", [now], "apscheduler.executors.default")
    loop = DispatchLoop(runtime)
    try:
        loop.step()
    finally:
        loop.dispatcher.close()

    lines = output.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(" INFO followup.jobs: dispatch: 1 claimed, 1 sent")

    # The same runs with APScheduler at INFO print its per-run lines: the test can tell.
    logging.getLogger("apscheduler").setLevel(logging.INFO)
    run_job(scheduler.get_job("plan"), "default", [now], "apscheduler.executors.default")
    assert "Running job" in output.getvalue()
    assert "executed successfully" in output.getvalue()


def test_stale_texts_are_logged_as_a_warning(
    runtime: Runtime,
    enroll: Callable[..., EnrollmentResult],
    session: so.Session,
    clock: FakeClock,
    log_output: Callable[..., io.StringIO],
) -> None:
    enroll()
    session.execute(
        sa.update(Message)
        .where(Message.step == "no-driving")
        .values(status="sending", lease_owner="gone", lease_expires_at=clock.now())
    )
    session.commit()
    output = log_output()
    clock.advance(timedelta(minutes=1))
    _guarded("reap", tasks.reap, runtime)
    assert " WARNING followup.jobs: reap: 1 stale, " in output.getvalue()


def test_json_logs_are_one_object_a_line(
    runtime: Runtime,
    enroll: Callable[..., EnrollmentResult],
    log_output: Callable[..., io.StringIO],
) -> None:
    enroll()
    output = log_output(log_format="json")
    _guarded("dispatch", tasks.dispatch, runtime)
    logging.getLogger("followup.test").warning("a %s line", "second")
    records = [json.loads(line) for line in output.getvalue().splitlines()]
    assert [r["message"] for r in records] == ["dispatch: 1 claimed, 1 sent", "a second line"]
    first = records[0]
    assert (first["level"], first["logger"], first["job"]) == ("INFO", "followup.jobs", "dispatch")
    assert first["results"] == {"claimed": 1, "sent": 1}
    assert isinstance(first["seconds"], float)
    assert datetime.fromisoformat(first["time"]).utcoffset() == timedelta(0)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_realistic_run_logs_no_name_phone_or_body(
    log_format: str,
    measured_runtime: Runtime,
    measured_app: Flask,
    enroll: Callable[..., EnrollmentResult],
    twilio_fake: FakeTwilio,
    clock: FakeClock,
    log_output: Callable[..., io.StringIO],
) -> None:
    output = log_output(log_format=log_format, level=logging.DEBUG)
    for name in QUIET_LOGGERS:  # every line any level could show, scanned
        logging.getLogger(name).setLevel(logging.DEBUG)
    runtime = measured_runtime
    client = measured_app.test_client()
    token = runtime.settings.twilio_auth_token or ""

    enroll(blood_thinner="Eliquis")
    enroll(first_name="Bruno", last_name="Quintero", phone="(202) 555-0144", language="es")
    twilio_fake.errors["+12025550144"] = FakeError(21211, 400, "+12025550144 is not valid")
    for job in (tasks.plan, tasks.dispatch):
        _guarded(job.__name__, job, runtime)
    ada_sid = next(m["sid"] for m in twilio_fake.messages.values() if m["to"] == "+12025550143")
    for params in (
        {"MessageSid": ada_sid, "MessageStatus": "delivered", "To": "+12025550143"},
        {"MessageSid": "SM" + "9" * 32, "MessageStatus": "delivered", "To": "+12025550143"},
    ):
        assert post_signed(client, "/twilio/status", params, token=token)[0] == 200
    for sid, sender, body in (
        ("a", "+12025550143", "bleeding a lot since noon"),
        ("b", "+12025550999", "who is this"),
        ("c", "+12025550143", "8"),
        ("d", "+12025550144", "STOP"),
    ):
        form = {"MessageSid": "SM" + sid * 32, "From": sender, "Body": body}
        assert post_signed(client, "/twilio/inbound", form, token=token)[0] == 200
    assert post_signed(client, "/twilio/inbound", form, token=token, forged=True)[0] == 403

    # Day 1: Twilio fails after taking the text; the reaper finds it by number and body.
    clock.set(datetime(2026, 3, 7, 15, 0, tzinfo=UTC))
    twilio_fake.fail_after_accept = 1
    _guarded("dispatch", tasks.dispatch, runtime)
    clock.advance(timedelta(minutes=10))
    for job in (tasks.reap, tasks.poll_statuses):
        _guarded(job.__name__, job, runtime)
    clock.advance(timedelta(days=401))
    _guarded("purge", tasks.purge, runtime)

    text = output.getvalue()
    assert "dispatch: " in text and "purge: 2 patients" in text  # the run was logged
    bodies = [m["body"] for m in twilio_fake.messages.values()]
    assert len(bodies) >= 2
    secrets = ["Ada", "Moreno", "Bruno", "Quintero", "Eliquis"]
    secrets += ["2025550143", "5550143", "5550144", "5550999", "555-01"]
    secrets += ["bleeding", "who is this", "STOP"] + [b[20:60] for b in bodies]
    leaked = [s for s in secrets if s in text]
    assert not leaked, (leaked, text)


@pytest.mark.slow
def test_make_run_shows_no_scheduler_lines(tmp_path: Path) -> None:
    """`followup serve` (what `make run` starts), as a real process, until it answers."""
    output = serve_once(tmp_path)
    assert "followup serving on http://127.0.0.1:" in output
    for noise in ("apscheduler", "Added job", "Scheduler started", "Running job", "executed"):
        assert noise not in output, output
    log_lines = [line for line in output.splitlines() if " INFO " in line]
    assert all("jobs.scheduler: signal SIGTERM: shutting down" in line for line in log_lines), (
        log_lines
    )
