"""A text's event rows and the guarded outcome UPDATEs, shared by every stage of the outbox.

Every write that settles a leased text goes through `settle_leased`: one set-based UPDATE
guarded on status `sending` and the lease owner (RETURNING the ids it wrote, so a caller
knows exactly which texts were still its own), with the per-text values in the same statement.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import Grouping

from followup.db import UTCDateTime, as_utc, is_postgresql
from followup.messaging.models import (
    CANCELLED,
    CLOSED_UNSENT,
    EXPIRED,
    FAILED,
    PENDING,
    SENDING,
    FailedCopy,
    Message,
)
from followup.patients.models import Patient, Procedure

CHUNK = 500  # ids per IN list
# The outbox as a Core table: bulk UPDATEs through it skip the ORM's session sync (which
# would walk every Message the session holds, on each statement).
MESSAGES = cast(sa.Table, Message.__table__)

ERROR_TEXT = 500  # characters of a provider's error message kept on the text

# A text not sent after all: its hand-over mark and attempt are taken back.
UNDO_HANDOVER: dict[str, Any] = {
    "handed_at": None,
    "attempts": MESSAGES.c.attempts - 1,
}


# One JSON array of rows, unpacked by the database: on PostgreSQL an element's fields as
# text (->>), cast by the column; on SQLite as stored. json_each numbers its rows from 0 and
# WITH ORDINALITY from 1: the rows go in their order either way.
_JSON_ROWS = {
    True: "json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS r(value, key)",
    False: "json_each(:rows)",
}


def _json_field(postgres: bool, n: int, cast_to: str | None = None) -> str:
    """The n-th field of a JSON row (`value`), as the column `cast_to` on PostgreSQL."""
    if not postgres:
        return f"json_extract(value, '$[{n}]')"
    return f"(value->>{n})::{cast_to}" if cast_to else f"value->>{n}"


@lru_cache(maxsize=2)
def _json_events_insert(postgres: bool) -> sa.TextClause:
    """History rows from one JSON array of [message id, at, kind, status, detail], in order."""
    casts = ("integer", "timestamptz", None, None, None)
    fields = ", ".join(_json_field(postgres, n, c) for n, c in enumerate(casts))
    return sa.text(
        "INSERT INTO message_events (message_id, at, kind, status, detail)"  # noqa: S608
        f" SELECT {fields} FROM {_JSON_ROWS[postgres]} ORDER BY key"
    )


@lru_cache(maxsize=64)
def _per_row_update(columns: tuple[str, ...], *, guard: str | None) -> sa.Update:
    """A cached UPDATE of one text by id (executemany): built once per column set."""
    table = MESSAGES
    statement = sa.update(table).where(table.c.id == sa.bindparam("p_id"))
    if guard == "unsent":
        # A text the provider has, recorded as sent even though its lease moved on: the
        # reaper may have requeued it (Twilio did not list it yet), and since then that
        # copy may have been expired or cancelled (re-planning, a cancellation) or refused
        # by the provider (a later attempt). Never over a text with a SID: a send someone
        # else recorded, or an outcome the provider reported for it.
        # Nor a copy the provider reported failed since (30001: the text went back to the
        # queue to be tried again): written back, it stopped that retry for good.
        failed = cast(sa.Table, FailedCopy.__table__).c
        statement = statement.where(
            sa.or_(
                table.c.status.in_((PENDING, SENDING)),
                sa.and_(
                    table.c.status.in_((EXPIRED, CANCELLED, FAILED)),
                    table.c.provider_sid.is_(None),
                ),
            ),
            ~sa.exists().where(failed.provider_sid == sa.bindparam("v_provider_sid")),
        )
    elif guard == "requeued":
        # A maybe-sent text whose lease moved on while its request was under way: taken
        # back unless it was handed over again, recorded or closed since. Taken too: a
        # claim not handed over yet (its dispatcher's hand-over guard then refuses it) and
        # the reaper's hold while it asks the provider (its requeue is then refused), both
        # told apart from a newer hand-over by `handed_at` (never later than this one's).
        # A copy closed since (a STOP, a cancellation, a window re-planned shut) stays
        # closed: whatever the provider has, nothing may go out again.
        statement = statement.where(
            table.c.provider_sid.is_(None),
            sa.or_(
                table.c.status == PENDING,
                sa.and_(table.c.status == SENDING, table.c.handed_at.is_(None)),
                sa.and_(
                    table.c.status == SENDING,
                    table.c.lease_owner.is_not(None),
                    table.c.handed_at <= sa.bindparam("v_handed_at"),
                ),
            ),
        )
    elif guard == "earlier":
        # A maybe-sent answer for a text handed over again since under another claim (its
        # request under way, or its outcome unknown too): that claim keeps it, but the
        # reaper is to ask the provider from this earlier request on, or it would look past
        # a text the patient may have and send it again.
        statement = statement.where(
            table.c.provider_sid.is_(None),
            table.c.status == SENDING,
            table.c.lease_owner.is_not(None),
            table.c.handed_at > sa.bindparam("v_handed_at", type_=table.c.handed_at.type),
        )
    elif guard == "closed":
        # A copy closed (cancelled, expired) while a request of it may be at the provider:
        # marked for the reaper to ask, unless the provider's SID was recorded meanwhile.
        statement = statement.where(
            table.c.status.in_(CLOSED_UNSENT), table.c.provider_sid.is_(None)
        )
    values: dict[str, Any] = {column: sa.bindparam(f"v_{column}") for column in columns}
    if guard == "closed" and "handed_at" in values:
        # Late answers of two requests of one copy, in either order: while it is still
        # marked (not asked about yet), the reaper asks from the earlier request on, or it
        # would look past a text the patient may have.
        handed = sa.bindparam("v_handed_at", type_=table.c.handed_at.type)
        values["handed_at"] = sa.case(
            (
                sa.and_(table.c.lease_owner.is_not(None), table.c.handed_at < handed),
                table.c.handed_at,
            ),
            else_=handed,
        )
    return statement.values(values)


def chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[list[int]]:
    """Split ids for IN lists of a bounded size."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def status_is(status: str) -> sa.ColumnElement[bool]:
    """`status = :status`, written so that no index on status can serve it.

    Beside a list of ids, a plain `status = 'pending'` tempts both planners (SQLite always,
    PostgreSQL before its first ANALYZE) to read every pending text through a status index
    and then look for the ids among them; this way they can only use the primary key.
    """
    return MESSAGES.c.status.concat("") == status


