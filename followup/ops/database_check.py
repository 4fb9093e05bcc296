"""`followup check`'s database lines: reachable, migrated to this version's head, (on
SQLite) a library with what followup needs, and this host's clock against the server's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from followup.errors import ConfigurationError
from followup.ops.checks import Check
from followup.settings import Settings

SQLITE_MINIMUM = (3, 35)  # RETURNING; planning also needs json_each (built in since 3.38)
# Leases and the reaper compare times written by one process with another's clock: a text
# is leased for 60 s and renewed every 15 s, so a reaper whose clock ran 45 s ahead could
# take a text whose request is under way. Every process is held to a few seconds of the
# database server's clock (and so of each other's).
MAX_CLOCK_SKEW = 5.0  # seconds


def wall_clock() -> datetime:
    """This host's clock (not the service's Clock, which `--now` may pin)."""
    return datetime.now(UTC)


def sqlite_lacks(connection: Any) -> str | None:
    """What this SQLite library lacks for followup, or None: RETURNING (3.35) and the JSON
    functions planning passes its rows through (`json_each`)."""
    version = str(connection.exec_driver_sql("SELECT sqlite_version()").scalar())
    if tuple(int(part) for part in version.split(".")[:2]) < SQLITE_MINIMUM:
        return f"SQLite {version} is too old: followup needs 3.35 or later (RETURNING)"
    try:
        connection.exec_driver_sql("SELECT count(*) FROM json_each('[1]')").scalar()
    except sa.exc.OperationalError:
        return f"SQLite {version} has no JSON functions (json_each): build it with JSON1"
    return None


def check_database(settings: Settings) -> Check:
    """Reachable, and migrated to the head this version ships."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from followup.db import make_engine, normalize_url
    from followup.migrate import alembic_config

    url = make_url(normalize_url(settings.database_url))
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_file():
            return Check(
                "database",
                False,
                f"{path} does not exist: run 'followup db upgrade' to create it",
            )
    try:
        heads = set(ScriptDirectory.from_config(alembic_config(str(url))).get_heads())
    except ConfigurationError as exc:
        return Check("database", False, str(exc))
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    engine = make_engine(url.render_as_string(hide_password=False), **kwargs)
    try:
        with engine.connect() as connection, _quiet("alembic"):
            connection.execute(sa.text("SELECT 1"))
            lacking = sqlite_lacks(connection) if backend == "sqlite" else None
            current = set(MigrationContext.configure(connection).get_current_heads())
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        reason = str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else ""
        return Check(
            "database", False, f"cannot connect to {backend}: {reason or type(exc).__name__}"
        )
    finally:
        engine.dispose()
    where = url.render_as_string(hide_password=True)
    if lacking:
        return Check("database", False, lacking)
    if not current:
        return Check("database", False, f"{where} has no schema: run 'followup db upgrade'")
    if current == heads:
        return Check(
            "database",
            True,
            f"{where} reachable, schema at {', '.join(sorted(heads))} (this version's head)",
        )
    known = _known_revisions(settings)
    unknown = current - known
    if unknown:
        return Check(
            "database",
            False,
            f"{where} is at {', '.join(sorted(unknown))}, which this version does not know "
            "(was a newer release run against it?)",
        )
    return Check(
        "database",
        False,
        f"{where} is at {', '.join(sorted(current))}, this version needs "
        f"{', '.join(sorted(heads))}: run 'followup db upgrade'",
    )


def check_clock(settings: Settings, *, wall: Callable[[], datetime] = wall_clock) -> Check:
    """This host's clock against the PostgreSQL server's: within MAX_CLOCK_SKEW. On SQLite
    the database is on this host, and its clock is this one."""
    from followup.db import make_engine, normalize_url

    url = make_url(normalize_url(settings.database_url))
    if url.get_backend_name() != "postgresql":
        return Check("clock", True, "the database is a file on this host: one clock")
    engine = make_engine(url.render_as_string(hide_password=False),
                         connect_args={"connect_timeout": 10})  # fmt: skip
    try:
        with engine.connect() as connection:
            skew = clock_skew(connection, wall=wall)
    except sa.exc.SQLAlchemyError:
        return Check("clock", False, "not compared: the database cannot be reached")
    finally:
        engine.dispose()
    if abs(skew) > MAX_CLOCK_SKEW:
        return Check("clock", False, skew_problem(skew) + "; synchronise the clocks (NTP)")
    return Check("clock", True, f"within {abs(skew):.1f} s of the database server's")


def clock_skew(connection: Any, *, wall: Callable[[], datetime] = wall_clock) -> float:
    """Seconds by which the PostgreSQL server's clock is ahead of this host's (negative:
    behind), from the middle of the round trip."""
    before = wall()
    server = connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    after = wall()
    return float((server - (before + (after - before) / 2)).total_seconds())


def skew_problem(skew: float) -> str:
    """What a skew past MAX_CLOCK_SKEW means, for a check line or a log line."""
    return (
        f"this host's clock is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} "
        f"the database server's (at most {MAX_CLOCK_SKEW:.0f} s): leases would not hold "
        "across hosts, and a text could go twice"
    )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hold a library's INFO lines back while a check uses it (Alembic's context lines)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _known_revisions(settings: Settings) -> set[str]:
    from alembic.script import ScriptDirectory

    from followup.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(settings.database_url))
    return {revision.revision for revision in script.walk_revisions()}
