"""`followup check`, and `serve`/`worker` running the same checks at start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from followup.db import make_engine
from followup.errors import ConfigurationError
from followup.migrate import alembic_config
from followup.ops.checks import (
    Check,
    check_protocols,
    check_settings,
    check_transport,
    checks_passed,
)
from followup.ops.database_check import check_clock, check_database, sqlite_lacks
from followup.settings import Settings, settings_from_mapping
from tests.conftest import START
from tests.fakes.twilio_server import FakeTwilio
from tests.messaging.conftest import FROM_NUMBER, PUBLIC_BASE_URL

# The newest migration this version ships.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

FOLLOWUP = str(Path(sys.executable).with_name("followup"))
INBOUND = PUBLIC_BASE_URL + "/twilio/inbound"


def clean_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment of a new install in `folder`: no TWILIO_*, SMS_* or other settings."""
    names = set(Settings.__dataclass_fields__) | {"FOLLOWUP_ENV", "SMS_TRANSPORT"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "SMS_")) and k.lower() not in names
    }
    env["DATABASE_URL"] = f"sqlite:///{folder / 'followup.db'}"
    env.update(extra)
    return env


def followup(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FOLLOWUP, *args],
        cwd=folder,
        env=clean_env(folder, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(output: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(word + " ")]


# --- the command --------------------------------------------------------------------------


@pytest.mark.slow
def test_check_passes_on_the_embedded_default(tmp_path: Path) -> None:
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    done = followup(tmp_path, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    names = [line.split(":")[0].split()[-1] for line in done.stdout.splitlines()[:-1]]
    assert names == [
        "settings",
        "database",
        "clock",
        "protocols",
        "transport",
        "metrics",
        "alerts",
        "retention",
    ]
    assert lines(done.stdout, "FAIL") == []
    assert done.stdout.splitlines()[-1] == "all checks passed"
    assert "emergency number 911" in done.stdout
    assert done.stderr == ""  # no log lines around the check lines


@pytest.mark.slow
def test_check_before_db_upgrade_fails_and_creates_nothing(tmp_path: Path) -> None:
    done = followup(tmp_path, "check")
    assert done.returncode == 1
    assert lines(done.stdout, "FAIL") == [
        f"FAIL  database: {tmp_path / 'followup.db'} does not exist: "
        "run 'followup db upgrade' to create it"
    ]
    assert done.stderr.strip() == "1 check(s) failed"
    assert not (tmp_path / "followup.db").exists()


@pytest.mark.slow
def test_check_gives_one_line_to_each_broken_setting(tmp_path: Path) -> None:
    done = followup(
        tmp_path,
        "check",
        FOLLOWUP_ENV="production",
        SECRET_KEY="changeme",
        DEFAULT_REGION="ZZ",
        QUIET_HOURS="25:00-08:00",
        METRICS_TOKEN="short",
        RETENTION_DAYS="5",
        ALERT_EMAIL="nurse@clinic.example",
    )
    assert done.returncode == 1
    failed = lines(done.stdout, "FAIL")
    named = [line.removeprefix("FAIL  settings: ").split()[0] for line in failed[:-1]]
    assert sorted(named) == sorted(
        [
            "CLINIC_NAME",
            "CLINIC_PHONE",
            "SECRET_KEY",
            "DEFAULT_REGION",
            "QUIET_HOURS",
            "METRICS_TOKEN",
            "RETENTION_DAYS",
            "ALERT_EMAIL",
        ]
    )
    assert failed[-1].startswith("FAIL  checks: database, protocols and transport not checked")
    assert lines(done.stdout, "ok") == []


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"FOLLOWUP_ENV": "staging"}, "FOLLOWUP_ENV"),
        ({"SMS_TRANSPORT": "carrier-pigeon"}, "SMS_TRANSPORT"),
        ({"SMS_TRANSPORT": "twilio"}, "SMS_TRANSPORT"),
        ({"DEFAULT_TIMEZONE": "Mars/Olympus"}, "DEFAULT_TIMEZONE"),
        ({"TWILIO_TIMEOUT_SECONDS": "0"}, "TWILIO_TIMEOUT_SECONDS"),
        ({"STATUS_POLL_AFTER_MINUTES": "x"}, "STATUS_POLL_AFTER_MINUTES"),
        ({"PUBLIC_BASE_URL": "ftp://clinic"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_API_BASE_URL": "nowhere"}, "TWILIO_API_BASE_URL"),
        ({"DEFAULT_REGION": "BR"}, "EMERGENCY_NUMBER"),
        ({"EMERGENCY_NUMBER": "9-1-1"}, "EMERGENCY_NUMBER"),
        ({"DISPATCH_CONCURRENCY": "0"}, "DISPATCH_CONCURRENCY"),
        ({"TWILIO_MAX_PER_SECOND": "-1"}, "TWILIO_MAX_PER_SECOND"),
        ({"CLINIC_HOURS": "Someday"}, "CLINIC_HOURS"),
        ({"ONCALL_PHONE": "12"}, "ONCALL_PHONE"),
        ({"ESCALATION_PHONE": "abc"}, "ESCALATION_PHONE"),
        ({"ALERT_EMAIL": "not-an-address", "SMTP_URL": "smtp://mail"}, "ALERT_EMAIL"),
        ({"SMTP_URL": "http://mail"}, "SMTP_URL"),
        ({"ESCALATE_AFTER_MINUTES": "0"}, "ESCALATE_AFTER_MINUTES"),
        ({"SESSION_HOURS": "48"}, "SESSION_HOURS"),
        ({"METRICS_TOKEN": "has a space in it 0123"}, "METRICS_TOKEN"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"RETENTION_DAYS": "1"}, "RETENTION_DAYS"),
        ({"QUIET_HOURS": "late"}, "QUIET_HOURS"),
    ],
)
def test_every_settings_error_starts_with_the_setting_it_is_about(
    values: dict[str, str], name: str
) -> None:
    """The check reports each broken setting by reading the name that starts its error."""
    with pytest.raises(ConfigurationError) as raised:
        settings_from_mapping(values)
    assert str(raised.value).startswith(name)
    settings, checks = check_settings(values)
    assert settings is None
    assert [c.detail.split()[0].split("=")[0] for c in checks] == [name]


