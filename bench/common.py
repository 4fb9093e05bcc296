"""What the benchmarks share: a fresh, migrated database to measure in."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from followup.db import make_engine
from followup.migrate import alembic_config


def fresh_database(url: str | None, reset: bool, folder: Path, name: str) -> str:
    """A migrated, empty database: SQLite `name`.db in `folder`, or `url` with --reset."""
    if url is None:
        url = f"sqlite:///{folder / name}.db"
    elif reset:
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        raise SystemExit("--reset is required with --database-url: the schema is dropped")
    command.upgrade(alembic_config(url), "head")
    return url