_SETTLE_CACHE: dict[tuple[Any, ...], sa.Update] = {}
# A hand-over guard's per-text values compared with the patient's, not written to the text.
HANDOVER_AS_READ = ("language", "timezone")


def _settle_statement(
    values: dict[str, Any],
    per_row: tuple[str, ...],
    *,
    lease_check: bool,
    handover: bool,
    unhanded: bool,
    source: str | None,
) -> sa.Update:
    """The guarded UPDATE for this shape of outcome, built once.

    Plain shared values become bind parameters (v_*); SQL expressions (attempts - 1) are
    kept as they are and must be module-level constants (their identity is in the cache
    key). When the texts have values of their own (per_row), the texts and those values
    come with them: arrays (r_*) on PostgreSQL ("arrays", each text's values picked at its
    id's position), one JSON array of rows (r_rows) joined by id on SQLite ("json"); one
    statement, whatever the group's size.
    Otherwise the texts come as an IN list (p_ids).
    """
    plain = tuple(sorted(k for k, v in values.items() if not isinstance(v, sa.ClauseElement)))
    exprs = tuple(sorted((k, id(v)) for k, v in values.items() if isinstance(v, sa.ClauseElement)))
    key = (plain, exprs, per_row if source else (), lease_check, handover, unhanded, source)
    statement = _SETTLE_CACHE.get(key)
    if statement is not None:
        return statement
    table = MESSAGES.c
    patients = cast(sa.Table, Patient.__table__).c
    # The hand-over guard's values as the text was read (not written): the patient's own.
    as_read = {k: patients[k] for k in per_row if handover and k in HANDOVER_AS_READ}
    assignments: dict[str, Any] = {k: sa.bindparam(f"v_{k}") for k in plain}
    read: dict[str, Any] = {}
    assignments.update({k: values[k] for k, _ in exprs})
    if source == "json":
        value: sa.ColumnClause[Any] = sa.literal_column("value")
        json_rows = (
            sa.select(
                *(
                    sa.func.json_extract(value, sa.literal(f"$[{n}]")).label(name)
                    for n, name in enumerate(("id", *per_row))
                )
            )
            .select_from(sa.func.json_each(sa.bindparam("r_rows", type_=sa.Text)))
            .subquery("r")
        )
        which: sa.ColumnElement[bool] = table.id == json_rows.c.id
        read = {k: json_rows.c[k] for k in per_row}
    elif source == "arrays":
        # The texts by primary key, each one's values picked from the arrays at its id's
        # position: no join, so no plan that depends on statistics. Joined to the arrays
        # unnested, PostgreSQL (whose statistics see almost no text in `sending`) read every
        # leased text once per row of the group: 60 ms for 200 texts in a busy pass.
        ids = sa.bindparam("r_id", type_=postgresql.ARRAY(sa.Integer()))
        position = sa.func.array_position(ids, table.id)
        which = table.id == sa.any_(ids)
        read = {k: _picked(k, (as_read[k] if k in as_read else table[k]).type, position)
                for k in per_row}  # fmt: skip
    else:
        which = table.id.in_(sa.bindparam("p_ids", expanding=True))
    assignments.update({k: v for k, v in read.items() if k not in as_read})
    if "handed_at" in per_row and "handed_at" in assignments:
        # A request's own instant (an answer that leaves its outcome unknown): the reaper
        # asks the provider from the earliest request that may be there, so an earlier one
        # already marked (one taken back while this claim's was under way) stays.
        handed = assignments["handed_at"]
        assignments["handed_at"] = sa.case(
            (sa.and_(table.handed_at.is_not(None), table.handed_at < handed), table.handed_at),
            else_=handed,
        )
    statement = sa.update(MESSAGES).where(
        which, status_is(SENDING), table.lease_owner == sa.bindparam("p_owner")
    )
    if lease_check or handover:
        statement = statement.where(table.lease_expires_at > sa.bindparam("p_now"))
    if unhanded:
        statement = statement.where(table.handed_at.is_(None))
    if handover:
        # What another process may have changed since the hand-over read the text: the
        # patient opted out, or a nurse changed the number, language or time zone the text
        # was rendered with (it goes back to the queue, to be rendered again); the
        # procedure was cancelled (its texts in `sending` are ours, so cancelling them is
        # left to this guard).
        procedures = cast(sa.Table, Procedure.__table__).c
        same = [column == read[k] for k, column in as_read.items()]
        if "to_phone" in read:
            same.append(patients.phone == read["to_phone"])
        patient_as_read = sa.exists().where(
            patients.id == table.patient_id, patients.opted_out_at.is_(None), *same
        )
        cancelled = sa.exists().where(
            procedures.id == table.procedure_id, procedures.status == "cancelled"
        )
        statement = statement.where(
            table.expires_at > sa.bindparam("p_latest"), patient_as_read, ~cancelled
        )
    statement = statement.values(assignments).returning(table.id)
    _SETTLE_CACHE[key] = statement
    return statement


