"""A `followup worker` told to stop (SIGTERM) while its dispatcher loop's prompt reaper is
asking a slow Twilio about parked texts leaves none of those texts held under that
reaper's lease once the worker has exited: each is settled (Twilio does not have it: back
in the queue) or stale at once for the next worker's reaper, as README promises for a
stop ("a reap or status-poll pass under way ends after its part (what is left goes to the
next reaper at once, or the next poll)").

The prompt reaper (jobs/dispatcher.py, `reap_parked`) is a daemon thread. `shut_down`
sets Runtime.stopping and `DispatchLoop.stop()` joined that thread for REAPER_STOP_TIMEOUT
(5 s) only (it now waits within the stop timeout, as for the reap job's pass), twice (once from `shut_down`, once from the scheduler's shutdown listener);
then `followup worker` returns and the process exits. The reaper's look-ups, on the
executor threads of `first_looks`, are still joined by the interpreter at exit, but the
daemon thread that was to record their answers is frozen as the interpreter finalises:
Twilio was asked, nothing was written. Every text of its batch stays `sending` under the
dead process's prompt reaper, its lease running a whole minute from when the batch was
taken, so the next worker (systemd restarts it at once) cannot ask about them, nor send
them, until then. These are texts whose retry time had come (an answer left their outcome
unknown): a last try squeezed in before quiet hours or before its expiry (the very case the
prompt reaper exists for: tests/messaging/test_unknown_outcome_last_try.py) comes too late
and the text expires unsent. The reap job's pass is waited for (`scheduler.shutdown(wait=
True)`) and puts off what it did not ask about at once; the prompt reaper's pass is not.
"""

from __future__ import annotations

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
from followup.messaging.claims import REAPER_SUFFIX, parked_owner
from followup.messaging.models import SENDING, Message
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.helpers import midday_zone, seed
from tests.test_worker_stops_dispatching_at_sigterm import worker_env

PARKED = 40  # texts parked for the reaper after Twilio 5xx answers: three rounds of 16
LIST_DELAY = 9.0  # Twilio's list answers take this long (under the 10 s timeout)
BODY = "Riverside Spine Center: You had sedation today."


@pytest.mark.slow
def test_a_worker_stopped_during_its_prompt_reapers_look_ups_leaves_no_text_held(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "followup.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)
    fake = FakeTwilio(keep_alive=True).start()
    # Texts an earlier worker's dispatcher parked for the reaper (a 503 may have created
    # them at Twilio; it did not): their retry time has just come.
    with factory() as session:
        parked = seed(session, PARKED, due=now, expires=now + timedelta(hours=6), tz=midday_zone())
        for i, message_id in enumerate(parked):
            phone = f"+1202555{i:04d}"
            session.execute(
                sa.update(Message)
                .where(Message.id == message_id)
                .values(
                    status=SENDING,
                    lease_owner=parked_owner("gone:1:0badf00d"),
                    lease_expires_at=now - timedelta(seconds=1),
                    handed_at=now - timedelta(minutes=2),
                    attempts=1,
                    body=BODY,
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
        # The loop sees the parked texts due at once; its prompt reaper asks Twilio.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            r.method == "GET" and "To" in r.query for r in list(fake.requests)
        ):
            assert process.poll() is None, "".join(lines)
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the prompt reaper never asked Twilio"
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        process.wait(timeout=120)
        took = time.monotonic() - stopped_at
        exited = datetime.now(UTC)
    finally:
        if process.poll() is None:  # pragma: no cover
            process.kill()
            process.wait()
        reader.join(10)
        process.stdout.close()
        fake.stop()
    output = "".join(lines)
    with factory() as session:
        rows = session.execute(
            sa.select(Message.id, Message.status, Message.lease_owner, Message.lease_expires_at)
            .where(Message.id.in_(parked))
            .order_by(Message.id)
        ).all()
    engine.dispose()
    asked = len({r.query["To"] for r in fake.requests if r.method == "GET" and "To" in r.query})
    held = [
        row
        for row in rows
        if row.status == SENDING
        and (row.lease_owner or "").endswith(f"~{REAPER_SUFFIX}")
        and row.lease_expires_at is not None
        and row.lease_expires_at.replace(tzinfo=UTC) > exited
    ]
    longest = max(
        ((row.lease_expires_at.replace(tzinfo=UTC) - exited).total_seconds() for row in held),
        default=0.0,
    )
    assert not held, (
        f"the worker exited {took:.0f} s after SIGTERM; its prompt reaper had asked Twilio "
        f"about {asked} of {PARKED} parked texts, yet {len(held)} are still `sending` under "
        f"its lease ({held[0].lease_owner}) for up to {longest:.0f} s more: no other worker "
        "may ask about or send them until then (DispatchLoop.stop joins the prompt reaper "
        f"5 s; the process exits with its pass under way)\n{output[-1500:]}"
    )
