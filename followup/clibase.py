"""What every `followup` command shares: the --now clock, the runtime, ids, exit codes
and the one-line refusal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import click

from followup.bounds import MAX_ID
from followup.clock import Clock, FakeClock, SystemClock
from followup.ops.logs import configure_logging
from followup.runtime import Runtime, build_runtime
from followup.settings import Settings, load_settings

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
ID = click.IntRange(1, MAX_ID)
# --now: any instant a clinic could mean; also keeps date arithmetic far from year 9999.
EARLIEST_NOW = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_NOW = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass
class CliState:
    now: datetime | None

    def clock(self) -> Clock:
        return FakeClock(self.now) if self.now is not None else SystemClock()

    def settings(self) -> Settings:
        settings = load_settings()
        configure_logging(log_format=settings.log_format)
        return settings

    def runtime(self) -> Runtime:
        runtime = build_runtime(self.settings(), self.clock(), pinned=self.now is not None)
        # Close the database connections when the command ends, however it ends.
        click.get_current_context().call_on_close(runtime.engine.dispose)
        return runtime


def parse_now(text: str) -> datetime:
    """Parse --now: ISO 8601; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip()[:64])
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise click.BadParameter(f"{text[:64]!r} is not ISO 8601", param_hint="--now") from exc
    if not EARLIEST_NOW <= value < LATEST_NOW:
        raise click.BadParameter("must be between the years 2000 and 2099", param_hint="--now")
    return value


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (`error: ...`), then exit with `code`."""
    line = " ".join(message.split())  # one line, whatever the message held
    if len(line) > 300:
        line = line[:297] + "..."
    click.echo(f"error: {line}", err=True)
    sys.exit(code)
