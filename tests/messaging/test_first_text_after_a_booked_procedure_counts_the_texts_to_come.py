"""The first text of a booked patient whose texts before the procedure never went out (booked
the evening before an early procedure: the welcome and the day-before text wait for the end
of quiet hours, past the booked time, and expire) introduces the program once the procedure
is finished: "You will get about N texts". N must be the texts the patient will get, the
ones after the procedure, not those plus the texts before it that can no longer come."""

from __future__ import annotations

import re

import pytest
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.patients.edits import complete_procedure
from tests.fakes.transport import ScriptedTransport
from tests.patients.test_booked import Enroll, ny, plan, send_due


@pytest.mark.parametrize(
    ("blood_thinner", "stop_on"),
    [(None, None), ("warfarin", "2026-03-04")],
    ids=["no-blood-thinner", "warfarin"],
)
def test_the_intro_after_a_booked_procedure_counts_only_the_texts_still_to_come(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    transport: ScriptedTransport,
    blood_thinner: str | None,
    stop_on: str | None,
) -> None:
    # Booked at 22:30 on Wednesday for 07:00 on Thursday: nothing before it can go out.
    clock.set(ny("2026-03-04T22:30"))
    result = enroll(
        completed_at="",
        scheduled_at="2026-03-05T07:00",
        blood_thinner=blood_thinner,
        stop_blood_thinner_on=stop_on,
    )
    before = plan(session, result.procedure.id)
    assert before and {status for _, status in before.values()} == {"expired"}

    # Finished at 07:50, recorded by the nurse at 08:15.
    clock.set(ny("2026-03-05T08:15"))
    complete_procedure(
        session=session,
        patient_id=result.patient.id,
        procedure_id=result.procedure.id,
        completed_at="2026-03-05T07:50",
        care=care,
        now=clock.now(),
        actor="nurse@example.org",
    )
    session.commit()

    # Tick through the week after it: every text the patient gets.
    for at in (
        "2026-03-05T08:15",
        "2026-03-06T10:00",
        "2026-03-07T08:00",
        "2026-03-08T10:00",
        "2026-03-12T10:00",
    ):
        send_due(session, transport, care, ny(at))
    received = [sms.step for sms in transport.sent]
    assert received[0] == "no-driving"
    first = transport.sent[0].body
    assert "Reply HELP for help or STOP to end them." in first
    stated = re.search(r"You will get about (\d+) texts", first)
    assert stated is not None, first
    assert int(stated.group(1)) == len(received), (
        f"the first text promises about {stated.group(1)} texts, the patient gets "
        f"{len(received)} ({', '.join(received)}): {first!r}"
    )
