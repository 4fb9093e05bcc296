"""A `followup worker` told to stop (SIGTERM) stops dispatching at once, even while one of
its scheduler jobs is still running.

The worker's signal handler calls `scheduler.shutdown(wait=True)` (followup/cli.py); APScheduler
first waits for every job under way (the executor's shutdown) and only then sends
EVENT_SCHEDULER_SHUTDOWN, on which the dispatcher loop is stopped (jobs/scheduler.py,
`attach_dispatcher`). A reap pass asking a slow Twilio about a dead worker's texts, or a
status poll (100 look-ups one after another), can run for minutes; all that time the
"stopping" worker keeps claiming and handing texts to Twilio as if nothing happened, and it
outlives systemd's TimeoutStopSec (60 s, deploy/followup-worker@.service): SIGKILL then
cuts it down with texts claimed (not handed back: they wait a lease and the reaper) and
requests under way, the reaper's own texts with them (asked about again only after that
reaper's lease: past the 2 minutes promised for the dead worker's texts).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup.db import make_engine, make_session_factory
from followup.messaging.models import Message
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import midday_zone, seed

ROOT = Path(__file__).resolve().parents[1]
DEAD = 32  # texts a killed worker left handed over
LIST_DELAY = 9.0  # Twilio's list answers take this long (under the 10 s timeout)


def worker_env(url: str, fake: FakeTwilio) -> dict[str, str]:
    prefixes = ("TWILIO_", "SMS_", "DATABASE_", "FOLLOWUP_", "CLINIC_", "QUIET_", "DISPATCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        PYTHONPATH=str(ROOT),  # the worktree's code
        DATABASE_URL=url,
        FOLLOWUP_ENV="development",
        SMS_TRANSPORT="twilio",
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
        TWILIO_FROM_NUMBER="+12025550199",
        TWILIO_API_BASE_URL=fake.base_url,
        TWILIO_TIMEOUT_SECONDS="10",
        CLINIC_NAME="Riverside Spine Center",
        CLINIC_PHONE="(202) 555-0100",
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_FORMAT="text",
    )
    return env


@pytest.mark.slow
def test_a_worker_sigtermed_during_a_slow_reap_job_dispatches_nothing_more(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "followup.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    factory = make_session_factory(engine)
    tz = midday_zone()
    now = datetime.now(UTC)
    fake = FakeTwilio(keep_alive=True).start()
    # A worker killed a minute ago left texts handed to Twilio; its leases have run out.
    with factory() as session:
        dead = seed(session, DEAD, due=now, expires=now + timedelta(hours=6), tz=tz)
        for i, message_id in enumerate(dead):
            phone = f"+1202555{i:04d}"
            session.execute(
                sa.update(Message)
                .where(Message.id == message_id)
                .values(
                    status="sending",
                    lease_owner="gone:1:0badf00d",
                    lease_expires_at=now - timedelta(seconds=1),
                    handed_at=now - timedelta(minutes=1),
                    attempts=1,
                    body="Riverside Spine Center: You had sedation today.",
                    to_phone=phone,
                )
            )
            fake.list_faults[phone] = {0: LIST_DELAY}
        session.commit()
    process = subprocess.Popen(
        [sys.executable, "-m", "followup.cli", "worker"],
        cwd=tmp_path,
        env=worker_env(url, fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        # The reap job's first round (20 s after start) asks Twilio about the dead texts.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            r.method == "GET" and "To" in r.query for r in list(fake.requests)
        ):
            assert process.poll() is None, "".join(lines)
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the reap job never asked Twilio"
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        # The worker has begun stopping (its handler runs on its main thread, which a
        # loaded machine may schedule late) ...
        deadline = time.monotonic() + 30
        while not any("shutting down" in line for line in list(lines)):
            assert time.monotonic() < deadline, "the worker never handled SIGTERM"
            time.sleep(0.05)
        time.sleep(1.0)  # ... and the dispatcher's pass under way ends, claims handed back
        # A nurse enrolls a patient while this worker is stopping.
        with factory() as session:
            [late] = seed(
                session,
                1,
                due=datetime.now(UTC),
                expires=datetime.now(UTC) + timedelta(hours=6),
                tz=tz,
                first_phone=500,
            )
        time.sleep(3.0)
        still_running = process.poll() is None
        with factory() as session:
            text = session.get(Message, late)
            assert text is not None
            status, owner = text.status, text.lease_owner
        sent_after_stop = [m for m in fake.received() if m["to"] == "+12025550500"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        reader.join(10)
        process.stdout.close()
        output = "".join(lines)
        took = time.monotonic() - stopped_at
        fake.stop()
        engine.dispose()
    assert not sent_after_stop and status == "pending", (
        f"4 s after SIGTERM the worker (still running: {still_running}; it exited "
        f"{took:.0f} s after the signal) had claimed a text enrolled after the signal "
        f"(status {status}, lease {owner}) and handed it to Twilio "
        f"({len(sent_after_stop)} create(s)): its dispatcher is stopped only after the reap "
        f"job under way ends\n{output[-1500:]}"
    )
