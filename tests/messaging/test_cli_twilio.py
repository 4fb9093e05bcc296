"""End to end: `followup tick` with TWILIO_* set sends through a Twilio-compatible server on
loopback, a signed delivery callback shows in `followup log --csv`, a forged one does not."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask.testing import FlaskClient

from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import FROM_NUMBER, PUBLIC_BASE_URL, post_signed

ROOT = Path(__file__).resolve().parents[2]
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
pytestmark = pytest.mark.slow


@pytest.fixture
def followup(
    tmp_path: Path, database_url: str, twilio_fake: FakeTwilio
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `followup` command in a fresh process configured only by its environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "SMS_", "PUBLIC_", "CLINIC_", "DATABASE_", "FOLLOWUP_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "TWILIO_ACCOUNT_SID": twilio_fake.account_sid,
            "TWILIO_AUTH_TOKEN": twilio_fake.auth_token,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": twilio_fake.base_url,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "CLINIC_NAME": "Riverside Spine Center",
            "CLINIC_PHONE": "(202) 555-0100",
        }
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "followup.cli", *args],
            cwd=tmp_path,  # no .env here
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    return run


def log_rows(
    followup: Callable[..., subprocess.CompletedProcess[str]],
) -> list[dict[str, str]]:
    out = followup("log", "--csv").stdout
    return list(csv.DictReader(io.StringIO(out)))


def test_cli_tick_sends_through_twilio_and_the_log_shows_delivery(
    followup: Callable[..., subprocess.CompletedProcess[str]],
    enroll: Callable[..., EnrollmentResult],
    twilio_fake: FakeTwilio,
    twilio_runtime: Runtime,
    client: FlaskClient,
    session: so.Session,
    clock: FakeClock,
) -> None:
    enroll()
    enroll(first_name="Luis", phone="(202) 555-0144", completed_at="2026-03-06T12:00")

    done = followup("--now", clock.now().isoformat(), "tick")
    assert "sent 2" in done.stdout

    creates = [r for r in twilio_fake.requests if r.method == "POST"]
    assert len(creates) == 2
    session.expire_all()
    sent = session.scalars(sa.select(Message).where(Message.to_phone.is_not(None))).all()
    texts = {m.to_phone: m for m in sent}
    assert len(texts) == 2
    sids = {m["to"]: m["sid"] for m in twilio_fake.messages.values()}
    for request in creates:
        assert request.path == f"/2010-04-01/Accounts/{twilio_fake.account_sid}/Messages.json"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = request.form
        assert set(form) == {"To", "From", "Body", "StatusCallback"}
        assert E164.match(form["To"])
        assert form["From"] == FROM_NUMBER
        assert form["StatusCallback"] == PUBLIC_BASE_URL + "/twilio/status"
        text = texts[form["To"]]
        assert form["Body"] == text.body
        assert text.provider_sid == sids[form["To"]]
        assert text.status == "sent"
    # A second tick at the same instant sends nothing more.
    followup("--now", clock.now().isoformat(), "tick")
    assert len([r for r in twilio_fake.requests if r.method == "POST"]) == 2

    sid = texts["+12025550143"].provider_sid or ""
    token = twilio_runtime.settings.twilio_auth_token or ""
    form = {"MessageSid": sid, "MessageStatus": "delivered", "To": "+12025550143"}

    status, _ = post_signed(client, "/twilio/status", form, token=token, forged=True)
    assert status == 403
    row = {r["provider_sid"]: r for r in log_rows(followup)}[sid]
    assert (row["status"], row["delivered_at"]) == ("sent", "")

    status, _ = post_signed(client, "/twilio/status", form, token=token)
    assert status == 200
    rows = {r["provider_sid"]: r for r in log_rows(followup) if r["provider_sid"]}
    assert rows[sid]["status"] == "delivered"
    assert rows[sid]["delivered_at"] == clock.now().isoformat()
    other = next(s for s in rows if s != sid)
    assert rows[other]["status"] == "sent"


def test_cli_tick_with_21610_opts_the_patient_out(
    followup: Callable[..., subprocess.CompletedProcess[str]],
    enroll: Callable[..., EnrollmentResult],
    twilio_fake: FakeTwilio,
    session: so.Session,
    clock: FakeClock,
) -> None:
    from tests.fakes.twilio_server import FakeError

    result = enroll(blood_thinner="apixaban")
    twilio_fake.errors["+12025550143"] = FakeError(21610, 400, "unsubscribed recipient")
    followup("--now", clock.now().isoformat(), "tick")
    rows = {r["step"]: r for r in log_rows(followup)}
    assert (rows["no-driving"]["status"], rows["no-driving"]["error_code"]) == ("failed", "21610")
    assert {r["status"] for step, r in rows.items() if step != "no-driving"} == {"cancelled"}
    schedule = followup("schedule", str(result.patient.id)).stdout
    assert "opted out" in schedule
