"""Database plumbing: the declarative Base, the UTC datetime type, engine and sessions."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, Engine

log = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL's answers that mean "this transaction was rolled back whole; run it again":
# chosen as a deadlock's victim (40P01) or a serialization failure (40001).
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
WRITE_ATTEMPTS = 3

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def as_utc(value: Any) -> datetime:
    """The instant in UTC; a naive datetime (always a bug here) or a non-datetime refused."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime refused: every datetime must be timezone-aware")
    return value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamptz`. SQLite has no time zones, so the value is stored as
    naive UTC and the zone is put back on the way out. A naive datetime is refused on the
    way in: it is always a bug here.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite returns text
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def normalize_url(url: str) -> str:
    """Use the psycopg (3) driver for a bare postgresql:// URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets foreign keys, a busy timeout and WAL.

    Statement parameters are kept out of error messages and logs (`hide_parameters`): they
    hold phone numbers and message bodies, and a traceback must not carry them.
    """
    url = normalize_url(url)
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL survives a crash of the process (the dispatcher's risk);
                # only a power cut can lose the last commits, and the reaper settles those.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> so.sessionmaker[so.Session]:
    """Build the session factory; objects stay readable after commit."""
    return so.sessionmaker(bind=engine, expire_on_commit=False)


def is_retryable(exc: BaseException) -> bool:
    """Tell whether the database rolled the transaction back whole for a conflict with
    another one (deadlock victim, serialization failure): running it again is safe."""
    orig = getattr(exc, "orig", None)
    return isinstance(exc, sa.exc.DBAPIError) and (
        getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def commit_with_retry(
    session: so.Session, work: Callable[[], T], *, attempts: int = WRITE_ATTEMPTS
) -> T:
    """Run `work` (a request's writes in `session`) and commit; run it again, up to
    `attempts` times in all, when the database rolled it back for a conflict.

    On PostgreSQL a nurse's edit locks a procedure's texts while a dispatcher's turn may
    hold one of them and wait for another: one of the two is rolled back after
    `deadlock_timeout`. The dispatcher's turn is settled by the reaper; a request's writes
    are run again here instead of answering the nurse (or Twilio) with an error. `work`
    must only write through `session` (nothing sent, nothing outside the transaction),
    so a second run is as if the first never happened. Any other error propagates, after
    the rollback.
    """
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            session.commit()
            return result
        except Exception as exc:
            session.rollback()
            if attempt == attempts or not is_retryable(exc):
                raise
            log.warning(
                "transaction rolled back (%s, attempt %d of %d); running it again",
                getattr(getattr(exc, "orig", None), "sqlstate", "?"),
                attempt,
                attempts,
            )
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def advisory_key(value: str) -> int:
    """A stable 32-bit key for a PostgreSQL advisory lock on a text (a phone): the same in
    every process and release; two texts sharing one only wait for each other."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def sqlite_write_lock(session: so.Session, table: sa.Table) -> None:
    """SQLite: take the database's write lock now, by an UPDATE that changes nothing (the
    driver begins a transaction only at its first write, so the reads before it lock
    nothing and may be overwritten by what another request commits meanwhile). PostgreSQL
    locks rows instead: nothing to do."""
    if is_postgresql(session):
        return
    key = next(iter(table.primary_key.columns))
    session.execute(sa.update(table).where(sa.false()).values({key.name: key}))


def locked_get(
    session: so.Session, model: type[T], ident: int, *, key_share: bool = False
) -> T | None:
    """The row as committed now, locked until the transaction ends: PostgreSQL FOR UPDATE
    (FOR NO KEY UPDATE with `key_share`, as the row's own UPDATE takes), SQLite the
    database's write lock."""
    if is_postgresql(session):
        lock: Any = {"key_share": True} if key_share else True
        return session.get(model, ident, populate_existing=True, with_for_update=lock)
    sqlite_write_lock(session, cast(sa.Table, model.__table__))  # type: ignore[attr-defined]
    return session.get(model, ident, populate_existing=True)


def is_postgresql(session: so.Session) -> bool:
    """Tell whether the session talks to PostgreSQL (row locks with SKIP LOCKED)."""
    return session.get_bind().dialect.name == "postgresql"


def in_ids(
    session: so.Session, column: so.QueryableAttribute[int] | sa.ColumnElement[int], ids: list[int]
) -> Any:
    """`column IN ids` with the ids as one parameter (an array on PostgreSQL, a JSON array
    on SQLite): one short statement for any number of ids, where an IN list is a parameter
    per id to bind and a new statement to parse for each length."""
    if is_postgresql(session):
        return column == sa.any_(sa.bindparam(None, ids, type_=postgresql.ARRAY(sa.Integer)))
    rows = sa.func.json_each(sa.bindparam(None, json.dumps(ids), type_=sa.Text))
    return column.in_(sa.select(sa.literal_column("value")).select_from(rows))


def analyze_if_without_statistics(session: so.Session, tables: tuple[str, ...]) -> list[str]:
    """ANALYZE those of `tables` PostgreSQL keeps no column statistics for; return their
    names. For a table this transaction has just filled: unlike `reltuples`, which an
    ANALYZE rolled back with its transaction leaves set, the statistics go with it, so a
    failed bulk load is analyzed again by the next. No-op on SQLite."""
    if not is_postgresql(session):
        return []
    have = set(
        session.scalars(
            sa.text(
                "SELECT DISTINCT tablename FROM pg_stats WHERE tablename = ANY(CAST(:tables AS"
                " text[])) AND schemaname = ANY(current_schemas(false))"
            ),
            {"tables": list(tables)},
        )
    )
    missing = [t for t in tables if t not in have]
    if missing:
        session.execute(sa.text("ANALYZE " + ", ".join(missing)))
    return missing


def analyze_if_never_analyzed(session: so.Session, tables: tuple[str, ...]) -> list[str]:
    """ANALYZE those of `tables` PostgreSQL has no statistics for yet (a fresh bulk load,
    before autovacuum's first pass); return their names. Without statistics its planner
    guesses that few patients match `opted_out_at IS NULL` and joins every procedure to
    every patient. No-op on SQLite, whose planner needs none. Cheap: one catalog lookup.
    PostgreSQL 14 and later mark a never-analyzed table (reltuples -1); on older versions
    this finds none and autovacuum's first pass is waited for, as before."""
    if not is_postgresql(session):
        return []
    never = session.scalars(
        sa.text(
            "SELECT relname FROM pg_class WHERE relname = ANY(CAST(:tables AS text[]))"
            " AND relkind = 'r' AND reltuples < 0 AND pg_table_is_visible(oid)"
        ),
        {"tables": list(tables)},
    ).all()
    if never:
        session.execute(sa.text("ANALYZE " + ", ".join(t for t in tables if t in never)))
    return list(never)
