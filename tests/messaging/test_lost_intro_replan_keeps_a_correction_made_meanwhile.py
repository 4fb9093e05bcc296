"""The planner job gives a lost introduction to another text (`replan_lost_intros`) while a
nurse corrects the procedure's completion time: the texts must follow the correction.

On PostgreSQL the job locks the procedure and patient rows it re-plans (SKIP LOCKED: one a
nurse is changing is left for the next run). On SQLite it reads them with no lock and takes
the database's write lock only afterwards, inside `replan_procedure`; a correction
committed in between is re-planned over from the row as the job read it: the texts go
back to the old completion time while the procedure keeps the new one. The blood-thinner
restart then goes out before 48 hours after the procedure (README: "never at 42 h"),
saying a time two hours after the moment it arrives.

The nurse's correction runs on its own thread, started right after the job's read of the
procedure (at `maybe_at_provider`, its next statement). Once the job re-reads (or locks)
what it re-plans from, the correction either comes first and is seen, or waits for the
job's commit (the thread is given two seconds) and re-plans after it: either way the
texts follow the corrected time.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

import followup.messaging.lost_intros as lost_intros_module
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import Message
from followup.messaging.tick import run_tick
from followup.patients.edits import change_completion_time
from followup.patients.models import Procedure
from tests.messaging.helpers import Enroll
from tests.patients.test_booked import ny
from tests.patients.test_intro import StepTransport


def test_a_lost_intros_replan_does_not_undo_a_completion_time_corrected_meanwhile(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Enrolled at 20:59:59 with the end typed as 18:30 (it was 20:30), on warfarin: the
    # no-driving text carries the intro and expires unsent at 21:00 (quiet hours).
    transport = StepTransport()
    clock.set(ny("2026-03-12T20:59:59"))
    result = enroll(completed_at="2026-03-12T18:30", blood_thinner="warfarin")
    run_tick(session=session, transport=transport, care=care, clock=clock, owner="test")
    session.commit()
    procedure_id = result.procedure.id
    at_run = ny("2026-03-12T21:01")

    corrected: list[str] = []

    def correct() -> None:
        with session_factory() as nurse:
            change_completion_time(
                session=nurse, procedure_id=procedure_id, completed_at="2026-03-12T20:30",
                care=care, now=at_run, actor="nurse@example.org",
            )  # fmt: skip
            nurse.commit()
        corrected.append("committed")

    nurse_thread = threading.Thread(target=correct, name="nurse")
    real = lost_intros_module.maybe_at_provider

    def after_the_jobs_read(session: so.Session, ids: list[int]) -> Any:
        if ids and not nurse_thread.is_alive() and not corrected:
            nurse_thread.start()
            nurse_thread.join(timeout=2.0)  # a job holding the rows: it goes on first
        return real(session, ids)

    monkeypatch.setattr(lost_intros_module, "maybe_at_provider", after_the_jobs_read)
    lost_intros_module.replan_lost_intros(session=session, care=care, now=at_run)
    session.commit()
    nurse_thread.join(timeout=60.0)
    assert corrected == ["committed"]

    session.expire_all()
    procedure = session.get(Procedure, procedure_id)
    assert procedure is not None and procedure.completed_at == ny("2026-03-12T20:30")
    restart = session.scalars(
        sa.select(Message).where(Message.step == "blood-thinner-restart")
    ).one()
    assert restart.status == "pending"
    earliest = procedure.completed_at + timedelta(hours=48)
    assert restart.due_at >= earliest, (
        f"the restart is due {restart.due_at:%Y-%m-%d %H:%M} UTC, "
        f"{earliest - restart.due_at} before 48 h after the recorded end "
        f"{procedure.completed_at}: planned from the end the job read before the correction"
    )
