"""Review of daa07f0..b85ab44: defects found, each shown by a test that failed before its fix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging import views
from followup.messaging.replies import record_inbound
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.messaging.conftest import PHONE


class _Deadlock(Exception):
    """What psycopg raises for a deadlock's victim: SQLSTATE 40P01."""

    sqlstate = "40P01"


def _opted_out(session: so.Session, patient_id: int) -> bool:
    session.expire_all()
    patient = session.get(Patient, patient_id)
    assert patient is not None
    return patient.opted_out_at is not None


# --- 1. a retried STOP is stamped with the retry's time and undoes a later START ----------


def test_a_stop_whose_request_is_retried_after_a_deadlock_does_not_undo_the_later_start(
    reply: Callable[..., tuple[int, str]],
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    enrolled: EnrollmentResult,
    twilio_runtime: Runtime,
    care: CareContext,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The patient texts STOP, then START a second later. The STOP's request is picked as a
    # deadlock's victim (it waits for texts a dispatcher holds: views.inbound retries it for
    # exactly that); the START's request, which came in meanwhile, is recorded while the
    # STOP's is rolled back; then the STOP's request runs again. The patient's last word
    # was START: it must stand, as it does at Twilio ("the later reply wins").
    real = views.record_inbound
    calls: list[dict[str, Any]] = []

    def first_attempt_is_a_deadlocks_victim(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            clock.advance(timedelta(seconds=1))  # the START arrives a second later
            with session_factory() as other:
                record_inbound(
                    session=other,
                    provider_sid="SM" + "2" * 32,
                    from_phone=PHONE,
                    body="START",
                    opt_out_type=None,
                    care=care,
                    clinic_hours=twilio_runtime.settings.clinic_hours,
                    clinic_zone=twilio_runtime.settings.default_timezone,
                    now=clock.now(),
                )
                other.commit()
            clock.advance(timedelta(seconds=1))
            raise sa.exc.OperationalError("UPDATE messages ...", {}, _Deadlock())
        return real(**kwargs)

    monkeypatch.setattr(views, "record_inbound", first_attempt_is_a_deadlocks_victim)
    status, _ = reply("STOP")
    assert status == 200
    assert len(calls) == 2  # retried once
    assert not _opted_out(session, enrolled.patient.id), (
        "the STOP, received before the START, was recorded at its retry's time and won"
    )