def test_valid_settings_make_one_ok_line() -> None:
    settings, checks = check_settings({"CLINIC_NAME": "Riverside Spine Center"})
    assert settings is not None and settings.clinic_name == "Riverside Spine Center"
    assert [c.line() for c in checks] == [
        "ok    settings: valid (development; transport console; database sqlite)"
    ]


# --- database -----------------------------------------------------------------------------


def test_database_check_on_a_migrated_database(settings: Settings, database_url: str) -> None:
    result = check_database(replace(settings, database_url=database_url))
    assert result.ok, result.detail
    assert f"reachable, schema at {HEAD} (this version's head)" in result.detail


@pytest.mark.parametrize("off", [timedelta(0), timedelta(minutes=2), -timedelta(seconds=30)])
def test_clock_check_holds_this_host_to_the_database_server_s_clock(
    settings: Settings, database_url: str, off: timedelta
) -> None:
    # A worker on a host whose clock runs ahead would see other hosts' leases run out while
    # their requests are under way: it must not start.
    result = check_clock(
        replace(settings, database_url=database_url), wall=lambda: datetime.now(UTC) + off
    )
    if database_url.startswith("sqlite"):
        assert (result.ok, result.detail) == (
            True,
            "the database is a file on this host: one clock",
        )
    elif not off:
        assert result.ok and result.detail.startswith("within "), result.detail
    else:
        word = "ahead of" if off > timedelta(0) else "behind"
        assert not result.ok
        assert (
            f"this host's clock is {abs(off.total_seconds()):.0f} s {word} the database"
            in result.detail
        )


