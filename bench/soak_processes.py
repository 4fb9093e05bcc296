"""The soak's processes (bench/soak.py): `followup worker` and `serve` started with their
own environment and output file, killed with SIGKILL and restarted; which texts a killed
process held."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from followup.messaging.models import Message
from tests.fakes.twilio_server import FakeTwilio

ROOT = Path(__file__).resolve().parent.parent
FROM = "+12025550199"
CLINIC_NAME = "Riverside Spine Center"
CLINIC_PHONE = "(202) 555-0100"


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    log: TextIO | None = None
    pids: list[int] = field(default_factory=list)
    started: int = 0

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self) -> None:
        self.log = self.log_path.open("a")
        self.started += 1
        self.log.write(f"--- start {self.started} at {utcnow().isoformat()}\n")
        self.log.flush()
        self.process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", "followup.cli", *self.args],
            cwd=self.folder, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pids.append(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, banner: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        marker = f"--- start {self.started} at"
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if banner in text[text.rfind(marker) :]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start:\n{text[-3000:]}")
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not start within {timeout:.0f} s")

    def kill9(self) -> datetime:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        at = utcnow()
        self.process.wait()
        return at

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()


def process_env(url: str, fake: FakeTwilio, quiet: str, concurrency: int) -> dict[str, str]:
    prefixes = ("TWILIO_", "SMS_", "DATABASE_", "FOLLOWUP_", "CLINIC_", "QUIET_", "DISPATCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=url,
        FOLLOWUP_ENV="development",
        SMS_TRANSPORT="twilio",
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
        TWILIO_FROM_NUMBER=FROM,
        TWILIO_API_BASE_URL=fake.base_url,
        CLINIC_NAME=CLINIC_NAME,
        CLINIC_PHONE=CLINIC_PHONE,
        QUIET_HOURS=quiet,
        DEFAULT_TIMEZONE="America/New_York",
        DISPATCH_CONCURRENCY=str(concurrency),
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_FORMAT="text",
    )
    return env


# --- kills --------------------------------------------------------------------------------


@dataclass
class Kill:
    process: str
    pid: int
    at: datetime
    held: list[dict[str, Any]]  # the texts its leases held at the kill


def held_by(engine: sa.Engine, pid: int) -> list[dict[str, Any]]:
    """Texts in `sending` under a lease of process `pid` (its dispatcher's or its reaper's)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                Message.id, Message.handed_at, Message.claimed_at, Message.lease_owner,
                Message.lease_expires_at, Message.status,
            ).where(Message.status == "sending", Message.lease_owner.like(f"%:{pid}:%"))
        ).mappings()  # fmt: skip
        return [dict(r) for r in rows]


def wait_in_flight(engine: sa.Engine, pid: int, timeout: float) -> int:
    """Wait until process `pid` holds a text handed over to Twilio; how many it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = held_by(engine, pid)
        if any(h["handed_at"] is not None for h in held):
            return len(held)
        time.sleep(0.05)
    return 0
