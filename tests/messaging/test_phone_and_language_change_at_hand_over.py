"""A nurse changes the patient's number or language after the dispatcher has read a claimed
text and before its hand-over guard: the change has committed before the guard, so the
text must not reach the provider with the old number or in the old language.
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
from followup.patients.edits import change_language, change_phone
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import Enroll, at, dispatch, messages

NEW_NUMBER = "(202) 555-0199"
NEW_E164 = "+12025550199"


def _hand_over_with_change_before_guard(
    session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    monkeypatch: pytest.MonkeyPatch,
    change: Any,
) -> list[Any]:
    render = turns_module.render_message
    done: list[bool] = []

    def render_then_change(*args: Any, **kwargs: Any) -> str:
        if not done:  # the text is read; its guard is still to come
            done.append(True)
            change()
        return render(*args, **kwargs)

    monkeypatch.setattr(turns_module, "render_message", render_then_change)
    ids = claim_due(session=session, now=clock.now(), owner="w1", limit=10)
    session.commit()
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        turn = DispatchPass(dispatcher, session, DispatchReport(), None)
        started = turn.hand_over(ids)
        session.commit()
        turn.start_calls(started)
        answers = [turn.answers.get(timeout=10) for _ in started]
        turn.outcomes.record(answers)  # type: ignore[arg-type]
        session.commit()
    return started


def test_a_number_changed_before_the_guard_is_the_one_texted(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")  # the no-driving text is due now
    old_number = result.patient.phone

    def nurse_changes_the_number() -> None:
        change_phone(
            session=other_session,
            patient_id=result.patient.id,
            phone=NEW_NUMBER,
            region="US",
            now=clock.now(),
            actor="nurse@example.org",
        )
        other_session.commit()

    _hand_over_with_change_before_guard(
        session, care, clock, transport, monkeypatch, nurse_changes_the_number
    )
    # Refused by the guard, it went back to the queue: the next pass renders it again.
    assert messages(session)["no-driving"].status == "pending"
    dispatch(session, transport, care, clock.now())
    sent_to = [sms.to for sms in transport.sent]
    assert old_number not in sent_to, (
        f"texted the old number {old_number} after the new one was committed: {sent_to}"
    )
    assert sent_to[:1] == [NEW_E164]
    assert messages(session)["no-driving"].to_phone == NEW_E164


def test_a_language_changed_before_the_guard_is_the_one_texted(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30", language="en")

    def nurse_changes_the_language() -> None:
        change_language(
            session=other_session,
            patient_id=result.patient.id,
            language="es",
            now=clock.now(),
            actor="nurse@example.org",
        )
        other_session.commit()

    _hand_over_with_change_before_guard(
        session, care, clock, transport, monkeypatch, nurse_changes_the_language
    )
    assert messages(session)["no-driving"].status == "pending"
    dispatch(session, transport, care, clock.now())
    bodies = [sms.body for sms in transport.sent if sms.step == "no-driving"]
    assert len(bodies) == 1, f"sent {len(bodies)} times"
    assert all("sedation" not in body for body in bodies), (
        f"sent in English after the change to Spanish committed: {bodies}"
    )