def _picked(
    column: str, column_type: sa.types.TypeEngine[Any], position: sa.ColumnElement[int]
) -> sa.ColumnElement[Any]:
    """`(:r_<column>)[position]`: one text's value of `column` from the group's array.
    Instants travel as text and only the one picked is cast: timestamptz input is not
    immutable, so a cast of the whole array would run again for every row."""
    if isinstance(column_type, UTCDateTime):
        text = postgresql.ARRAY(sa.Text())
        picked = sa.type_coerce(Grouping(sa.bindparam(f"r_{column}", type_=text)), text)
        return sa.cast(picked[position], sa.DateTime(timezone=True))
    array = postgresql.ARRAY(column_type)
    return sa.type_coerce(Grouping(sa.bindparam(f"r_{column}", type_=array)), array)[position]


def settle_leased(
    session: so.Session,
    *,
    owner: str,
    values: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    lease_unexpired_at: datetime | None = None,
    handover_latest: datetime | None = None,
    unhanded: bool = False,
) -> set[int]:
    """Write an outcome to leased texts, only those still `sending` under `owner`'s lease.

    `values` are shared by every text; each of `rows` has the text's "id" and, optionally,
    values of its own (same keys in every row). One guarded UPDATE ... RETURNING id, with
    the texts' own values in it. With `lease_unexpired_at`, a lease that ran out by then no
    longer counts as ours; with `handover_latest` too (the hand-over guard), a text whose
    window closes by then, whose patient opted out or whose procedure was cancelled is not
    ours to send either, nor one whose patient's number (a row's "to_phone"), "language"
    or "timezone" (compared, not written: HANDOVER_AS_READ) changed since it was read.
    With `unhanded` (and always for the hand-over guard), only a text not yet handed over
    under this claim is written: a claim is handed over at most once.
    Returns the ids written.
    """
    if not rows:
        return set()
    values = values or {"lease_owner": owner}  # nothing shared: the guard alone
    per_row = tuple(sorted(k for k in rows[0] if k != "id"))
    source = ("arrays" if is_postgresql(session) else "json") if per_row else None
    statement = _settle_statement(
        values,
        per_row,
        lease_check=lease_unexpired_at is not None,
        handover=handover_latest is not None,
        unhanded=unhanded or handover_latest is not None,
        source=source,
    )
    params: dict[str, Any] = {
        f"v_{k}": v for k, v in values.items() if not isinstance(v, sa.ClauseElement)
    }
    params.update(p_owner=owner, p_now=lease_unexpired_at, p_latest=handover_latest)
    if source == "arrays":
        params["r_id"] = [row["id"] for row in rows]
        instant = _instant_formatter(session)
        params.update({f"r_{k}": [_group_value(row[k], instant) for row in rows] for k in per_row})
        return set(session.scalars(statement, params))
    if source == "json":
        instant = _instant_formatter(session)
        params["r_rows"] = json.dumps(
            [[row["id"], *(_group_value(row[k], instant) for k in per_row)] for row in rows]
        )
        return set(session.scalars(statement, params))
    ours: set[int] = set()
    for ids in chunks([row["id"] for row in rows]):
        ours.update(session.scalars(statement, {**params, "p_ids": ids}))
    return ours


