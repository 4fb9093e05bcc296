"""A nurse's correction while a text's request is under way: its retry follows the new window,
and the send log says what will become of it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.care.protocol import CareContext
from followup.clock import FakeClock
from followup.messaging.models import MessageEvent
from followup.messaging.transports.base import OutgoingSms, SendResult, TransientSendError
from followup.patients.edits import change_completion_time
from tests.fakes.transport import ScriptedTransport
from tests.messaging.helpers import at, dispatch, restart_due_now, text
from tests.patients.test_booked import Enroll


@pytest.fixture
def other_session(session_factory: so.sessionmaker[so.Session]) -> Iterator[so.Session]:
    """A second process's session (a nurse's request)."""
    with session_factory() as other:
        yield other


def events(session: so.Session, message_id: int) -> list[tuple[str, str]]:
    return [
        (kind, detail or "")
        for kind, detail in session.execute(
            sa.select(MessageEvent.kind, MessageEvent.detail)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
    ]


class CorrectedMidRequest(ScriptedTransport):
    """While the restart's request is under way, a nurse corrects the procedure's end
    (from another session, committed); then Twilio refuses the request for now."""

    def __init__(self, correct: object) -> None:
        super().__init__()
        self._ids = itertools.count(1000)  # SIDs unlike those the first transport gave
        self.correct = correct
        self.done = False

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == "blood-thinner-restart" and not self.done:
            self.done = True
            self.correct()  # type: ignore[operator]
            raise TransientSendError("503", "Service Unavailable", maybe_sent=False)
        return super().send(sms)


def test_a_retry_refused_while_a_correction_reopened_its_window_is_not_expired(
    session: so.Session,
    other_session: so.Session,
    care: CareContext,
    clock: FakeClock,
    transport: ScriptedTransport,
    enroll: Enroll,
) -> None:
    # The restart's window (48 h to 96 h after the end) is nearly closed when it is handed
    # over (Twilio was down); during that request a nurse corrects the end two hours later,
    # so the window runs two more hours. Twilio refuses the request for now: the retry must
    # follow the corrected window, not expire on the old one.
    procedure_id, _, new_due = restart_due_now(session, transport, care, clock, enroll)
    old_expiry = at("2026-03-06T14:30") + timedelta(hours=96)
    new_expiry = at("2026-03-06T16:30") + timedelta(hours=96)
    now = old_expiry - timedelta(seconds=6)

    def correct() -> None:
        change_completion_time(
            session=other_session, procedure_id=procedure_id, completed_at="2026-03-06T16:30",
            care=care, now=now, actor="nurse@example.org",
        )  # fmt: skip
        other_session.commit()

    refusing = CorrectedMidRequest(correct)
    report = dispatch(session, refusing, care, now)
    assert refusing.done and report.sent == 0
    restart = text(session, "blood-thinner-restart")
    assert restart.expires_at == new_expiry  # the correction re-timed it
    assert restart.status == "pending", events(session, restart.id)
    assert restart.due_at >= new_due and restart.not_before is not None
    dispatch(session, refusing, care, now + timedelta(minutes=5))
    assert [sms.step for sms in refusing.sent] == ["blood-thinner-restart"]
    assert "from 5:30 PM on Sunday" in refusing.sent[0].body


class TimesOut(ScriptedTransport):
    """The no-driving text's request times out: Twilio may or may not have it."""

    def send(self, sms: OutgoingSms) -> SendResult:
        if sms.step == "no-driving":
            raise TransientSendError("timeout", "no answer", maybe_sent=True)
        return super().send(sms)


def test_a_text_whose_outcome_is_unknown_re_timed_into_a_closed_window_says_it_is_not_sent(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # 15:00: the no-driving text's request times out. At 15:05 the nurse sees the date was
    # wrong: the procedure ended yesterday at 14:30, so the no-driving window has closed.
    # If Twilio did not have it, it is not sent again; the log must say so, as the
    # preview did ("if it does not reach the patient, it is not sent again").
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    transport = TimesOut(provider_has=[])
    assert dispatch(session, transport, care, at("2026-03-06T15:00")).unknown == 1
    change_completion_time(
        session=session, procedure_id=result.procedure.id, completed_at="2026-03-05T14:30",
        care=care, now=at("2026-03-06T15:05"), actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    no_driving = text(session, "no-driving")
    assert no_driving.status == "sending"
    detail = events(session, no_driving.id)[-1]
    assert detail[0] == "replanned"
    assert "goes at the new time" not in detail[1], detail


def test_a_text_whose_outcome_is_unknown_and_whose_times_do_not_change_gets_no_event(
    session: so.Session, care: CareContext, clock: FakeClock, enroll: Enroll
) -> None:
    # 15:00: the no-driving text's request times out. The nurse then corrects the end by
    # five minutes: the no-driving text's times stay as they are (due now, until 21:00),
    # so re-planning writes nothing for it, as for any text already as planned.
    clock.set(at("2026-03-06T15:00"))
    result = enroll(completed_at="2026-03-06T14:30")
    transport = TimesOut(provider_has=[])
    assert dispatch(session, transport, care, at("2026-03-06T15:00")).unknown == 1
    before = events(session, text(session, "soreness").id)
    no_driving = text(session, "no-driving")
    due, expires, history = no_driving.due_at, no_driving.expires_at, events(session, no_driving.id)
    change_completion_time(
        session=session, procedure_id=result.procedure.id, completed_at="2026-03-06T14:25",
        care=care, now=at("2026-03-06T15:00"), actor="nurse@example.org",
    )  # fmt: skip
    session.commit()
    assert events(session, text(session, "soreness").id) == before
    no_driving = text(session, "no-driving")
    assert (no_driving.due_at, no_driving.expires_at) == (due, expires)
    assert events(session, no_driving.id) == history
