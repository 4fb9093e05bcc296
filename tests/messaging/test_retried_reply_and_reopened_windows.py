"""A reply run again after a deadlock keeps the instant it came; a correction that re-opens a
text's window while its answer is being recorded, or after it was withheld on the old one,
leaves it to go at the new time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging import turns, views
from followup.messaging.dispatch import Dispatcher
from followup.messaging.models import EXPIRED, MessageEvent
from followup.messaging.outcomes import Outcomes
from followup.messaging.replies import record_inbound
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.edits import change_completion_time
from followup.patients.models import Patient
from followup.patients.validation import EnrollmentResult
from followup.runtime import Runtime
from tests.fakes.transport import ScriptedTransport
from tests.messaging.conftest import PHONE
from tests.messaging.helpers import Enroll, at, dispatch, restart_due_now, text


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


# --- 2. SQLite: a correction committed between current_windows' read and the outcome's write


class RefusedForNow(ScriptedTransport):
    """Twilio refuses the blood-thinner restart's request for now (never at Twilio)."""

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == "blood-thinner-restart":
            raise TransientSendError("503", "Service Unavailable", maybe_sent=False)
        return super().send(sms)


def test_a_correction_landing_while_a_refusal_is_recorded_never_leaves_an_open_window_expired(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The restart's window is nearly closed when Twilio refuses its request for now; the
    # dispatcher reads its window (current_windows: "no re-timing lands after this read"),
    # and right then a nurse's correction (the end two hours later: the window runs two
    # more hours) is saved. Whichever comes first, the text must not end expired ("no
    # retry fits before its expiry") with a window hours from closing, the correction's
    # event having told the nurse it "goes at the new time".
    procedure_id, _, _ = restart_due_now(session, transport, care, clock, enroll)
    old_expiry = at("2026-03-06T14:30") + timedelta(hours=96)
    now = old_expiry - timedelta(seconds=6)
    errors: list[BaseException] = []

    def correct() -> None:
        try:
            with session_factory() as nurse:
                change_completion_time(
                    session=nurse, procedure_id=procedure_id, completed_at="2026-03-06T16:30",
                    care=care, now=now, actor="nurse@example.org",
                )  # fmt: skip
                nurse.commit()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)

    read = Outcomes.current_windows
    nurse = threading.Thread(target=correct)

    def then_the_correction(self: Outcomes, answers: list[Any]) -> dict[int, Any]:
        windows = read(self, answers)
        if answers and not nurse.is_alive() and nurse.ident is None:
            nurse.start()
            nurse.join(1.0)  # saved now, unless it must wait for the dispatcher's locks
        return windows

    monkeypatch.setattr(Outcomes, "current_windows", then_the_correction)
    dispatch(session, RefusedForNow(), care, now)
    nurse.join(40)
    assert not nurse.is_alive() and errors == []
    restart = text(session, "blood-thinner-restart")
    left = restart.expires_at - now
    assert not (restart.status == EXPIRED and left > timedelta(minutes=1)), (
        restart.status, left, events_of(session, restart.id),
    )  # fmt: skip


def events_of(session: so.Session, message_id: int) -> list[tuple[str, str]]:
    return [
        (kind, detail or "")
        for kind, detail in session.execute(
            sa.select(MessageEvent.kind, MessageEvent.detail)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
    ]


# --- 3. withheld as expired on the hand-over's window, though a correction re-opened it ---


def test_a_text_withheld_on_its_old_window_after_a_correction_reopened_it_is_not_expired(
    session: so.Session,
    session_factory: so.sessionmaker[so.Session],
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The restart is guarded 3 s before its window closes. Before the worker starts the
    # call, a nurse's correction (the end two hours later) is saved: re-planning re-times
    # the text, handed over, to a window two hours longer ("if it did not reach the
    # patient, it goes at the new time"). The worker, a second later, checks the window
    # it was handed (closing) and withholds the text: it never reached Twilio. Its outcome
    # must follow the window as it is now (as record_withheld does for quiet hours and
    # record_transient for a refusal), not expire it with two hours left.
    procedure_id, _, _ = restart_due_now(session, transport, care, clock, enroll)
    old_expiry = at("2026-03-06T14:30") + timedelta(hours=96)
    clock.set(old_expiry - timedelta(seconds=3))
    start = turns.DispatchPass.start_calls
    done: list[bool] = []

    def correction_before_the_calls(self: turns.DispatchPass, items: list[Any]) -> None:
        if items and not done:
            done.append(True)
            with session_factory() as nurse:
                change_completion_time(
                    session=nurse, procedure_id=procedure_id, completed_at="2026-03-06T16:30",
                    care=care, now=clock.now(), actor="nurse@example.org",
                )  # fmt: skip
                nurse.commit()
            clock.advance(timedelta(seconds=2))  # the worker starts a little later
        start(self, items)

    monkeypatch.setattr(turns.DispatchPass, "start_calls", correction_before_the_calls)
    with Dispatcher(transport=transport, care=care, clock=clock, owner="w1") as dispatcher:
        dispatcher.dispatch(session)
    assert done
    restart = text(session, "blood-thinner-restart")
    left = restart.expires_at - clock.now()
    assert not (restart.status == EXPIRED and left > timedelta(minutes=1)), (
        restart.status, left, events_of(session, restart.id),
    )  # fmt: skip
    monkeypatch.setattr(turns.DispatchPass, "start_calls", start)
    dispatch(session, transport, care, clock.now() + timedelta(minutes=1))
    # Sent once, at the corrected time (by this pass, once requeued, or by the next).
    assert transport.steps_sent() == ["blood-thinner-restart"]
    assert "from 5:30 PM on Sunday" in transport.sent[0].body