def _group_value(value: Any, instant: Callable[[datetime], str]) -> Any:
    """A text's own value as sent in a group (JSON on SQLite, an array on PostgreSQL): an
    instant as text in the column's format, the rest as is."""
    return instant(value) if isinstance(value, datetime) else value


def write_by_id(
    session: so.Session, rows: Sequence[dict[str, Any]], *, guard: str | None = None
) -> int:
    """Write each row's values to its text by id (one executemany); return rows matched."""
    if not rows:
        return 0
    columns = tuple(sorted(k for k in rows[0] if k != "id"))
    params = [{"p_id": row["id"], **{f"v_{c}": row[c] for c in columns}} for row in rows]
    result = session.execute(_per_row_update(columns, guard=guard), params)
    return int(getattr(result, "rowcount", 0) or 0)


def add_events(session: so.Session, rows: list[dict[str, Any]]) -> None:
    """Append rows to the texts' history in one INSERT.

    The rows travel as one JSON array that the database unpacks: one short statement,
    parsed once, whatever the number of rows (a VALUES list would be a new statement each
    time), and no value processed one by one by the driver. psycopg dumps an array's
    elements in Python: six columns of 20,000 rows into a bare PostgreSQL table took
    12.9 µs a row as arrays (unnest) and 6.6 µs as one JSON array.
    """
    if not rows:
        return
    instant = _instant_formatter(session)
    packed = [
        [row["message_id"], instant(row["at"]), row["kind"], row["status"], row["detail"]]
        for row in rows
    ]
    session.execute(_json_events_insert(is_postgresql(session)), {"rows": json.dumps(packed)})


# procedure id, patient id, step, due at, expires at, status
PlannedRow = tuple[int, int, str, datetime, datetime, str]


