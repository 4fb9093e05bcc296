"""Several `followup serve` processes started at the same moment on a database with no staff
account yet (a first deployment: `systemctl enable --now followup-web@8001
followup-web@8002`, replicas started together by an orchestrator) all start.

Each `serve` creates the first admin when it finds no user (`_create_first_admin` in
followup/cli.py, `ensure_first_admin` in followup/accounts/service.py): a read ("no user
yet"), then an INSERT of admin@followup.local. Started together, every process reads "no
user" and all but the first to commit are refused by the unique e-mail and exit 1 with a
database error, on SQLite and PostgreSQL alike: the web app (enrollments, STOP replies,
delivery reports) and, for `serve` with its scheduler (the embedded default), the
dispatcher with it.

Without help the race is won or lost by milliseconds (3 processes started together lost it
in about half the runs here). To make every run the same, the test holds the write lock
on the users table while the processes start (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
SHARE ROW EXCLUSIVE table lock, which lets reads through and holds INSERTs), as a slow
disk or a busy database holds it for a moment, and lets go once they have all read.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup.db import make_engine

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 3
START_UP = 10.0  # seconds for every process to pass its checks and read "no user yet"


def env_for(url: str) -> dict[str, str]:
    prefixes = ("TWILIO_", "SMS_", "DATABASE_", "FOLLOWUP_", "CLINIC_", "QUIET_", "DISPATCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    # The worktree's code, whatever the virtualenv's console script points at.
    env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT), SMS_TRANSPORT="console")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", [False, True], ids=["no-scheduler", "with-scheduler"])
def test_web_processes_started_together_on_a_fresh_database_all_start(
    database_url: str, tmp_path: Path, scheduler: bool
) -> None:
    args = ["serve", "--port", "0", *([] if scheduler else ["--no-scheduler"])]
    engine = make_engine(database_url)
    raw: sqlite3.Connection | None = None
    held: sa.Connection | None = None
    if database_url.startswith("sqlite"):
        raw = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
    else:
        held = engine.connect()
        held.execute(sa.text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "followup.cli", *args],
            cwd=tmp_path,
            env=env_for(database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs: list[str] = []
    try:
        time.sleep(START_UP)
        early = [p.poll() for p in processes]
        assert early == [None] * PROCESSES, "a process exited before the lock was let go"
        if raw is not None:
            raw.execute("ROLLBACK")
        if held is not None:
            held.rollback()
        time.sleep(5)  # each creates the admin or finds it, then serves
        exited = [p.poll() for p in processes]
    finally:
        if raw is not None:
            raw.close()
        if held is not None:
            held.close()
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                outputs.append(p.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:  # pragma: no cover
                p.kill()
                outputs.append(p.communicate()[0])
        engine.dispose()
    crashed = [
        out.strip().splitlines()[-1] for code, out in zip(exited, outputs, strict=True) if code
    ]
    assert not crashed, (
        f"{len(crashed)} of {PROCESSES} serve processes started together exited at start-up: "
        f"{crashed}"
    )
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM users")) == 1
    finally:
        engine.dispose()  # else its pooled connection is left open for the next test
