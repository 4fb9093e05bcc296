"""Run Alembic from code: `followup db upgrade` and the tests use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from followup.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str, *, connection: Connection | None = None) -> Config:
    """Build an Alembic Config pointing at this checkout's migrations/ and `database_url`."""
    ini = ROOT / "alembic.ini"
    if not (ROOT / "migrations" / "env.py").is_file():
        raise ConfigurationError(
            f"migrations/ not found beside {ROOT / 'followup'}; install with 'pip install -e .'"
        )
    config = Config(str(ini))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["skip_logging"] = True
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
