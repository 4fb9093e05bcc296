"""A patient texts an opt-out word while a nurse (or an import chunk) is enrolling her
again, for her next procedure (a second fracture, booked next week): the enrollment has
checked "this number did not reply STOP" and inserted the new patient row, not yet
committed, when the STOP's request reads the patients with her number. It opts out the
ones it sees (the old enrollment only) and commits; the enrollment then commits a patient
who is not opted out, with a welcome and pre-procedure texts pending. The patient said
"PARAR" (a Spanish opt-out word the carrier does not block, see replies.py) and keeps
getting texts.

446350a serializes enrollments of one phone (`lock_phones`) but a STOP takes no part in
it, on PostgreSQL (advisory lock) or SQLite (the STOP reads the patients before its first
write takes the write lock).

Expected: every patient with the number is opted out afterwards and none has a text
pending (or the enrollment is refused as an opted-out number). A fix that makes the STOP
wait for the enrollment passes: the STOP is waited for a few seconds only before the
enrollment commits, and joined at the end.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.care.timing import parse_clinic_hours
from followup.clock import FakeClock
from followup.messaging.models import PENDING, Message
from followup.messaging.replies import record_inbound
from followup.patients.models import Patient
from followup.patients.service import enroll_patient
from tests.conftest import enrollment_form
from tests.messaging.helpers import Enroll

PHONE = "+12025550143"  # enrollment_form's
WAIT_FOR_THE_STOP = 5.0  # seconds: long enough for an unblocked STOP to read the patients


def test_an_opt_out_during_a_second_enrollment_opts_out_the_new_patient_row(
    session: so.Session,
    engine: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
) -> None:
    enroll(language="es")  # her first procedure, done today
    clock.advance(timedelta(days=2))
    storing = threading.Event()
    errors: list[BaseException] = []

    def mark(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO INBOUND_MESSAGES"):
            storing.set()

    def stop() -> None:
        try:
            with session_factory() as other:
                record_inbound(
                    session=other,
                    provider_sid="SM" + "5" * 32,
                    from_phone=PHONE,
                    body="PARAR",
                    opt_out_type=None,
                    care=care,
                    clinic_hours=parse_clinic_hours("Mon-Fri 08:00-17:00"),
                    clinic_zone="America/New_York",
                    now=clock.now(),
                )
                other.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    form: Any = enrollment_form(
        language="es", completed_at="", scheduled_at="2026-03-17T09:00", blood_thinner=None
    )
    with session_factory() as nurse:
        enroll_patient(
            session=nurse, form=form, care=care, region="US", now=clock.now(), actor="nurse"
        )
        # The nurse's request has enrolled her and is about to commit: the STOP comes in.
        sa.event.listen(engine, "before_cursor_execute", mark)
        thread = threading.Thread(target=stop, daemon=True)
        try:
            thread.start()
            storing.wait(WAIT_FOR_THE_STOP)
            nurse.commit()
            thread.join(40)
            assert not thread.is_alive()
        finally:
            sa.event.remove(engine, "before_cursor_execute", mark)
    assert not errors, errors

    session.expire_all()
    rows = session.execute(
        sa.select(Patient.id, Patient.opted_out_at).where(Patient.phone == PHONE)
    ).all()
    pending = session.execute(
        sa.select(Message.patient_id, Message.step)
        .join(Patient, Patient.id == Message.patient_id)
        .where(Patient.phone == PHONE, Message.status == PENDING)
    ).all()
    assert all(opted_out is not None for _, opted_out in rows) and not pending, (
        f"she replied PARAR while being enrolled again; afterwards her patient rows "
        f"(id, opted_out_at) are {[tuple(r) for r in rows]} and texts still pending "
        f"(patient, step): {[tuple(p) for p in pending]}"
    )
