"""Log an unexpected exception without its message.

A database error's text can quote the row it refused (PostgreSQL's "Failing row contains
(..., +12025550143, ...)"), and a provider's error can quote a phone number or a body. Logs
carry ids, never those: so an unexpected failure is logged as its type and where it
happened (the traceback's frames, which are code locations), not what it said.
"""

from __future__ import annotations

import logging
import traceback


def log_failure(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Log `message` at ERROR with the exception's type and frames, never its text."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    logger.error(
        message + " (%s.%s)\n%s",
        *args,
        type(exc).__module__,
        type(exc).__qualname__,
        frames,
    )
