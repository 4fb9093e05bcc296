"""Logging: quiet, useful lines on stderr, as text or one JSON object a line.

- APScheduler's own lines ("Running job ...", "... executed successfully", "Added job")
  are kept to WARNING and above: missed runs and errors still show, routine runs do not.
  Each job run that did something logs one line of its own instead (followup.ops.runs).
- The dispatcher's line per text handed over is kept out at INFO: the send log has every
  text with its SID, and a busy morning would otherwise bury everything else.
- LOG_FORMAT=json: one JSON object a line, with `time` (ISO 8601 UTC), `level`,
  `logger`, `message` and any structured fields a line carries (a job run's `job`,
  `results` and `seconds`).
- Lines carry ids, SIDs, counts and codes, never a name, a phone number or a text's body
  (tests/ops/test_logs.py scans a realistic run for them).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers held at WARNING: their INFO lines repeat for every run or every text.
QUIET_LOGGERS = ("apscheduler", "followup.messaging.dispatch", "alembic.runtime.plugins")
_HANDLER_NAME = "followup"


def build_formatter(log_format: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT (text or json)."""
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    formatter = logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


def configure_logging(
    *, log_format: str = "text", stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Handler | None:
    """Send every log line to `stream` (stderr) in `log_format`; replace an earlier setup.

    Idempotent: the CLI calls it once with the defaults and again once the settings are
    read, and only one handler of ours is ever installed. Like logging.basicConfig, it adds
    no handler to stderr when the host already put one on the root logger (a test runner,
    an embedding application); an explicit `stream` always gets one. The levels are set
    either way. Returns the handler installed, if any.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == _HANDLER_NAME]
    for handler in ours:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    if stream is None and root.handlers:
        return None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(build_formatter(log_format))
    root.addHandler(handler)
    return handler
