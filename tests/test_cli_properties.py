"""Property tests (hypothesis): arbitrary input to the enrollment form, the send log's and
the audit trail's filters, and the command line never gives a 500, a traceback or a
partial write; bad input is a 4xx, or one line on stderr and exit 2.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from followup.audit.models import AuditEvent
from followup.cli import main
from followup.patients.models import Patient, Procedure

# The fixtures (a database, a signed-in client) are shared by a test's examples on
# purpose: each example checks counts before and after itself.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Real input: forms and argv carry no NUL and no lone surrogates.
typed = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=80,
)
long_typed = st.one_of(
    typed, st.builds(lambda c, n: c * n, st.sampled_from("a9/+- "), st.integers(100, 70_000))
)
extreme_dates = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(str)
datetimes_text = st.one_of(
    st.datetimes(min_value=__import__("datetime").datetime(1, 1, 2)).map(
        lambda d: d.isoformat(timespec="minutes")
    ),
    st.sampled_from(
        ["9999-12-31T23:59", "0001-01-01T00:00", "2026-03-06T13:30", "2026-03-06T13:30-05:00"]
    ),
    typed,
)
zones = st.one_of(
    st.sampled_from(
        ["America/New_York", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12", "UTC"]
    ),
    long_typed,
)
big_ints = st.one_of(st.integers(-(10**30), 10**30), st.integers(0, 10)).map(str)


def counts(session: so.Session) -> tuple[int, int, int]:
    session.expire_all()
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(Procedure)) or 0,
        session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) or 0,
    )


def no_crash(response: Any) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code < 500, body[:2000]
    assert "Traceback" not in body
    return body


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SMS_TRANSPORT", "console")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SMS_CONSOLE_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield database_url


def run_cli(args: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


def enroll_args(values: dict[str, str]) -> list[str]:
    args = ["--now", "2026-03-06T20:00:00Z", "enroll"]
    for name, value in values.items():
        args += [f"--{name}", value]
    return [*args, "--consent"]


commands = st.one_of(
    st.builds(
        enroll_args,
        st.fixed_dictionaries(
            {
                "first-name": st.one_of(st.just("Ada"), long_typed),
                "last-name": st.just("Moreno"),
                "phone": st.one_of(st.just("202-555-0143"), typed),
                "procedure": st.one_of(st.just("kyphoplasty"), typed),
                "completed-at": datetimes_text,
                "timezone": zones,
            },
            optional={"language": typed, "blood-thinner": typed, "external-id": long_typed},
        ),
    ),
    st.tuples(
        st.just("log"),
        st.sampled_from(["--status", "--step", "--patient", "--from", "--to", "--search"]),
        st.one_of(typed, extreme_dates, big_ints, long_typed),
    ).map(list),
    st.tuples(st.just("schedule"), big_ints).map(list),
    st.tuples(st.just("attention"), st.just("--handle"), typed, st.just("--note"), typed).map(list),
    st.tuples(st.just("--now"), st.one_of(datetimes_text, typed), st.just("tick")).map(list),
)


@PROPERTY
@given(args=commands)
@example(args=["log", "--to", "9999-12-31"])
@example(args=["schedule", "9" * 30])
@example(args=["--now", "9999-12-31T23:59:59-05:00", "tick"])
@example(
    args=enroll_args(
        {
            "first-name": "Ada",
            "last-name": "Moreno",
            "phone": "202-555-0143",
            "procedure": "kyphoplasty",
            "completed-at": "9999-12-31T23:59",
            "timezone": "America/Los_Angeles",
        }
    )
)
def test_the_cli_answers_bad_input_in_one_line_with_exit_2(
    cli_env: str, engine: sa.Engine, args: list[str]
) -> None:
    run_cli(["db", "upgrade"]) if not getattr(engine, "_upgraded", False) else None
    engine._upgraded = True  # type: ignore[attr-defined]
    with so.Session(engine) as session:
        before = counts(session)
        code, err = run_cli(args)
        after = counts(session)
    assert "Traceback" not in err
    if code == 0:
        assert err == "" or "enroll" not in args
    else:
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert len(err) < 400
        assert after[:2] == before[:2]  # nothing half-written
