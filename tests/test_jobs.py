import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from followup.clock import FakeClock
from followup.db import is_postgresql
from followup.errors import ConfigurationError
from followup.messaging.claims import LEASE, claim_due
from followup.messaging.models import Message
from followup.runtime import Runtime, process_owner
from jobs import tasks
from jobs.scheduler import build_scheduler
from tests.conftest import enrollment_form
from tests.fakes.transport import ScriptedTransport


def test_scheduler_has_the_plan_reap_interval_jobs_guarded_and_no_dispatch_poll(
    runtime: Runtime,
) -> None:
    scheduler = build_scheduler(runtime, blocking=False)
    assert isinstance(scheduler, BackgroundScheduler)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"plan", "reap", "poll-statuses", "purge", "alerts"}  # sending: a loop
    assert jobs["alerts"].trigger.interval == timedelta(seconds=15)
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time >= 30
    # A dead dispatcher's texts are settled within LEASE + the reap interval: 2 minutes.
    assert LEASE + jobs["reap"].trigger.interval <= timedelta(minutes=2) - timedelta(seconds=20)
    assert isinstance(build_scheduler(runtime, blocking=True), BlockingScheduler)


def test_the_dispatcher_loop_starts_and_stops_with_the_scheduler(runtime: Runtime) -> None:
    scheduler = build_scheduler(runtime, blocking=False)
    scheduler.start(paused=True)
    try:
        threads = {t.name for t in threading.enumerate()}
        assert "dispatcher" in threads
    finally:
        scheduler.shutdown(wait=True)
    assert "dispatcher" not in {t.name for t in threading.enumerate()}


def test_jobs_plan_and_dispatch_at_the_runtime_clock(runtime: Runtime, session: so.Session) -> None:
    from followup.patients.models import Patient, Procedure

    # A procedure written by another system (an import), not yet planned.
    form = enrollment_form()
    now = runtime.clock.now()
    patient = Patient(
        first_name=form.first_name,
        last_name=form.last_name,
        phone="+12025550143",
        timezone="America/New_York",
        language="en",
        sms_consent_at=now,
        created_at=now,
    )
    session.add(patient)
    session.flush()
    session.add(
        Procedure(
            patient_id=patient.id,
            kind="vertebroplasty",
            status="completed",
            completed_at=now - timedelta(minutes=5),
            created_at=now,
        )
    )
    session.commit()
    assert tasks.plan(runtime).planned == 4
    assert tasks.plan(runtime).procedures == 0
    report = tasks.dispatch(runtime)
    assert report.sent == 1
    assert isinstance(runtime.transport, ScriptedTransport)
    assert runtime.transport.steps_sent() == ["no-driving"]
    assert tasks.reap(runtime).stale == 0
    assert (
        session.scalar(
            sa.select(sa.func.count()).select_from(Message).where(Message.status == "sent")
        )
        == 1
    )


def test_two_containers_with_one_host_name_and_pid_1_never_share_a_lease_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Replicas of one deployment: host names cut to 40 characters alike, each process pid 1.
    monkeypatch.setattr("socket.gethostname", lambda: "followup-worker-7d9f8c6b5-" + "x" * 40)
    monkeypatch.setattr("os.getpid", lambda: 1)
    owners = {process_owner() for _ in range(50)}
    assert len(owners) == 50
    assert all(len(owner) <= Message.lease_owner.type.length for owner in owners)


def claimed_then_stale(
    runtime: Runtime, session: so.Session, enroll: Callable[..., Any], *, owner: str
) -> None:
    """A patient enrolled and their due text claimed by `owner`, whose lease has run out
    by the runtime's clock (advanced past it)."""
    clock = runtime.clock
    assert isinstance(clock, FakeClock)
    enroll()
    assert claim_due(session=session, now=clock.now(), owner=owner, limit=10) != []
    session.commit()
    clock.advance(LEASE + timedelta(seconds=1))


def test_the_reaper_does_not_run_while_this_hosts_clock_is_far_from_the_databases(
    runtime: Runtime,
    session: so.Session,
    enroll: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # NTP stopped on this host after start-up and its clock ran 45 s ahead: a lease another
    # host renewed 10 s ago would look expired. The reaper's job skips its pass (an error
    # logged, the skew on /metrics) until the clocks agree again, then settles the text.
    if not is_postgresql(session):
        pytest.skip("on SQLite the database is a file on this host: one clock")
    claimed_then_stale(runtime, session, enroll, owner="dead")

    ahead = FakeClock(datetime.now(UTC) + timedelta(seconds=45))
    skewed = tasks.reap(replace(runtime, host_clock=ahead))
    assert (skewed.clock_skewed, skewed.stale) == (1, 0)
    assert "reaper pass skipped: this host's clock is 45 s ahead of" in caplog.text
    assert runtime.metrics.registry.get_sample_value(
        "followup_clock_skew_seconds"
    ) == pytest.approx(-45, abs=2)
    session.expire_all()
    assert session.scalars(sa.select(Message.status).where(Message.status == "sending")).all() == [
        "sending"
    ]

    report = tasks.reap(runtime)  # the host's own clock, within a second of the server's
    assert (report.clock_skewed, report.stale, report.requeued) == (0, 1, 1)
    assert abs(runtime.metrics.registry.get_sample_value("followup_clock_skew_seconds")) < 2


def test_a_support_tick_does_nothing_while_this_hosts_clock_is_far_from_the_databases(
    runtime: Runtime, session: so.Session, enroll: Callable[..., Any]
) -> None:
    # `followup tick` on a support host whose NTP stopped, its clock 45 s ahead: its reaper
    # would judge a live dispatcher's lease early, and its dispatcher decide quiet hours
    # and expiry at the wrong instant. It refuses, naming the skew, and changes nothing.
    if not is_postgresql(session):
        pytest.skip("on SQLite the database is a file on this host: one clock")
    claimed_then_stale(runtime, session, enroll, owner="dead")
    enroll(phone="+12025550199")  # a second patient, due now

    ahead = FakeClock(datetime.now(UTC) + timedelta(seconds=45))
    with pytest.raises(ConfigurationError, match="this host's clock is 45 s ahead of"):
        tasks.tick(replace(runtime, host_clock=ahead), session)
    session.expire_all()
    statuses = session.execute(
        sa.select(Message.status, Message.lease_owner).where(Message.step == "no-driving")
    ).all()
    assert sorted(statuses, key=str) == sorted([("sending", "dead"), ("pending", None)], key=str)

    report = tasks.tick(runtime, session)  # the host's own clock agrees with the server's
    assert (report.reap.clock_skewed, report.reap.stale, report.reap.requeued) == (0, 1, 1)
    assert report.dispatch.sent == 2  # the requeued text and the second patient's, once each


def test_the_dispatch_loop_pauses_while_this_hosts_clock_is_far_from_the_databases(
    runtime: Runtime,
    session: so.Session,
    enroll: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A worker's virtual machine was paused and resumed: its clock is an hour ahead until
    # NTP steps it back. Every text due within the hour looks due; sent now, the
    # blood-thinner restart would go an hour early. The loop sends nothing until the clocks
    # agree again (the reaper's job checks only every 20 s, and only skips its own pass).
    from jobs.dispatcher import CLOCK_PAUSE, DispatchLoop

    if not is_postgresql(session):
        pytest.skip("on SQLite the database is a file on this host: one clock")
    enroll()  # the no-driving text is due now
    ahead = FakeClock(datetime.now(UTC) + timedelta(hours=1))
    loop = DispatchLoop(replace(runtime, host_clock=ahead))
    assert loop.step() == CLOCK_PAUSE.total_seconds()
    assert loop.step() == CLOCK_PAUSE.total_seconds()
    assert (loop.passes, loop.total.sent, loop.paused_for_clock) == (0, 0, True)
    assert caplog.text.count("dispatch paused: this host's clock is 3600 s ahead of") == 1
    assert runtime.metrics.registry.get_sample_value(
        "followup_clock_skew_seconds"
    ) == pytest.approx(-3600, abs=2)

    loop.runtime = runtime  # NTP stepped the clock back
    loop.step()
    assert (loop.passes, loop.total.sent, loop.paused_for_clock) == (1, 1, False)
    assert "dispatch resumed" in caplog.text
    loop.dispatcher.close()


def test_a_tick_pinned_ahead_of_the_real_time_does_not_reap(
    runtime: Runtime,
    session: so.Session,
    enroll: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `followup --now <a day ahead> tick` against a database live workers use: at the
    # pinned instant every live lease looks run out, and a text whose request is on its way
    # to Twilio is not there yet: reaping it would send it again. The pinned tick skips
    # its reaper part; planning and sending at the pinned instant are what it was asked for.
    claimed_then_stale(runtime, session, enroll, owner="live")
    a_day_ahead = FakeClock(datetime.now(UTC) + timedelta(days=1))  # --now: a day from now

    pinned = tasks.tick(replace(runtime, clock=a_day_ahead), session, pinned=True)
    assert (pinned.reap.clock_skewed, pinned.reap.stale) == (1, 0)
    assert "reaper pass skipped: the clock is pinned 8640" in caplog.text
    session.expire_all()
    assert session.scalars(
        sa.select(Message.lease_owner).where(Message.status == "sending")
    ).all() == ["live"]
    # Pinned behind the real time (as every --now in these tests is): a lease run out at
    # the pinned instant has run out now too, so it reaps.
    assert tasks.tick(runtime, session, pinned=True).reap.requeued == 1


def test_a_worker_pinned_ahead_of_the_real_time_does_not_reap(
    runtime: Runtime,
    session: so.Session,
    enroll: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `followup --now <a day ahead> worker` (or serve): its reap job, every 20 s, would
    # judge a live worker's leases at the pinned instant, as a pinned tick's reaper would.
    claimed_then_stale(runtime, session, enroll, owner="live")
    a_day_ahead = FakeClock(datetime.now(UTC) + timedelta(days=1))

    report = tasks.reap(replace(runtime, clock=a_day_ahead, pinned=True))
    assert (report.clock_skewed, report.stale) == (1, 0)
    assert "reaper pass skipped: the clock is pinned 8640" in caplog.text
    session.expire_all()
    assert session.scalars(
        sa.select(Message.lease_owner).where(Message.status == "sending")
    ).all() == ["live"]
    # The same clock, not pinned (the tests' own runtime, a fake clock): it reaps.
    assert tasks.reap(replace(runtime, clock=a_day_ahead)).stale == 1


def test_the_loop_does_not_spin_on_texts_another_dispatcher_holds(
    runtime: Runtime, session: so.Session, enroll: Callable[..., Any]
) -> None:
    # Another dispatcher holds one of the patient's two due texts (its call under way): the
    # other is ready but theirs to send next: no pass runs for it (`next_wake` with the
    # loop's owner), and the loop looks again a poll later, not 20 times a second for as
    # long as that call lasts.
    from jobs.dispatcher import POLL_EVERY, DispatchLoop

    enroll()
    now = runtime.clock.now()
    later = session.scalar(
        sa.select(sa.func.min(Message.id)).where(Message.due_at > now, Message.status == "pending")
    )
    session.execute(sa.update(Message).where(Message.id == later).values(due_at=now))
    due = session.scalars(
        sa.select(Message.id).where(Message.due_at <= now, Message.status == "pending")
    ).all()
    assert len(due) == 2
    assert len(claim_due(session=session, now=runtime.clock.now(), owner="other", limit=1)) == 1
    session.commit()
    loop = DispatchLoop(runtime)
    try:
        assert loop.step() >= POLL_EVERY.total_seconds()
        assert (loop.passes, loop.total.claimed) == (0, 0)
    finally:
        loop.dispatcher.close()
