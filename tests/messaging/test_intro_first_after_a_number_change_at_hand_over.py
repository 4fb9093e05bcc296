"""A nurse changes the patient's number between the hand-over's read of the welcome (the
text that introduces the program) and its guard, while the patient's other texts due with
it wait behind it in the same group.

The guard refuses the welcome (rendered for the old number) and sends it back to the
queue, to be rendered again. The texts parked behind it must still reach the patient after
the welcome: README "In order for each patient": "the text that carries the introduction
goes first". A refusal by the guard is no answer from Twilio (the README's one exception,
"a text waits for the answer, not for success", is a welcome Twilio refused for now).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy.orm as so

import followup.messaging.turns as turns_module
from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.claims import claim_due
from followup.messaging.dispatch import Dispatcher
from followup.messaging.reports import DispatchReport
from followup.messaging.turns import DispatchPass
from followup.patients.edits import change_phone
from tests.messaging.helpers import Enroll, dispatch
from tests.messaging.test_one_per_patient import HELP, THREE, OnePatient, three_due_at_once

NEW_NUMBER = "(202) 555-0199"
NEW_E164 = "+12025550199"


def test_the_welcome_refused_for_a_new_number_still_reaches_the_patient_first(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = three_due_at_once(clock, enroll)  # welcome, restart, warning signs: due now
    render = turns_module.render_message
    changed: list[bool] = []

    def render_while_the_nurse_changes_the_number(*args: Any, **kwargs: Any) -> str:
        if not changed:  # the welcome (intro first) is read; its guard is still to come
            changed.append(True)
            change_phone(
                session=other_session,
                patient_id=result.patient.id,
                phone=NEW_NUMBER,
                region="US",
                now=clock.now(),
                actor="nurse@example.org",
            )
            other_session.commit()
        return render(*args, **kwargs)

    monkeypatch.setattr(turns_module, "render_message", render_while_the_nurse_changes_the_number)
    # Claimed in a turn of its own (on SQLite the nurse's write then waits for no lock).
    ids = claim_due(session=session, now=clock.now(), owner="w1", limit=10)
    session.commit()
    assert len(ids) == 3
    transport = OnePatient(latency=0.0)
    # One slot (DISPATCH_CONCURRENCY=1; with more, the same in a busy pass whose queue is
    # full): the welcome goes alone, its patient's other texts next in the queue. A pass
    # looks for more texts only while its queue is short, so the refused welcome is not
    # claimed back before them.
    with Dispatcher(
        transport=transport, care=care, clock=clock, owner="w1", concurrency=1
    ) as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        turn.ready.extend(ids)
        turn.report.claimed += len(ids)
        turn.run()
    dispatch(session, transport, care, clock.now())  # whatever went back to the queue
    to_patient = [sms for sms in transport.sent if sms.to == NEW_E164]
    assert sorted(sms.step for sms in to_patient) == sorted(THREE), transport.steps_sent()
    first = to_patient[0]
    assert (first.step, HELP in first.body) == ("welcome", True), (
        f"the patient's first text was {first.step!r}, without the introduction; "
        f"order at Twilio: {[sms.step for sms in to_patient]}"
    )
