"""`followup check`'s database line: reachable, migrated to this version's head, and (on
SQLite) a library with what followup needs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from followup.errors import ConfigurationError
from followup.ops.checks import Check
from followup.settings import Settings

SQLITE_MINIMUM = (3, 35)  # RETURNING; planning also needs json_each (built in since 3.38)


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