def insert_planned(
    session: so.Session, texts: Sequence[PlannedRow], now: datetime
) -> tuple[int, int]:
    """Insert planned texts, each with its "planned" (or "expired") event, skipping a
    (procedure, step) already planned; return how many went in pending and how many expired.

    The rows travel as one JSON array the database unpacks (as `add_events`' do), so no
    value is processed one by one on the way: two statements for any number of texts. The
    instants go as text, formatted once per distinct instant by the column type's own
    processor.
    """
    if not texts:
        return 0, 0
    postgres = is_postgresql(session)
    instant = _instant_formatter(session)
    rows = json.dumps(
        [(p, pt, s, instant(due), instant(exp), st) for p, pt, s, due, exp, st in texts]
    )
    inserted = session.execute(_planned_insert(postgres), {"rows": rows, "now": now}).all()
    if not inserted:
        return 0, 0
    session.execute(
        _planned_events(postgres),
        {"rows": json.dumps([tuple(row) for row in inserted]), "now": now,
         **_PLANNED_EVENT_PARAMS},
    )  # fmt: skip
    expired = sum(1 for row in inserted if row[1] == EXPIRED)
    return len(inserted) - expired, expired


_PLANNED_EVENT_PARAMS = {
    "expired": EXPIRED, "pending": PENDING, "expired_kind": "expired", "pending_kind": "planned",
    "expired_detail": "window had passed when planned",
}  # fmt: skip


def _instant_formatter(session: so.Session) -> Callable[[datetime], str]:
    """Format instants as the column type stores them on this database (SQLite: its text
    format; PostgreSQL: ISO 8601 with the offset), once per distinct instant."""
    dialect = session.get_bind().dialect
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    postgres = dialect.name == "postgresql"
    seen: dict[datetime, str] = {}

    def instant(value: datetime) -> str:
        text = seen.get(value)
        if text is None:
            # The type's processor refuses a naive instant, as every write does.
            processed = process(value) if process is not None else as_utc(value)
            text = processed.isoformat() if postgres else str(processed)
            seen[value] = text
        return text

    return instant


@lru_cache(maxsize=2)
def _planned_insert(postgres: bool) -> sa.TextClause:
    columns = (
        "procedure_id, patient_id, step, due_at, expires_at, status, attempts, created_at,"
        " updated_at"
    )
    casts = ("integer", "integer", None, "timestamptz", "timestamptz", None)
    fields = ", ".join(_json_field(postgres, n, c) for n, c in enumerate(casts))
    # WHERE true: SQLite's parser needs it before an upsert's ON CONFLICT.
    return sa.text(
        f"INSERT INTO messages ({columns}) SELECT {fields}, 0, :now, :now"  # noqa: S608
        f" FROM {_JSON_ROWS[postgres]} WHERE true"
        " ON CONFLICT (procedure_id, step) DO NOTHING RETURNING id, status"
    ).bindparams(sa.bindparam("now", type_=UTCDateTime()))


@lru_cache(maxsize=2)
def _planned_events(postgres: bool) -> sa.TextClause:
    fields = f"{_json_field(postgres, 0, 'integer')} AS id, {_json_field(postgres, 1)} AS status"
    # Two constant sources, no input in the SQL.
    return sa.text(
        "INSERT INTO message_events (message_id, at, kind, status, detail)"  # noqa: S608
        " SELECT r.id, :now,"
        " CASE WHEN r.status = :expired THEN :expired_kind ELSE :pending_kind END,"
        " r.status, CASE WHEN r.status = :expired THEN :expired_detail END"
        f" FROM (SELECT {fields} FROM {_JSON_ROWS[postgres]}) AS r"
    ).bindparams(sa.bindparam("now", type_=UTCDateTime()))


# How the reaper's event details begin when the provider does not have a text it asked
# about: what re-planning reads as "that request did not reach the patient".
NOT_AT_PROVIDER = "not at provider"
FOUND_AT_PROVIDER = "found at provider"  # the reaper found the request's copy and recorded it


def event_row(
    message_id: int, now: datetime, kind: str, status: str | None, detail: str | None = None
) -> dict[str, Any]:
    """Build one history row for add_events."""
    return {"message_id": message_id, "at": now, "kind": kind, "status": status, "detail": detail}


def insert_ignoring_duplicates(session: so.Session) -> Any:
    """An INSERT of texts that skips a (procedure, step) already planned."""
    dialect = postgresql if is_postgresql(session) else sqlite
    return dialect.insert(Message).on_conflict_do_nothing(index_elements=["procedure_id", "step"])
