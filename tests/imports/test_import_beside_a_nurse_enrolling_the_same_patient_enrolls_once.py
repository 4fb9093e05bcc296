"""An import running while a nurse enrolls the same patient by hand (the same mobile and
the same completion time) must leave one enrollment: two would text the patient every
aftercare text twice. The duplicate rule (same phone and time) is checked by reading
what is stored, then inserting; nothing stops the other request from committing the
same patient in between (no constraint, no lock), on SQLite or on PostgreSQL.

Each test forces the interleaving: right after one side has read "nothing stored for
this phone and time", the other side enrolls the patient in its own thread and session.
A fix that makes that side wait (a lock taken before the check) passes too: the thread
is waited for only a few seconds before the first side goes on, then joined at the end.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.messaging.dispatch import dispatch_due
from followup.messaging.models import Message
from followup.patients import bulk
from followup.patients import service as patient_service
from followup.patients.models import Patient, Procedure
from followup.patients.service import enroll_patient
from tests.conftest import enrollment_form
from tests.fakes.transport import ScriptedTransport
from tests.imports.conftest import Importer
from tests.imports.helpers import DONE, csv_text

PHONE = "+12025550143"  # DONE's mobile, and enrollment_form's
WAIT_FOR_THE_OTHER = 5.0  # seconds: long enough for an unblocked enrollment to commit


def _nurse_enrolls(
    session_factory: so.sessionmaker[so.Session], care: CareContext, clock: FakeClock
) -> None:
    """The nurse's request: the same patient as DONE, typed by hand (no external id)."""
    with session_factory() as session:
        enroll_patient(
            session=session,
            form=enrollment_form(blood_thinner="Eliquis"),
            care=care,
            region="US",
            now=clock.now(),
            actor="nurse@example.org",
        )
        session.commit()


def _in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_FOR_THE_OTHER)
    return thread, errors


def _enrollments(session: so.Session) -> list[tuple[int, str]]:
    session.expire_all()
    return list(
        session.execute(
            sa.select(Procedure.id, Procedure.status)
            .join(Patient, Patient.id == Procedure.patient_id)
            .where(Patient.phone == PHONE, Procedure.status != "cancelled")
        ).all()
    )


def _live_texts_by_step(session: so.Session) -> dict[str, int]:
    session.expire_all()
    return dict(
        session.execute(
            sa.select(Message.step, sa.func.count())
            .join(Patient, Patient.id == Message.patient_id)
            .where(Patient.phone == PHONE, Message.status.not_in(("cancelled", "expired")))
            .group_by(Message.step)
        ).all()
    )


def _sent_now(
    session: so.Session, transport: ScriptedTransport, care: CareContext, clock: FakeClock
) -> list[str]:
    """One dispatch pass at the clock's instant (15:00, the no-driving text is due): the
    steps that went to the patient's number."""
    session.expire_all()
    dispatch_due(session=session, transport=transport, care=care, clock=clock, owner="test")
    return [sms.step for sms in transport.sent if sms.to == PHONE]


def test_an_import_beside_a_nurse_enrolling_the_same_patient_enrolls_once(
    run_import: Importer,
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = bulk.stored_for
    nurse: list[tuple[threading.Thread, list[BaseException]]] = []

    def nurse_enrolls_after_the_check(s: so.Session, enrollments: Any) -> Any:
        stored = real(s, enrollments)
        if not nurse:  # the import's first check: nothing stored for this phone yet
            nurse.append(_in_thread(lambda: _nurse_enrolls(session_factory, care, clock)))
        return stored

    monkeypatch.setattr(bulk, "stored_for", nurse_enrolls_after_the_check)

    result = run_import({"p.csv": csv_text(DONE)})

    thread, errors = nurse[0]
    thread.join(60)
    assert not thread.is_alive()
    # The nurse's enrollment either went first (the import then finds it) or waited and
    # was refused as a duplicate: never a second enrollment beside the import's.
    assert all(isinstance(exc, ValidationError) for exc in errors), errors
    enrollments = _enrollments(session)
    planned = _live_texts_by_step(session)
    sent = _sent_now(session, transport, care, clock)
    assert sent == ["no-driving"], (
        f"the patient's phone got {sent}: the same patient (same mobile, same completion "
        f"time) was enrolled {len(enrollments)} times (import outcome "
        f"{result.rows[0].outcome!r}, nurse {'refused' if errors else 'enrolled'}); texts "
        f"planned per step: {planned}"
    )
    assert len(enrollments) == 1
    assert set(planned.values()) == {1}


def test_a_nurse_enrolling_beside_an_import_of_the_same_patient_enrolls_once(
    run_import: Importer,
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = patient_service.stored_for
    importer: list[tuple[threading.Thread, list[BaseException]]] = []

    def import_runs_after_the_check(s: so.Session, enrollments: Any) -> Any:
        stored = real(s, enrollments)
        if not importer:  # the nurse's check: nothing stored for this phone yet
            importer.append(_in_thread(lambda: run_import({"p.csv": csv_text(DONE)})))
        return stored

    monkeypatch.setattr(patient_service, "stored_for", import_runs_after_the_check)

    refused = None
    try:
        enroll_patient(
            session=session,
            form=enrollment_form(blood_thinner="Eliquis"),
            care=care,
            region="US",
            now=clock.now(),
            actor="nurse@example.org",
        )
        session.commit()
    except ValidationError as exc:  # a fixed version may refuse it: the import went first
        session.rollback()
        refused = exc

    thread, errors = importer[0]
    thread.join(60)
    assert not thread.is_alive()
    assert errors == []
    enrollments = _enrollments(session)
    planned = _live_texts_by_step(session)
    sent = _sent_now(session, transport, care, clock)
    assert sent == ["no-driving"], (
        f"the patient's phone got {sent}: the same patient (same mobile, same completion "
        f"time) was enrolled {len(enrollments)} times (nurse "
        f"{'refused' if refused else 'enrolled'}, import planned); texts planned per step: "
        f"{planned}"
    )
    assert len(enrollments) == 1
    assert set(planned.values()) == {1}
