"""A nurse's edit that PostgreSQL picks as a deadlock's victim is run again, not a 500.

Re-planning locks a procedure's texts in id order; a dispatcher's turn writes the rows of
its lists in their own order, over several statements. With two texts of one procedure in
one turn and a nurse's edit at that instant, the two wait for each other and PostgreSQL
rolls one back after `deadlock_timeout`. Here the turn is played by a second connection
that holds the procedure's last text and then asks for its first, once the nurse's request
waits: a real deadlock, whose victim is the nurse's transaction (it waited first, so its
check runs first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.audit.models import AuditEvent
from followup.db import commit_with_retry
from followup.errors import ValidationError
from followup.messaging.models import Message, MessageEvent
from followup.patients.models import Procedure
from followup.patients.validation import EnrollmentResult
from tests.web.conftest import NURSE, Browser

Enroll = Callable[..., EnrollmentResult]


@pytest.fixture
def nurse(signed_in: Callable[[str], Browser]) -> Browser:
    return signed_in(NURSE)


def wait_for_lock_wait(conn: sa.Connection, timeout: float = 10.0) -> None:
    """Return once another backend waits for a row lock (the nurse's request)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid() AND datname = current_database()"
            )
        ).scalar_one()
        conn.rollback()  # the activity view is a snapshot taken once per transaction
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the nurse's request never waited for the held text")


def test_a_completion_edit_chosen_as_a_deadlock_victim_is_run_again(
    nurse: Browser,
    enroll: Enroll,
    session: so.Session,
    engine: sa.Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks and deadlock detection are PostgreSQL's; SQLite has one writer")
    result = enroll(blood_thinner="Eliquis")
    patient_id, procedure_id = result.patient.id, result.procedure.id
    ids = sorted(session.scalars(sa.select(Message.id).where(Message.procedure_id == procedure_id)))
    first, last = ids[0], ids[-1]
    turn_error: list[BaseException] = []

    def dispatcher_turn() -> None:
        # Its own connection: holds the last text, then (once the nurse waits for it)
        # asks for the first, which the nurse's re-planning already holds.
        try:
            with engine.connect() as conn, engine.connect() as watcher:
                conn.execute(sa.text("SET deadlock_timeout = '30s'"))  # the nurse checks first
                conn.execute(
                    sa.text("SELECT id FROM messages WHERE id = :id FOR UPDATE"), {"id": last}
                )
                held.set()
                wait_for_lock_wait(watcher)
                conn.execute(
                    sa.text("UPDATE messages SET updated_at = updated_at WHERE id = :id"),
                    {"id": first},
                )
                conn.commit()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            turn_error.append(exc)
            held.set()

    held = threading.Event()
    turn = threading.Thread(target=dispatcher_turn)
    turn.start()
    assert held.wait(10)
    audits_before = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    with caplog.at_level(logging.WARNING, logger="followup.db"):
        response = nurse.post(
            f"/patients/{patient_id}/completion",
            {"procedure_id": procedure_id, "completed_at": "2026-03-06T11:00", "action": "confirm"},
        )
    turn.join(30)
    assert not turn.is_alive() and not turn_error, turn_error

    assert response.status_code == 302, response.get_data(as_text=True)
    # The deadlock did happen, and the nurse's transaction was its victim and ran again.
    assert any("40P01" in r.getMessage() for r in caplog.records), caplog.text
    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None
    assert procedure.completed_at == datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    # Once: one audit entry, one re-plan event per re-planned text (none from the victim).
    audits = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    assert audits == (audits_before or 0) + 1
    replanned = session.execute(
        sa.select(MessageEvent.message_id, sa.func.count())
        .where(MessageEvent.kind == "replanned", MessageEvent.message_id.in_(ids))
        .group_by(MessageEvent.message_id)
    ).all()
    assert replanned and all(count == 1 for _, count in replanned)


def test_other_errors_are_not_run_again(session: so.Session) -> None:
    runs: list[int] = []

    def work() -> None:
        runs.append(1)
        session.execute(sa.update(Procedure).values(kind="kyphoplasty"))
        raise ValidationError("completed_at", "is in the future")

    with pytest.raises(ValidationError):
        commit_with_retry(session, work)
    assert runs == [1]
    assert not session.in_transaction()
