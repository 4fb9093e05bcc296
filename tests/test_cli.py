"""The `followup` command, end to end: real subprocesses in an empty folder."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from followup.cli import main
from followup.db import make_engine

NY = ZoneInfo("America/New_York")
FOLLOWUP = str(Path(sys.executable).with_name("followup"))


def ny(text: str) -> str:
    """A New York wall-clock time as an ISO 8601 UTC instant for --now."""
    return datetime.fromisoformat(text).replace(tzinfo=NY).astimezone(UTC).isoformat()


class Cli:
    def __init__(self, folder: Path, database_url: str) -> None:
        self.folder = folder
        self.console_file = folder / "sms.jsonl"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))},
            "DATABASE_URL": database_url,
            "SMS_CONSOLE_FILE": str(self.console_file),
            "CLINIC_NAME": "Riverside Spine Center",
            "CLINIC_PHONE": "(202) 555-0100",
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [FOLLOWUP, *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def texts(self) -> list[dict[str, object]]:
        if not self.console_file.exists():
            return []
        return [json.loads(line) for line in self.console_file.read_text().splitlines()]


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    folder = tmp_path / "empty"
    folder.mkdir()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{folder / 'followup.db'}"  # a brand-new file
    return Cli(folder, database_url)


def test_each_step_goes_out_once_at_its_instant_across_dst_quiet_hours_and_expiry(cli: Cli) -> None:
    assert "database at head" in cli.run("db", "upgrade").stdout
    enrolled = cli.run(
        "--now", ny("2026-03-07T20:45"),
        "enroll", "--first-name", "Ada", "--last-name", "Moreno", "--phone", "202-555-0143",
        "--procedure", "kyphoplasty", "--completed-at", "2026-03-07T20:40",
        "--timezone", "America/New_York", "--blood-thinner", "Eliquis", "--consent",
    ).stdout  # fmt: skip
    assert enrolled.startswith("patient 1 enrolled: procedure 1 (kyphoplasty)")
    # Saturday evening before the spring-forward night; the 48 h restart lands at 21:40 EDT
    # on Monday, in quiet hours, so it waits until 08:00 on Tuesday.
    assert "no-driving               Sat 2026-03-07 20:45 EST" in enrolled
    assert "soreness                 Sun 2026-03-08 10:00 EDT" in enrolled
    assert "blood-thinner-restart    Tue 2026-03-10 08:00 EDT" in enrolled

    expected = {
        "2026-03-07T20:45": ["no-driving"],
        "2026-03-08T09:59:59": [],
        "2026-03-08T10:00": ["soreness"],
        "2026-03-09T21:40": [],  # 48 h have passed, but it is quiet hours
        "2026-03-10T07:59:59": [],
        "2026-03-10T08:00": ["blood-thinner-restart"],
        "2026-03-10T09:59:59": [],
        "2026-03-10T10:00": ["warning-signs"],
        "2026-03-14T20:00": [],  # the pain check's window closed with no tick inside it
    }
    for local, steps in expected.items():
        before = len(cli.texts())
        cli.run("--now", ny(local), "tick")
        cli.run("--now", ny(local), "tick")  # the same instant again sends nothing
        sent = cli.texts()[before:]
        assert [t["step"] for t in sent] == steps, local
        for text in sent:
            assert text["sent_at"] == ny(local)
            assert text["to"] == "+12025550143"

    restart = next(t for t in cli.texts() if t["step"] == "blood-thinner-restart")
    assert str(restart["body"]).startswith(
        "Riverside Spine Center: You may restart your Eliquis from 9:40 PM on Monday, March 9."
    )
    rows = list(csv.DictReader(io.StringIO(cli.run("log", "--csv").stdout)))
    assert {r["step"]: r["status"] for r in rows} == {
        "no-driving": "sent",
        "soreness": "sent",
        "blood-thinner-restart": "sent",
        "warning-signs": "sent",
        "pain-check": "expired",
    }
    assert rows[0]["sent_at"] == ny("2026-03-07T20:45")
    assert {"message_id", "patient_id", "step", "status", "due_at", "sent_at", "error_code"} <= set(
        rows[0]
    )
    schedule = cli.run("schedule", "1").stdout
    assert "pain-check               Sat 2026-03-14 10:00 EDT   expired" in schedule
    failed = cli.run("log", "--status", "failed", "--csv").stdout.splitlines()
    assert len(failed) == 1  # the header only


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"--phone": "12"}, "--phone"),
        ({"--procedure": "discectomy"}, "--procedure"),
        ({"--timezone": "Eastern"}, "--timezone"),
        ({"--completed-at": "2026-03-07T21:00"}, "--completed-at"),  # after --now
        ({"--consent": None}, "--consent"),
        ({"--no-blood-thinner": None}, "--blood-thinner / --no-blood-thinner"),  # no answer
        ({"--blood-thinner": "Eliquis"}, "--blood-thinner / --no-blood-thinner"),  # both
        ({"--no-blood-thinner": None, "--blood-thinner": "None."}, "--blood-thinner"),
        ({"--scheduled-at": "2026-03-12T09:00"}, "--scheduled-at"),  # and --completed-at
        ({"--stop-blood-thinner-on": "2026-03-07"}, "--stop-blood-thinner-on"),  # not booked
    ],
)
def test_bad_enroll_input_is_one_line_exit_2_and_writes_nothing(
    cli: Cli, change: dict[str, str | None], flag: str
) -> None:
    cli.run("db", "upgrade")
    options = {
        "--first-name": "Ada", "--last-name": "Moreno", "--phone": "202-555-0143",
        "--procedure": "kyphoplasty", "--completed-at": "2026-03-07T20:40",
        "--timezone": "America/New_York", "--no-blood-thinner": "", "--consent": "",
    }  # fmt: skip
    options.update(change)  # type: ignore[arg-type]
    args = ["--now", ny("2026-03-07T20:45"), "enroll"]
    for name, value in options.items():
        if value is None:
            continue
        args += [name] if value == "" else [name, value]
    result = cli.run(*args, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), result.stderr
    engine = make_engine(cli.env["DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM patients")) == 0
        assert conn.scalar(sa.text("SELECT count(*) FROM messages")) == 0
    engine.dispose()


def test_cli_refusals_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'f.db'}")
    for args, words in [
        (["--now", "soon", "tick"], "--now"),
        (["schedule", "1"], "run 'followup db upgrade' first"),
        (["log", "--status", "lost"], "--status: must be one of"),
        (["enroll", "--first-name", "A"], "Missing option"),
    ]:
        with pytest.raises(SystemExit) as excinfo:
            main(args)
        assert excinfo.value.code in (1, 2)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    main(["db", "upgrade"])
    with pytest.raises(SystemExit) as excinfo:
        main(["schedule", "42"])
    assert excinfo.value.code == 2
    assert capsys.readouterr().err.strip() == "error: no patient 42"


def test_users_create_reads_the_password_from_stdin(cli: Cli) -> None:
    cli.run("db", "upgrade")
    result = subprocess.run(
        [FOLLOWUP, "users", "create", "--email", "Nurse@Example.org", "--role", "nurse", "--password-stdin"],
        cwd=cli.folder, env=cli.env, input="correct horse battery\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "user 1 created (nurse)"
    short = subprocess.run(
        [FOLLOWUP, "users", "create", "--email", "b@example.org", "--role", "admin", "--password-stdin"],
        cwd=cli.folder, env=cli.env, input="short\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2
    assert short.stderr.strip() == "error: --password: must be at least 12 characters"


def test_now_is_pinned_for_every_command(cli: Cli) -> None:
    cli.run("db", "upgrade")
    then = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    out = cli.run("--now", then.isoformat(), "tick").stdout
    assert out.startswith(f"tick at {then.isoformat()}")
    naive = cli.run("--now", "2026-03-07T12:00:00", "tick").stdout
    assert naive.startswith(f"tick at {then.isoformat()}")  # no offset means UTC


def test_log_takes_the_web_filters_and_audits_csv_exports(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    main(["db", "upgrade"])
    for phone, name in (("202-555-0143", "Moreno"), ("202-555-0177", "Lindqvist")):
        main([
            "--now", ny("2026-03-07T15:00"), "enroll", "--first-name", "Ada", "--last-name", name,
            "--phone", phone, "--procedure", "vertebroplasty", "--completed-at", "2026-03-07T14:30",
            "--timezone", "America/New_York", "--no-blood-thinner", "--consent",
        ])  # fmt: skip
    capsys.readouterr()
    main(["log", "--csv", "--search", "0177", "--step", "soreness"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["patient_id"], r["step"]) for r in rows] == [("2", "soreness")]
    main(["log", "--csv", "--from", "2026-03-08", "--to", "2026-03-08"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["step"] for r in rows) == ["soreness", "soreness"]
    main(["log", "--needs-attention"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # header only
    engine = make_engine(url)
    with engine.connect() as conn:
        details = conn.execute(
            sa.text(
                "SELECT actor, detail FROM audit_events WHERE action = 'sendlog.exported' ORDER BY id"
            )
        ).all()
    engine.dispose()
    assert details == [
        ("cli", "step=soreness, search=0177"),
        ("cli", "from=2026-03-08, to=2026-03-08"),
    ]
    with pytest.raises(SystemExit):
        main(["log", "--from", "2026-03-09", "--to", "2026-03-08"])
    assert capsys.readouterr().err.strip() == "error: --to: is before the start date"


def test_attention_lists_and_handles_the_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    main(["db", "upgrade"])
    capsys.readouterr()
    main(["attention"])
    assert capsys.readouterr().out.strip() == "nothing needs attention"
    main([
        "--now", ny("2026-03-07T15:00"), "enroll", "--first-name", "Ada", "--last-name", "Moreno",
        "--phone", "202-555-0143", "--procedure", "kyphoplasty", "--completed-at", "2026-03-07T14:30",
        "--timezone", "America/New_York", "--blood-thinner", "Eliquis", "--consent",
    ])  # fmt: skip
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE messages SET status = 'expired' WHERE step = 'blood-thinner-restart'")
        )
    engine.dispose()
    capsys.readouterr()
    main(["--now", ny("2026-03-10T10:00"), "attention"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "1 open, 0 urgent"
    assert lines[1].startswith("text:") and "blood-thinner-restart expired" in lines[1]
    assert lines[2] == "    Ada Moreno (patient 1) | +12025550143 | English"
    assert lines[3] == (
        "    what to do: Call the patient: they may not know when to restart their medicine."
    )
    item = lines[1].split()[0]
    with pytest.raises(SystemExit):
        main(["attention", "--handle", item])
    assert capsys.readouterr().err.strip() == "error: --note: is required: say what was done"
    main(["attention", "--handle", item, "--note", "Called the patient"])
    assert capsys.readouterr().out.strip() == f"{item.replace(':', ' ')} handled"
    main(["attention"])
    assert capsys.readouterr().out.strip() == "nothing needs attention"


def test_a_booked_procedure_from_the_command_line(cli: Cli) -> None:
    cli.run("db", "upgrade")
    enrolled = cli.run(
        "--now", ny("2026-03-03T15:00"),
        "enroll", "--first-name", "Ada", "--last-name", "Moreno", "--phone", "202-555-0143",
        "--procedure", "vertebroplasty", "--scheduled-at", "2026-03-12T09:00",
        "--timezone", "America/New_York", "--language", "es", "--blood-thinner", "warfarin",
        "--stop-blood-thinner-on", "2026-03-07", "--consent",
    ).stdout  # fmt: skip
    assert enrolled.startswith("patient 1 enrolled: procedure 1 (vertebroplasty, booked)")
    assert "welcome                  Tue 2026-03-03 15:00 EST" in enrolled
    assert "stop-blood-thinner       Fri 2026-03-06 10:00 EST" in enrolled
    assert "day-before               Wed 2026-03-11 16:00 EDT" in enrolled
    cli.run("--now", ny("2026-03-06T10:00"), "tick")
    bodies = {t["step"]: str(t["body"]) for t in cli.texts()}
    assert (
        "Deje de tomar su warfarin el sábado 7 de marzo, como le indicó su médico."
        in bodies["stop-blood-thinner"]
    )
    moved = cli.run(
        "--now", ny("2026-03-06T11:00"), "reschedule", "1", "--scheduled-at", "2026-03-13T09:00"
    ).stdout
    assert "day-before               Thu 2026-03-12 16:00 EDT" in moved
    # A time the clocks skip, and a finish before the booking is refused with the flag named.
    refused = cli.run(
        "--now", ny("2026-03-13T12:00"), "complete", "1", "--completed-at", "2026-03-08T02:30",
        check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --completed-at: 2026-03-08 02:30 does not exist")
    done = cli.run(
        "--now", ny("2026-03-13T12:00"), "complete", "1", "--completed-at", "2026-03-13T10:30"
    ).stdout
    assert done.startswith("procedure 1 finished")
    assert "day-before               Thu 2026-03-12 16:00 EDT   cancelled" in done  # never ticked
    assert "no-driving               Fri 2026-03-13 12:00 EDT   pending" in done
    assert "blood-thinner-restart    Sun 2026-03-15 10:30 EDT   pending" in done
    again = cli.run(
        "--now", ny("2026-03-13T12:05"), "complete", "1", "--completed-at", "2026-03-13T10:30",
        check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "has 0 booked procedures" in again.stderr


def test_users_create_refuses_a_guessable_password_in_one_line(cli: Cli) -> None:
    cli.run("db", "upgrade")
    result = subprocess.run(
        [FOLLOWUP, "users", "create", "--email", "b@example.org", "--role", "admin", "--password-stdin"],
        cwd=cli.folder, env=cli.env, input="passwordpass\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --password: is too easy to guess")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["log", "--to", "9999-12-31"], "--to: must be between 2000-01-01 and 2099-12-31"),
        (["log", "--patient", "9" * 30], "--patient"),
        (["schedule", "99999999999"], "PATIENT_ID"),
        (["--now", "9999-12-31T23:59:59-05:00", "tick"], "--now"),
        (["attention", "--handle", "reply:99999999999999", "--note", "x"], "--handle"),
    ],
)
def test_out_of_range_input_is_one_line_and_exit_2(cli: Cli, args: list[str], words: str) -> None:
    cli.run("db", "upgrade")
    result = cli.run(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr
