"""Log an unexpected exception without its message, on one line.

A database error's text can quote the row it refused (PostgreSQL's "Failing row contains
(..., +12025550143, ...)"), and a provider's error can quote a phone number or a body. Logs
carry ids, never those: so an unexpected failure is logged as its type, the database's
error code and constraint where there is one, and where in our code it happened (a code
location), never what it said. One line, so that a log shipper or cron's mail keeps it
whole.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent  # followup/
_ROOTS = (str(_PACKAGE) + "/", str(_PACKAGE.parent / "jobs") + "/")


def describe_failure(exc: BaseException) -> str:
    """'module.Type [code] at followup/x.py:12 in f': what and where, never the message."""
    parts = [f"{type(exc).__module__}.{type(exc).__qualname__}"]
    code = _database_code(exc)
    if code:
        parts.append(f"[{code}]")
    where = _innermost_frame(exc)
    if where:
        parts.append(f"at {where}")
    return " ".join(parts)


def log_failure(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Log `message` at ERROR with the exception's type, code and place, never its text."""
    logger.error(message + " (%s)", *args, describe_failure(exc))


def _database_code(exc: BaseException) -> str | None:
    """The SQLSTATE (and constraint) of a database error, or SQLite's error name."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return None
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        diag = getattr(orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None) if diag is not None else None
        table = getattr(diag, "table_name", None) if diag is not None else None
        names = ", ".join(
            f"{label} {value}"
            for label, value in (("table", table), ("constraint", constraint))
            if value
        )
        return f"{type(orig).__name__} {sqlstate}" + (f", {names}" if names else "")
    name = getattr(orig, "sqlite_errorname", None)
    return f"{type(orig).__name__} {name}" if name else type(orig).__name__


def _innermost_frame(exc: BaseException) -> str | None:
    """The innermost frame in this project's code (else the innermost at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    ours = [f for f in frames if f.filename.startswith(_ROOTS)]
    frame = (ours or frames)[-1]
    if frame.filename.startswith(_ROOTS):
        path = str(Path(frame.filename).relative_to(_PACKAGE.parent))
    else:
        path = Path(frame.filename).name
    return f"{path}:{frame.lineno} in {frame.name}"
