"""Property tests (hypothesis): arbitrary arguments to the command line never give a
traceback or a partial write; bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import example, given
from hypothesis import strategies as st

from followup.cli import main
from tests.properties import (
    PROPERTY,
    big_ints,
    counts,
    datetimes_text,
    extreme_dates,
    long_typed,
    typed,
    zones,
)

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