def test_database_check_behind_or_ahead_of_this_version(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0004")
    behind = check_database(replace(settings, database_url=url))
    assert not behind.ok
    assert behind.detail.endswith(
        f"is at 0004, this version needs {HEAD}: run 'followup db upgrade'"
    )
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    ahead = check_database(replace(settings, database_url=url))
    assert not ahead.ok and "at 0999, which this version does not know" in ahead.detail


class _OldSqlite:
    """A connection to an SQLite library older than followup needs (none can run here)."""

    def __init__(self, version: str, *, json: bool) -> None:
        self.version, self.json = version, json

    def exec_driver_sql(self, statement: str) -> _OldSqlite:
        if "json_each" in statement and not self.json:
            raise sa.exc.OperationalError(statement, {}, Exception("no such table: json_each"))
        return self

    def scalar(self) -> str:
        return self.version


def test_database_check_names_what_an_old_sqlite_lacks(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'now.db'}")
    with engine.connect() as connection:
        assert sqlite_lacks(connection) is None  # the library this machine runs
    engine.dispose()
    assert sqlite_lacks(_OldSqlite("3.31.1", json=True)) == (
        "SQLite 3.31.1 is too old: followup needs 3.35 or later (RETURNING)"
    )
    assert sqlite_lacks(_OldSqlite("3.37.2", json=False)) == (
        "SQLite 3.37.2 has no JSON functions (json_each): build it with JSON1"
    )
    assert sqlite_lacks(_OldSqlite("3.45.0", json=True)) is None


def test_database_check_when_the_server_is_down(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    result = check_database(
        replace(settings, database_url=f"postgresql://followup@127.0.0.1:{port}/followup")
    )
    assert not result.ok
    assert result.detail.startswith("cannot connect to postgresql: ")


# --- protocols ----------------------------------------------------------------------------


def test_protocols_render_with_the_clinic_s_details(settings: Settings) -> None:
    (result,) = check_protocols(settings, now=START)
    assert result.ok
    assert result.detail == (
        "2 protocols, 40 texts render with Riverside Spine Center, (202) 555-0100, "
        "emergency number 911"
    )
    (elsewhere,) = check_protocols(replace(settings, emergency_number="999"), now=START)
    assert elsewhere.ok and elsewhere.detail.endswith("emergency number 999")


def test_a_text_with_a_written_out_emergency_number_fails(
    settings: Settings, tmp_path: Path
) -> None:
    from followup.care.protocol import PACKAGED_DIR

    for source in PACKAGED_DIR.glob("*.toml"):
        text = source.read_text(encoding="utf-8")
        if source.name == "kyphoplasty.toml":
            text = text.replace("call {emergency_number}", "call 911", 1)
        (tmp_path / source.name).write_text(text, encoding="utf-8")
    results = check_protocols(
        replace(settings, protocol_dir=str(tmp_path), emergency_number="999"), now=START
    )
    assert [r.line() for r in results] == [
        "FAIL  protocols: kyphoplasty.toml: step 'soreness': en text: write {emergency_number}, "
        "not the number itself"
    ]


def test_rendered_texts_are_scanned_for_another_emergency_number() -> None:
    from followup.ops.checks import _numbers_said

    others = {"911", "112", "000", "111"}
    assert _numbers_said("In an emergency call 911.", others) == ["911"]
    assert _numbers_said("Call (202) 555-0111 or 999; rate 0 to 10", others) == []


def test_a_broken_protocol_folder_fails_with_its_reason(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "kyphoplasty.toml").write_text('kind = "kyphoplasty"\n', encoding="utf-8")
    (result,) = check_protocols(replace(settings, protocol_dir=str(tmp_path)), now=START)
    assert not result.ok
    assert result.detail == "kyphoplasty.toml: has no [[steps]]"


# --- transport ----------------------------------------------------------------------------


def twilio(twilio_settings: Settings, **changes: object) -> list[Check]:
    return check_transport(replace(twilio_settings, **changes))  # type: ignore[arg-type]


def test_twilio_accepted_and_replies_routed(
    twilio_settings: Settings, twilio_fake: FakeTwilio
) -> None:
    twilio_fake.numbers[FROM_NUMBER] = INBOUND
    results = twilio(twilio_settings, environment="production")
    assert [r.line() for r in results] == [
        f"ok    PUBLIC_BASE_URL: {PUBLIC_BASE_URL} (webhooks: {PUBLIC_BASE_URL}/twilio/status, "
        f"{INBOUND})",
        "ok    twilio account: AC...ffff accepted the credentials; status active",
        f"ok    twilio sender: {FROM_NUMBER} belongs to the account and can send SMS",
    ]
    # Read-only: nothing was created at Twilio.
    assert {r.method for r in twilio_fake.requests} == {"GET"}
    assert twilio_fake.messages == {}


def test_twilio_refusals_each_give_a_clear_line(
    twilio_settings: Settings, twilio_fake: FakeTwilio
) -> None:
    twilio_fake.numbers[FROM_NUMBER] = "https://old-host.example/sms"
    wrong_token = twilio(twilio_settings, twilio_auth_token="not-the-token-0123456789")
    assert [r.line() for r in wrong_token][1:] == [
        "FAIL  twilio account: credentials refused (Twilio 20003): "
        "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
    ]
    unknown = twilio(twilio_settings, twilio_from_number="+12025550100")
    assert unknown[-1].line() == (
        "FAIL  twilio sender: TWILIO_FROM_NUMBER +12025550100 is not a number of this account"
    )
    elsewhere = twilio(twilio_settings)
    assert elsewhere[-1].line() == (
        f"FAIL  twilio sender: {FROM_NUMBER} sends incoming messages to "
        f"https://old-host.example/sms, not {INBOUND}: replies (STOP, pain scores) would not "
        "reach followup"
    )
    twilio_fake.account_status = "suspended"
    suspended = twilio(twilio_settings)
    assert suspended[1].line() == (
        "FAIL  twilio account: AC...ffff accepted the credentials; status suspended: "
        "Twilio sends nothing for it"
    )


def test_twilio_messaging_service(twilio_settings: Settings, twilio_fake: FakeTwilio) -> None:
    service = "MG" + "1" * 32
    missing = twilio(twilio_settings, twilio_messaging_service_sid=service, twilio_from_number=None)
    assert missing[-1].line() == (
        f"FAIL  twilio sender: TWILIO_MESSAGING_SERVICE_SID {service} is not a Messaging Service "
        "of this account (Twilio 20404)"
    )
    twilio_fake.messaging_services[service] = None
    unrouted = twilio(
        twilio_settings, twilio_messaging_service_sid=service, twilio_from_number=None
    )
    assert "sends incoming messages to nowhere" in unrouted[-1].detail
    twilio_fake.messaging_services[service] = INBOUND
    found = twilio(twilio_settings, twilio_messaging_service_sid=service, twilio_from_number=None)
    assert found[-1].line() == f"ok    twilio sender: Messaging Service {service} found"
    assert any(r.path == f"/v1/Services/{service}" for r in twilio_fake.requests)


def test_twilio_unreachable_fails_the_check_but_not_a_start(twilio_settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results = twilio(twilio_settings, twilio_api_base_url=f"http://127.0.0.1:{port}")
    assert results[-1].line() == "FAIL  twilio account: could not reach Twilio (ConnectionError)"
    assert results[-1].line(starting=True).startswith("warn  twilio account:")
    assert not checks_passed(results)
    assert checks_passed(results, starting=True)


def test_production_needs_https_and_a_real_transport(twilio_settings: Settings) -> None:
    http = replace(
        twilio_settings, environment="production", public_base_url="http://clinic.example"
    )
    assert check_transport(http)[0].line() == (
        "FAIL  PUBLIC_BASE_URL: http://clinic.example must be https:// in production "
        "(Twilio posts replies and reports there)"
    )
    console = replace(twilio_settings, environment="production", sms_transport="console")
    (result,) = check_transport(console)
    assert not result.ok and result.detail.startswith("console in production")


@pytest.mark.slow
def test_check_command_with_twilio(tmp_path: Path, twilio_fake: FakeTwilio) -> None:
    twilio_fake.numbers[FROM_NUMBER] = INBOUND
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    done = followup(
        tmp_path,
        "check",
        TWILIO_ACCOUNT_SID=twilio_fake.account_sid,
        TWILIO_AUTH_TOKEN=twilio_fake.auth_token,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=twilio_fake.base_url,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        METRICS_TOKEN="metrics-token-0123456789abcdef",
    )
    assert done.returncode == 0, done.stdout
    assert "ok    twilio account: AC...ffff accepted the credentials; status active" in done.stdout
    assert "ok    metrics: /metrics on, for requests with the METRICS_TOKEN bearer token" in (
        done.stdout
    )


# --- serve and worker run the checks at start ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command_name", ["serve", "worker"])
def test_serve_and_worker_refuse_to_start_on_a_failed_check(
    tmp_path: Path, command_name: str
) -> None:
    done = followup(tmp_path, command_name)  # no `db upgrade` first
    assert done.returncode == 1
    assert f"FAIL  database: {tmp_path / 'followup.db'} does not exist" in done.stderr
    assert done.stderr.strip().endswith(
        "error: configuration: start-up checks failed (above); 'followup check' lists them all"
    )
    assert "serving" not in done.stdout and "worker " not in done.stdout


@pytest.mark.slow
def test_serve_starts_when_twilio_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port, twilio_port = sock.getsockname()[1], None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        twilio_port = sock.getsockname()[1]
    assert followup(tmp_path, "db", "upgrade").returncode == 0
    env = clean_env(
        tmp_path,
        TWILIO_ACCOUNT_SID="AC" + "f" * 32,
        TWILIO_AUTH_TOKEN="fake-auth-token-0123456789abcdef",
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=f"http://127.0.0.1:{twilio_port}",
    )
    process = subprocess.Popen(
        [FOLLOWUP, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:  # noqa: S310
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.2)  # waiting for the server socket
        assert body == {"status": "ok", "database": "ok", "transport": "twilio"}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert "warn  twilio account: could not reach Twilio (ConnectionError)" in output
    assert process.returncode == 0, output


def test_retention_line_is_dated_by_the_clock() -> None:
    from followup.ops.checks import describe_retention

    result = describe_retention(Settings(retention_days=400), now=START)
    assert "ended before 2025-01-30 lose name, phone and text bodies" in result.detail


def test_the_check_says_who_an_urgent_reply_alerts_and_whether_the_escalation_reaches_more() -> (
    None
):
    from followup.ops.checks import describe_alerts

    none = describe_alerts(Settings())
    assert "alerts no one" in none.detail and "ONCALL_PHONE" in none.detail
    same = describe_alerts(Settings(oncall_phone="+12025550111"))
    assert same.detail.startswith("on-call SMS; escalation after 15 min to the same people")
    more = describe_alerts(
        Settings(
            oncall_phone="+12025550111",
            escalation_phone="+12025550122",
            alert_email=("a@clinic.example",),
        )
    )
    assert more.detail == (
        "on-call SMS and e-mail to 1 address(es); escalation after 15 min also to ESCALATION_PHONE"
    )
    for check in (none, same, more):
        assert "555" not in check.detail  # no phone number printed
