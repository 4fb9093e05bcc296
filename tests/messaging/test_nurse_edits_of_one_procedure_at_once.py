"""Two changes to one procedure at once (two nurses, or a nurse and the `complete` /
`reschedule` command): the one committed first must not be undone by the other.

A completion and a reschedule read the procedure, check its status and plan from it, then
write it by id. Another change committed between that read and that write (a cancellation,
a completion) is overwritten: a cancelled procedure becomes completed again and its
aftercare texts go out, or a finished procedure's aftercare texts are all cancelled by a
reschedule planned from the booking it no longer has.

The other change runs on its own thread and session, started at the point where the
first change has read the procedure and is about to re-plan (`replan_procedure`). Once
the procedure is locked before it is read, the other change waits for the first to commit
(the thread is given two seconds, then the first goes on and the thread finishes after
it): either order is then a valid history, and each test's last word holds for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

import followup.patients.edits as edits
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.errors import ValidationError
from followup.messaging.models import Message
from followup.patients.models import Procedure
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, dispatch
from tests.patients.test_booked import BOOKED, ENROLLED, ny

AFTER = ("no-driving", "soreness", "blood-thinner-restart", "warning-signs", "pain-check")


class OtherChange:
    """`change` (its own session, committed) run on another thread when the change under
    test reaches its re-plan; `outcome` says what became of it ("committed" or refused)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
        self.outcome: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(change,), name="other-nurse")
        real = edits.replan_procedure

        def racing(**kwargs: Any) -> Any:
            if not self.thread.is_alive() and not self.outcome:
                self.thread.start()
                self.thread.join(timeout=2.0)  # a fixed edit holds the procedure: go on
            return real(**kwargs)

        monkeypatch.setattr(edits, "replan_procedure", racing)

    def _run(self, change: Callable[[], None]) -> None:
        try:
            change()
            self.outcome.append("committed")
        except ValidationError as exc:
            self.outcome.append(f"refused: {exc}")

    def finished(self) -> list[str]:
        """Wait for it to end; what became of it."""
        self.thread.join(timeout=60.0)
        assert not self.thread.is_alive(), "the other nurse's change never finished"
        return self.outcome


def _texts(session: so.Session, procedure_id: int) -> dict[str, str]:
    session.expire_all()
    return {
        m.step: m.status
        for m in session.scalars(sa.select(Message).where(Message.procedure_id == procedure_id))
    }


def test_a_procedure_cancelled_while_another_nurse_marks_it_finished_gets_no_aftercare(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Booked for Thursday 09:00. At 10:00 one nurse records it finished at 09:45 while
    # another cancels it (the patient was sent home: it never took place).
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    patient_id, procedure_id = result.patient.id, result.procedure.id
    clock.set(ny("2026-03-12T10:00"))

    def cancel() -> None:
        with session_factory() as nurse:
            edits.cancel_patient_procedure(
                session=nurse, patient_id=patient_id, procedure_id=procedure_id,
                now=clock.now(), actor="nurse-b@example.org",
            )  # fmt: skip
            nurse.commit()

    other = OtherChange(monkeypatch, cancel)
    try:
        edits.complete_procedure(
            session=session, patient_id=patient_id, procedure_id=procedure_id,
            completed_at="2026-03-12T09:45", care=care, now=clock.now(),
            actor="nurse-a@example.org",
        )  # fmt: skip
        session.commit()
    except ValidationError:  # the cancellation came first and was seen: refused
        session.rollback()
    assert other.finished() == ["committed"]

    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None
    texts = _texts(session, procedure_id)
    dispatch(session, transport, care, clock.now())
    # The cancellation was committed and told the nurse its texts were cancelled: the
    # procedure stays cancelled and the patient gets no aftercare for it.
    assert (procedure.status, transport.steps_sent()) == ("cancelled", []), (
        f"procedure {procedure.status} after a committed cancellation; texts {texts}; "
        f"sent to the patient: {transport.steps_sent()}"
    )


def test_a_procedure_finished_while_another_nurse_reschedules_it_keeps_its_aftercare(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Booked for Thursday 12th with warfarin. On Thursday 5th at 12:00 it was done early
    # (finished 11:00) and one nurse records it, while another moves the booking (the
    # surgeon's office had called to push it a week; the early slot came up meanwhile).
    clock.set(ENROLLED)
    result = enroll(**BOOKED)
    patient_id, procedure_id = result.patient.id, result.procedure.id
    clock.set(ny("2026-03-05T12:00"))

    def complete() -> None:
        with session_factory() as nurse:
            edits.complete_procedure(
                session=nurse, patient_id=patient_id, procedure_id=procedure_id,
                completed_at="2026-03-05T11:00", care=care, now=clock.now(),
                actor="nurse-b@example.org",
            )  # fmt: skip
            nurse.commit()

    other = OtherChange(monkeypatch, complete)
    try:
        edits.reschedule_procedure(
            session=session, patient_id=patient_id, procedure_id=procedure_id,
            scheduled_at="2026-03-19T13:00", care=care, now=clock.now(),
            actor="nurse-a@example.org",
        )  # fmt: skip
        session.commit()
    except ValidationError:  # the completion came first and was seen: nothing to move
        session.rollback()
    assert other.finished() == ["committed"]

    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None and procedure.status == "completed"
    texts = _texts(session, procedure_id)
    # Finished at 11:00 on a blood thinner: every text after it is still to come.
    assert {step: texts.get(step) for step in AFTER} == dict.fromkeys(AFTER, "pending"), (
        f"the finished procedure's aftercare texts: {texts}"
    )
    dispatch(session, transport, care, clock.now())
    assert transport.steps_sent() == ["no-driving"]
